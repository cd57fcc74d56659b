"""The kernel contract: the array operations a backend gives (:class:`Ops`) and the typed
:class:`Kernel` object every node type's factory builds once per (node, Dynamics).

A kernel is three pure functions and a few declared facts, in the manner of optax's
``GradientTransformation`` (typed slots, hyper-parameters in closures, NamedTuple state):

* ``prepare(ops, params) -> coefficients``: the per-run coefficients (``exp(-dt/tau)``, ...) from
  the node's parameters ``{field: array}``; called once per run, outside the time loop, and
  differentiable. The coefficients are a NamedTuple whose field names say what they are.
* ``init(ops, coefficients, batch, dtype) -> state``: the state at step 0, computed from the
  prepared coefficients, so an initial value that depends on a parameter (``v_init="v_leak"``)
  follows that parameter, also under a gradient.
* ``step(ops, coefficients, state, x) -> (state, y)``: one time step; ``x`` is ``(batch, *shape)``.

Every :class:`~nirbridge.dynamics.Dynamics` choice is resolved by the factory into the closures it
returns, so a step never branches on a setting's name. The declared facts: ``state`` (each state
variable's shape without the batch axis, in the order of the state NamedTuple), and ``layout``
(how the coefficients relate to the node's (C, H, W) data, which the JAX channels-last pass uses).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import UnknownNodeError, UnsupportedError, node_error

__all__ = ["Kernel", "KernelFactory", "LAYOUTS", "NamespaceOps", "NoCoeffs", "NoState", "Ops", "build_kernel",
           "kernel_factory", "register_kernel", "surrogate_derivative"]

Shape = tuple[int, ...]


class NoCoeffs(NamedTuple):
    """The coefficients of a node that has none (pooling, Flatten, identities)."""


class NoState(NamedTuple):
    """The state of a stateless node."""


class Ops(abc.ABC):
    """The array operations a backend provides to the kernels (see ``backends.reference.NumpyOps``)."""

    name = "abstract"

    @abc.abstractmethod
    def const(self, value, like):
        """``value`` (a number or NumPy array) as an array with ``like``'s dtype (and device)."""

    @abc.abstractmethod
    def zeros(self, shape, dtype):
        """An array of zeros of ``shape`` and ``dtype`` (on the backend's device)."""

    @abc.abstractmethod
    def exp(self, x):
        """``exp(x)``, elementwise."""

    @abc.abstractmethod
    def expm1(self, x):
        """``exp(x) - 1``, elementwise, accurate near 0."""

    @abc.abstractmethod
    def floor(self, x):
        """Rounding towards -inf, elementwise (``Dynamics(spikes="count")``)."""

    @abc.abstractmethod
    def where(self, cond, a, b):
        """``a`` where ``cond`` holds, else ``b`` (broadcasting), elementwise."""

    @abc.abstractmethod
    def spike(self, v, threshold, inclusive: bool, surrogate: str, slope: float):
        """``(v > threshold)`` (``>=`` if inclusive) as 0/1 of v's dtype, with the surrogate gradient
        :func:`surrogate_derivative` (``surrogate``, ``slope``) in backends that differentiate."""

    @abc.abstractmethod
    def affine(self, x, w, b):
        """``x @ W.T + b`` over the last axis for the dense weight ``W`` (out, in), given as
        ``w = dense_weight(W)``; ``b`` may be None."""

    @abc.abstractmethod
    def conv(self, x, w, b, geom: Mapping, nd: int):
        """PyTorch's ``conv1d``/``conv2d`` (``nd``) of ``x`` (N, C, *spatial) with weight ``w`` (O, C/groups,
        *kernel) and bias ``b`` (O,); ``geom`` from :func:`~nirbridge.nodes.conv_geometry` (padding as
        (lo, hi) per spatial dim)."""

    @abc.abstractmethod
    def pool(self, x, geom: Mapping, average: bool):
        """The sum over each window of ``x`` (N, C, H, W) with zero padding, divided by the window area
        if ``average``; ``geom`` from :func:`~nirbridge.nodes.pool_geometry`."""

    @abc.abstractmethod
    def concat1(self, a, b):
        """Concatenate along axis 1 (the axis after the batch)."""

    @abc.abstractmethod
    def concat0(self, arrays):
        """Concatenate a list of arrays along axis 0 (time)."""

    def dense_weight(self, w):
        """The form of a dense weight ``w`` (out, in) that :meth:`affine` takes, made once per run in
        ``prepare`` (default: ``w`` itself; JAX: ``w.T``, so no step transposes it)."""
        return w

    @abc.abstractmethod
    def sum1(self, x):
        """The sum along axis 1 (the axis after the batch)."""


class NamespaceOps(Ops):
    """:class:`Ops` whose element-wise operations come from an array namespace ``xp`` that uses
    NumPy's names (``numpy``, ``jax.numpy``, ``torch``); a backend adds the rest."""

    xp: Any = None

    def exp(self, x):
        return self.xp.exp(x)

    def expm1(self, x):
        return self.xp.expm1(x)

    def floor(self, x):
        return self.xp.floor(x)

    def where(self, cond, a, b):
        return self.xp.where(cond, a, b)

    def sum1(self, x):
        return x.sum(1)

    def concat0(self, arrays):
        return self.xp.concatenate(list(arrays), 0)


