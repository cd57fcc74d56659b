"""Equinox shell over the JAX backend: a graph as an ``eqx.Module`` whose params are its leaves.

The module's only array leaves are the NIR floating-point parameters (``module.params``, a dict
``{node: {field: array}}``); the compiled program of :mod:`nirbridge.backends.jax` is a static
field, so ``eqx.filter_grad`` / ``eqx.filter_jit`` and optax work on the module directly. Spikes
train through a surrogate derivative, by default ``"fast_sigmoid"`` with slope 25
(``1 / (1 + 25 |v - v_threshold|)^2``); ``Dynamics(surrogate=..., surrogate_slope=...)`` chooses.

>>> import nir, numpy as np, nirbridge as nb
>>> g = nb.Graph.from_nir(nir.NIRGraph.from_list(
...     nir.LIF(tau=np.array([1e-3]), r=np.array([1.0]), v_leak=np.array([0.0]),
...             v_threshold=np.array([0.25]), v_reset=np.array([0.0]))))
>>> module = nb.to_equinox(g, nb.Dynamics(dt=1e-4))
>>> np.asarray(module(np.ones((4, 1, 1), np.float32))["output"])[:, 0, 0].tolist()
[0.0, 0.0, 1.0, 0.0]
>>> nb.from_equinox(module).equals(g)
True
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp

from ..errors import InputError
from ..graph import Graph
from ..program import check_kinds
from .jax import JaxModel, from_jax, to_jax

__all__ = ["EquinoxSNN", "to_equinox", "from_equinox"]


class _Static:
    """The compiled model's static part and the starting values of the time constants (no pytree)."""

    def __init__(self, model: JaxModel):
        self.meta = model._meta
        kinds = model.kinds
        self.kinds = kinds
        self.tau0 = {n: {f: v for f, v in fields.items() if kinds[n][f] == "time_constant"}
                     for n, fields in model.params.items()}
        self.log0 = {n: {f: jnp.log(v) for f, v in fields.items()} for n, fields in self.tau0.items()}


class EquinoxSNN(eqx.Module):
    """A NIR graph as an ``eqx.Module`` whose array leaves are its parameters (``params``).

    ``module(x)`` runs a whole sequence ``x`` of shape ``(T, B, *shape)`` (or ``{input name:
    array}``) and returns ``{output name: (T, B, ...)}``; ``module.run(x, state, record)`` also
    returns the final state. Time constants are held as ``log(tau)`` (natural log of seconds;
    :meth:`param_values` gives tau), so training every inexact array (``eqx.is_inexact_array``)
    keeps them positive; ``eqx.partition(module, module.filter_spec("weight"))`` trains the
    weights only.
    """

    params: dict
    static: Any = eqx.field(static=True)  # the compiled model's static part (no arrays in the pytree)

    def param_values(self) -> dict:
        """The parameters as ``JaxModel.run`` takes them (time constants in seconds): ``tau0 exp(log_tau
        - log(tau0))``, exactly ``tau0`` while untouched."""
        st = self.static
        return {n: {f: (st.tau0[n][f] * jnp.exp(v - st.log0[n][f]) if f in st.tau0[n] else v)
                    for f, v in fields.items()} for n, fields in self.params.items()}

    @property
    def model(self) -> JaxModel:
        """The compiled :class:`~nirbridge.backends.jax.JaxModel` with this module's parameter values."""
        return JaxModel._from_meta(self.static.meta, self.param_values())

    def filter_spec(self, kinds: Any = "weight") -> EquinoxSNN:
        """A filter spec for ``eqx.partition`` / ``eqx.filter_grad``: True at the parameters of these
        kinds (:data:`nirbridge.nodes.PARAM_KINDS`; default the weights and biases)."""
        kinds = check_kinds(kinds)
        mask = {n: {f: k in kinds for f, k in fields.items()} for n, fields in self.static.kinds.items()}
        return EquinoxSNN(mask, self.static)

    def init_state(self, batch: int) -> dict:
        """The state at step 0 (see :meth:`JaxModel.init_state`)."""
        return self.model.init_state(batch)

    def step(self, state: Any, x_t: Any):
        """``(state, outputs_t)`` of one time step; see :meth:`JaxModel.step`."""
        m = self.model
        return m.step(m.params, state, x_t)

    def run(self, x: Any, state: Any = None, record: Any = None):
        """``(outputs, final state)`` of a sequence; see :meth:`JaxModel.run`."""
        m = self.model
        return m.run(m.params, x, state=state, record=record)

    def __call__(self, x: Any, state: Any = None, record: Any = None):
        return self.run(x, state, record)[0]


def to_equinox(graph: Any, dynamics, **kw: Any) -> EquinoxSNN:
    """``graph`` with ``dynamics`` as an ``eqx.Module``; ``kw`` as for :func:`~nirbridge.backends.jax.to_jax`
    (``dtype``, ``hoist``, ``checkpoint``, ...). The surrogate gradient defaults to fast_sigmoid, slope 25."""
    model = to_jax(graph, dynamics, **kw)
    st = _Static(model)
    params = {n: {f: (st.log0[n][f] if f in st.log0[n] else v) for f, v in fields.items()}
              for n, fields in model.params.items()}
    return EquinoxSNN(params, st)


def from_equinox(module: EquinoxSNN) -> Graph:
    """The module's graph with its (possibly trained) parameters written back, bit-exact for
    untouched ones (see :func:`~nirbridge.backends.jax.from_jax`)."""
    if not isinstance(module, EquinoxSNN):
        raise InputError(f"from_equinox() takes a module made by to_equinox, got {type(module).__name__}. "
                         "Fix: pass the EquinoxSNN that nb.to_equinox returned (or its trained copy)")
    return from_jax(module.model, module.param_values())
