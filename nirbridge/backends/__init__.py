"""The backends: one registry, one protocol.

A backend runs a :class:`~nirbridge.program.Program` with its own array operations
(:class:`~nirbridge.kernels.Ops`) and its own way to iterate over time, through the one time loop
of :func:`nirbridge.program.run_loop`. Each backend module is imported only when first used, so
``import nirbridge`` imports no framework; a missing framework raises
:class:`~nirbridge.errors.MissingDependencyError` saying which extra to install.

* ``reference`` (:mod:`nirbridge.backends.reference`): NumPy, a Python loop; the oracle.
* ``jax`` (:mod:`nirbridge.backends.jax`, shells :mod:`~nirbridge.backends.flax` and
  :mod:`~nirbridge.backends.equinox`): one jit-compiled ``lax.scan``.
* ``torch`` (:mod:`nirbridge.backends.torch`; the fx converter back to NIR in
  :mod:`~nirbridge.backends.torch_fx`): a ``torch.nn.Module``, a Python loop or compiled chunks.

Every backend's model follows one protocol, carry first as ``lax.scan`` wants:
``init_state(batch)``, ``step(state, x_t) -> (state, y_t)``, ``run(x, state=None, record=None) ->
(outputs, state)``; the functional JAX model takes its parameters first
(``step(params, state, x_t)``, ``run(params, x, state=None, record=None)``).

:func:`nirbridge.simulate` and :func:`nirbridge.compare` ask a backend for
``simulate(graph, dynamics, x, record=..., dtype=..., progress=...)``, NumPy arrays out.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import InputError, MissingDependencyError, UnsupportedError

__all__ = ["Backend", "DEFAULT_BACKENDS", "available_backends", "get_backend", "register_backend", "require"]

#: The backends :func:`nirbridge.compare`, the CLI and :mod:`nirbridge.testing` use by default.
DEFAULT_BACKENDS = ("reference", "jax", "torch")


class Backend(Protocol):
    """What :func:`nirbridge.simulate` and :func:`nirbridge.compare` need from a backend."""

    name: str

    def simulate(self, graph: Any, dynamics: Any, x: Any, *, record: Any = None, dtype: Any = None,
                 progress: bool = False) -> dict:
        """Run ``graph`` with ``dynamics`` on ``x``; return NumPy arrays laid out as
        :func:`nirbridge.simulate` returns them."""
        ...


# backend name -> (module, attribute, framework module it needs, extra that installs it)
_BUILTIN: dict[str, tuple[str, str, str | None, str | None]] = {
    "reference": ("nirbridge.backends.reference", "ReferenceBackend", None, None),
    "jax": ("nirbridge.backends.jax", "JaxBackend", "jax", "jax"),
    "torch": ("nirbridge.backends.torch", "TorchBackend", "torch", "torch"),
}
_FACTORIES: dict[str, Callable[[], Backend]] = {}
_INSTANCES: dict[str, Backend] = {}


def require(module: str, extra: str) -> Any:
    """Import a framework or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"this needs {module!r}, which is not installed ({e}). Fix: pip install \"nirbridge[{extra}]\""
        ) from None


def register_backend(name: str, factory: Callable[[], Backend], *, replace: bool = False) -> None:
    """Register a backend under ``name``: ``factory()`` returns a :class:`Backend`."""
    if not isinstance(name, str) or not name:
        raise InputError(f"a backend name must be a non-empty string, got {name!r}. Fix: e.g. 'mybackend'")
    if (name in _BUILTIN or name in _FACTORIES) and not replace:
        raise UnsupportedError(f"backend {name!r} is registered already. Fix: pass replace=True")
    _FACTORIES[name] = factory
    _INSTANCES.pop(name, None)


def available_backends() -> list[str]:
    """The backend names :func:`nirbridge.simulate` accepts (installed or not)."""
    return sorted(set(_BUILTIN) | set(_FACTORIES))


def get_backend(name: Any) -> Backend:
    """The backend called ``name``, imported on first use (one instance per name)."""
    if not isinstance(name, str):
        raise InputError(f"backend={name!r} is not a backend name. Fix: use one of {available_backends()}")
    if name in _INSTANCES:
        return _INSTANCES[name]
    if name in _FACTORIES:
        inst = _FACTORIES[name]()
    elif name in _BUILTIN:
        module, attr, needs, extra = _BUILTIN[name]
        if needs is not None:
            require(needs, extra or needs)
        inst = getattr(importlib.import_module(module), attr)()
    else:
        raise InputError(f"unknown backend {name!r}. Fix: use one of {available_backends()}")
    _INSTANCES[name] = inst
    return inst
