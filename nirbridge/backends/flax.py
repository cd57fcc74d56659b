"""Flax (``nnx``) shell over the JAX backend: a graph as an ``nnx.Module`` with trainable ``nnx.Param``.

The module holds one ``nnx.Param`` per NIR floating-point parameter and runs the compiled program
of :mod:`nirbridge.backends.jax` (one ``lax.scan`` over time); it has no kernel code of its own.
Spikes train through a surrogate derivative, by default ``"fast_sigmoid"`` with slope 25
(``1 / (1 + 25 |v - v_threshold|)^2``); ``Dynamics(surrogate=..., surrogate_slope=...)`` chooses.

>>> import nir, numpy as np, nirbridge as nb
>>> g = nb.Graph.from_nir(nir.NIRGraph.from_list(
...     nir.LIF(tau=np.array([1e-3]), r=np.array([1.0]), v_leak=np.array([0.0]),
...             v_threshold=np.array([0.25]), v_reset=np.array([0.0]))))
>>> module = nb.to_flax(g, nb.Dynamics(dt=1e-4))
>>> np.asarray(module(np.ones((4, 1, 1), np.float32))["output"])[:, 0, 0].tolist()
[0.0, 0.0, 1.0, 0.0]
>>> nb.from_flax(module).equals(g)
True
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx

from ..errors import InputError
from ..graph import Graph
from .jax import JaxModel, from_jax, to_jax

__all__ = ["FlaxSNN", "Gain", "Structure", "Threshold", "TimeConstant", "Voltage", "Weight", "from_flax", "to_flax"]


class Weight(nnx.Param):
    """A connection weight or bias (Affine, Linear, Conv, Scale): ``wrt=Weight`` trains only these."""


class TimeConstant(nnx.Param):
    """A time constant, held as its natural log (of seconds): trained in log space it stays > 0."""


class Gain(nnx.Param):
    """An input gain (``r``, ``w_in``)."""


class Voltage(nnx.Param):
    """A voltage level (``v_leak``, ``v_reset``)."""


class Threshold(nnx.Param):
    """A spike threshold (``v_threshold``, a Threshold node's ``threshold``)."""


class Structure(nnx.Variable):
    """A structural parameter, fixed when the program was built (a Delay's ``delay``): not an
    ``nnx.Param``, so no optimizer trains it."""


#: parameter kind (:data:`nirbridge.nodes.PARAM_KINDS`) -> its nnx Variable type
VARIABLES = {"weight": Weight, "time_constant": TimeConstant, "gain": Gain, "voltage": Voltage,
             "threshold": Threshold, "structure": Structure}


class _Static:
    """The compiled JaxModel and the starting values of the time constants: a static (non-pytree)
    attribute of the nnx module."""

    def __init__(self, model: JaxModel):
        self.model = model
        kinds = model.kinds
        self.tau0 = {n: {f: v for f, v in fields.items() if kinds[n][f] == "time_constant"}
                     for n, fields in model.params.items()}
        self.log0 = {n: {f: jnp.log(v) for f, v in fields.items()} for n, fields in self.tau0.items()}

    def tau(self, node: str, field: str, log_tau):
        # tau0 exp(log_tau - log0): exactly tau0 while the parameter is untouched, > 0 whatever it becomes
        return self.tau0[node][field] * jnp.exp(log_tau - self.log0[node][field])


class FlaxSNN(nnx.Module):
    """A NIR graph as an ``nnx.Module``: ``params[node][field]`` are nnx Variables, one type per
    parameter kind: :class:`Weight`, :class:`TimeConstant`, :class:`Gain`, :class:`Voltage`,
    :class:`Threshold` (all ``nnx.Param``) and :class:`Structure` (not trained).

    ``module(x)`` runs a whole sequence ``x`` of shape ``(T, B, *shape)`` (or ``{input name:
    array}``) and returns ``{output name: (T, B, ...)}``; ``module.run(x, state, record)`` also
    returns the final state. Train the weights only with ``nnx.Optimizer(module, tx, wrt=Weight)``,
    or every parameter with ``wrt=nnx.Param``: time constants are held as ``log(tau)``
    (:meth:`param_values` gives tau), so training keeps them positive.
    """

    def __init__(self, model: JaxModel):
        self._static = _Static(model)
        kinds = model.kinds
        self.params = nnx.data({
            node: {f: VARIABLES[kinds[node][f]](self._static.log0[node][f] if f in self._static.log0[node] else v)
                   for f, v in fields.items()}
            for node, fields in model.params.items()})

    @property
    def model(self) -> JaxModel:
        """The compiled :class:`~nirbridge.backends.jax.JaxModel` the module runs."""
        return self._static.model

    def param_values(self) -> dict:
        """The parameters as a plain pytree ``{node: {field: array}}`` (what ``JaxModel.run`` takes):
        time constants in seconds."""
        st = self._static
        return {node: {f: (st.tau(node, f, p[...]) if f in st.tau0[node] else p[...]) for f, p in fields.items()}
                for node, fields in self.params.items()}

    def init_state(self, batch: int) -> dict:
        """The state at step 0 (see :meth:`JaxModel.init_state`)."""
        return self.model.init_state(batch, self.param_values())

    def step(self, state: Any, x_t: Any):
        """``(state, outputs_t)`` of one time step; see :meth:`JaxModel.step`."""
        return self.model.step(self.param_values(), state, x_t)

    def run(self, x: Any, state: Any = None, record: Any = None):
        """``(outputs, final state)`` of a sequence; see :meth:`JaxModel.run`."""
        return self.model.run(self.param_values(), x, state=state, record=record)

    def __call__(self, x: Any, state: Any = None, record: Any = None):
        return self.run(x, state, record)[0]


def to_flax(graph: Any, dynamics, **kw: Any) -> FlaxSNN:
    """``graph`` with ``dynamics`` as an ``nnx.Module``; ``kw`` as for :func:`~nirbridge.backends.jax.to_jax`
    (``dtype``, ``hoist``, ``checkpoint``, ...). The surrogate gradient defaults to fast_sigmoid, slope 25."""
    return FlaxSNN(to_jax(graph, dynamics, **kw))


def from_flax(module: FlaxSNN) -> Graph:
    """The module's graph with its (possibly trained) parameters written back, bit-exact for
    untouched ones (see :func:`~nirbridge.backends.jax.from_jax`)."""
    if not isinstance(module, FlaxSNN):
        raise InputError(f"from_flax() takes a module made by to_flax, got {type(module).__name__}. "
                         "Fix: pass the FlaxSNN that nb.to_flax returned")
    return from_jax(module.model, module.param_values())
