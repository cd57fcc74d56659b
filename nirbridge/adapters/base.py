"""The one Adapter interface and its registry.

An adapter turns a :class:`~nirbridge.program.Program` (a graph with its Dynamics) into runs of
one framework. Adapters are imported only when first used, so ``import nirbridge`` imports no
framework; a missing framework raises :class:`~nirbridge.errors.MissingDependencyError` saying
which extra to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import InputError, MissingDependencyError

__all__ = ["Adapter", "get_adapter", "register_adapter", "available_backends", "require"]


class Adapter(Protocol):
    """What :func:`nirbridge.simulate` needs from a backend."""

    name: str

    def simulate(self, prog: Any, x: Any, *, record: Any = None, dtype: Any = None,
                 progress: bool = False) -> dict:
        """Run the :class:`~nirbridge.program.Program` on ``x``; return NumPy arrays laid out as
        :func:`nirbridge.simulate` returns them."""
        ...


# backend name -> (module, attribute, framework module it needs, extra that installs it)
_REGISTRY: dict[str, tuple[str, str, str | None, str | None]] = {
    "reference": ("nirbridge.reference", "ReferenceAdapter", None, None),
    "jax": ("nirbridge.adapters.jax", "JaxAdapter", "jax", "jax"),
    "torch": ("nirbridge.adapters.torch", "TorchAdapter", "torch", "torch"),
}
_FACTORIES: dict[str, Callable[[], Adapter]] = {}
_INSTANCES: dict[str, Adapter] = {}


def require(module: str, extra: str) -> Any:
    """Import a framework or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"this needs {module!r}, which is not installed ({e}). Fix: pip install \"nirbridge[{extra}]\""
        ) from None


def register_adapter(name: str, factory: Callable[[], Adapter], *, replace: bool = False) -> None:
    """Register a backend under ``name``: ``factory()`` returns an :class:`Adapter`."""
    if (name in _REGISTRY or name in _FACTORIES) and not replace:
        raise ValueError(f"backend {name!r} is registered already; pass replace=True")
    _FACTORIES[name] = factory
    _INSTANCES.pop(name, None)


def available_backends() -> list[str]:
    """The backend names :func:`nirbridge.simulate` accepts (installed or not)."""
    return sorted(set(_REGISTRY) | set(_FACTORIES))


def get_adapter(name: str) -> Adapter:
    """The adapter of backend ``name``, imported on first use (one instance per name)."""
    if name in _INSTANCES:
        return _INSTANCES[name]
    if name in _FACTORIES:
        inst = _FACTORIES[name]()
    elif name in _REGISTRY:
        module, attr, needs, extra = _REGISTRY[name]
        if needs is not None:
            require(needs, extra or needs)
        inst = getattr(importlib.import_module(module), attr)()
    else:
        raise InputError(f"unknown backend {name!r}. Fix: use one of {available_backends()}")
    _INSTANCES[name] = inst
    return inst