def surrogate_derivative(surrogate: str, d, slope: float, xp):
    """The derivative of a spike with respect to ``d = v - threshold``, written once for every
    backend (``xp``: ``numpy``, ``jax.numpy`` or ``torch``; the derivative with respect to the
    threshold is its negative).

    * ``"fast_sigmoid"`` (default, slope 25 as in snnTorch): ``1 / (1 + slope |d|)^2``;
    * ``"sigmoid"``: ``slope s (1 - s)`` with ``s = 1 / (1 + exp(-slope d))``;
    * ``"straight_through"``: 1.

    >>> import numpy as np
    >>> float(surrogate_derivative("fast_sigmoid", np.float64(0.04), 25.0, np))
    0.25
    """
    if surrogate == "fast_sigmoid":
        return 1 / (1 + slope * xp.abs(d)) ** 2
    if surrogate == "sigmoid":
        s = 1 / (1 + xp.exp(-slope * d))
        return slope * s * (1 - s)
    if surrogate == "straight_through":
        return xp.ones_like(d)
    raise node_error(UnknownNodeError, "?", "surrogate", f"unknown surrogate {surrogate!r}",
                     "use fast_sigmoid, sigmoid or straight_through")


#: The layout classes of :attr:`Kernel.layout`: ``"element"`` (every coefficient has the node's
#: (C, H, W) shape or is a scalar; the data keep their shape), ``"conv"`` (coefficients
#: ``(weight OIHW, bias (O,))``), ``"pool"`` (no coefficients, the window runs over H and W),
#: ``"none"`` (the node needs NIR's (C, H, W) layout: Flatten, Affine, Delay, ...).
LAYOUTS = ("element", "conv", "pool", "none")


@dataclass(frozen=True)
class Kernel:
    """The discrete update of one node, built for one (node, Dynamics) by its type's factory.

    Attributes:
        prepare: ``(ops, params) -> coefficients``: once per run, from ``{field: array}``.
        init: ``(ops, coefficients, batch, dtype) -> state``, a NamedTuple (:class:`NoState` if none).
        step: ``(ops, coefficients, state, x) -> (state, y)``: one time step.
        state: the declared state: an instance of the state NamedTuple holding each variable's
            shape without the batch axis (e.g. ``VoltageState(v=(4,))``); ``NoState()`` if none.
        layout: one of :data:`LAYOUTS`.
    """

    prepare: Callable[[Any, Mapping[str, Any]], Any]
    init: Callable[[Any, Any, int, Any], Any]
    step: Callable[[Any, Any, Any, Any], tuple[Any, Any]]
    state: Any = NoState()
    layout: str = "none"

    def __post_init__(self):
        if not (isinstance(self.state, tuple) and hasattr(self.state, "_fields")):
            raise UnsupportedError(f"Kernel.state={self.state!r} is not a NamedTuple of shapes. Fix: declare it as "
                                   "e.g. VoltageState(v=shape)")
        if self.layout not in LAYOUTS:
            raise UnsupportedError(f"Kernel.layout={self.layout!r} is not one of {LAYOUTS}. Fix: pick one of them")

    def replace(self, **changes: Any) -> Kernel:
        """A copy with some slots replaced (e.g. a wrapped ``step``)."""
        return dataclasses.replace(self, **changes)


def no_init(ops, coeffs, batch, dtype) -> NoState:
    """``init`` of a stateless node."""
    return NoState()


#: ``(step, dynamics) -> Kernel``: what a node type registers. ``step`` is the node's
#: :class:`~nirbridge.graph.Step` (name, node with its parameters, input and output shapes).
KernelFactory = Callable[[Any, Any], Kernel]

#: node type -> its kernel factory, shared by every backend. Extend with :func:`register_kernel`.
KERNELS: dict[str, KernelFactory] = {}
# backend name -> node type -> factory overriding the shared one for that backend only
OVERRIDES: dict[str, dict[str, KernelFactory]] = {}


def register_kernel(node_type: str, factory: KernelFactory | None = None, *, backend: str | None = None,
                    replace: bool = False):
    """Register the kernel factory of a node type, for every backend or (``backend=...``) for one.

    Usable as a decorator: ``@register_kernel("LIF")`` over ``def lif(step, dyn) -> Kernel``.
    """
    if factory is None:
        return lambda f: register_kernel(node_type, f, backend=backend, replace=replace)
    table = KERNELS if backend is None else OVERRIDES.setdefault(backend, {})
    if node_type in table and not replace:
        raise UnsupportedError(f"a kernel for {node_type!r} is registered already. Fix: pass replace=True")
    table[node_type] = factory
    return factory


def kernel_factory(node_type: str, backend: str, node: str = "?") -> KernelFactory:
    """The factory of ``node_type`` for ``backend``: its own override if registered, else the shared one."""
    f = OVERRIDES.get(backend, {}).get(node_type) or KERNELS.get(node_type)
    if f is None:
        raise node_error(UnknownNodeError, node, "type", f"no kernel for node type {node_type!r}",
                         "register one with nirbridge.register_kernel(node_type, factory)")
    return f


def build_kernel(step: Any, dynamics: Any, backend: str) -> Kernel:
    """The kernel of one plan step for ``dynamics`` and ``backend``; checks its declared state
    against the node spec's state variables."""
    k = kernel_factory(step.node.type, backend, step.name)(step, dynamics)
    if not isinstance(k, Kernel):
        raise node_error(UnknownNodeError, step.name, "type", f"the kernel factory of {step.node.type} returned "
                         f"{type(k).__name__}, not a nirbridge Kernel", "return Kernel(prepare, init, step, ...)")
    declared = tuple(step.node.spec.state)
    if not set(k.state._fields) <= set(declared):
        raise node_error(UnknownNodeError, step.name, "state", f"the kernel declares state {list(k.state._fields)}, "
                         f"the {step.node.type} spec {list(declared)}", "declare the same state variables in both")
    return k
