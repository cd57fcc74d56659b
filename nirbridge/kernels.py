"""The discrete update of every node type, written once for every backend.

Each node type has a :class:`Kernel` of four pure functions:

* ``static(step, dyn)``: plain Python/NumPy configuration fixed at build time (conv geometry,
  delay in steps, spike test), checked against the :class:`~nirbridge.dynamics.Dynamics`;
* ``prepare(ops, p, static, dyn)``: per-run coefficients (``dt/tau``, ``exp(-dt/tau)``) from the
  node's parameters ``p``, once per run, outside the time loop, differentiable;
* ``init(ops, static, batch, dtype)``: the zero state;
* ``step(ops, c, static, state, x) -> (state, y)``: one time step; ``x`` is ``(batch, *shape)``.

``ops`` is the backend's small array namespace (:class:`Ops`): the NumPy reference, JAX and torch
each implement it, so the arithmetic below is literally the same in every backend. The equations
are in :mod:`nirbridge.dynamics`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DynamicsError, UnknownNodeError, node_error
from .nodes import conv_geometry, flatten_dims, pool_geometry

__all__ = ["Kernel", "KERNELS", "Ops", "get_kernel", "register_kernel"]


class Ops:
    """The array operations a backend provides to the kernels (see ``reference.NumpyOps``)."""

    name = "abstract"

    def const(self, value, like):  # a constant array with like's dtype (and device)
        raise NotImplementedError

    def zeros(self, shape, dtype):
        raise NotImplementedError

    def exp(self, x):
        raise NotImplementedError

    def expm1(self, x):
        raise NotImplementedError

    def where(self, cond, a, b):
        raise NotImplementedError

    def spike(self, v, threshold, inclusive: bool, surrogate: str, slope: float):
        """``(v > threshold)`` (``>=`` if inclusive) as 0/1 of v's dtype, with a surrogate gradient."""
        raise NotImplementedError

    def affine(self, x, w, b):
        """``x @ w.T + b`` over the last axis (``b`` may be None)."""
        raise NotImplementedError

    def conv(self, x, w, b, geom: dict, nd: int):
        raise NotImplementedError

    def pool(self, x, geom: dict, average: bool):
        raise NotImplementedError

    def concat1(self, a, b):
        """Concatenate along axis 1 (the axis after the batch)."""
        raise NotImplementedError

    def sum1(self, x):
        raise NotImplementedError


@dataclass(frozen=True)
class Kernel:
    static: Callable[[Any, Any], dict]
    prepare: Callable[..., dict]
    init: Callable[..., dict]
    step: Callable[..., tuple]


def _no_static(step, dyn):
    return {}


def _no_state(ops, static, batch, dtype):
    return {}


def _pass_params(ops, p, static, dyn):
    return dict(p)


# ---------------------------------------------------------------- stateless nodes
def _identity_step(ops, c, s, state, x):
    return state, x


def _affine_step(ops, c, s, state, x):
    return state, ops.affine(x, c["weight"], c.get("bias"))


def _scale_step(ops, c, s, state, x):
    return state, x * c["scale"]


def _threshold_static(step, dyn):
    return dict(inclusive=dyn.threshold == ">=", surrogate=dyn.surrogate, slope=dyn.surrogate_slope)


def _threshold_step(ops, c, s, state, x):
    return state, ops.spike(x, c["threshold"], s["inclusive"], s["surrogate"], s["slope"])


def _flatten_static(step, dyn):
    flatten_dims(step.name, step.node.params, step.input_shape)  # validates the dims
    return dict(in_shape=tuple(step.input_shape), out_shape=tuple(step.output_shape))


def _flatten_step(ops, c, s, state, x):
    lead = tuple(x.shape[: x.ndim - len(s["in_shape"])])
    return state, x.reshape(lead + s["out_shape"])


def _conv_static(nd):
    def static(step, dyn):
        return dict(geom=conv_geometry(step.name, step.node.params, nd), nd=nd)

    return static


def _conv_step(ops, c, s, state, x):
    return state, ops.conv(x, c["weight"], c["bias"], s["geom"], s["nd"])


def _pool_static(average):
    def static(step, dyn):
        return dict(geom=pool_geometry(step.name, step.node.params), average=average)

    return static


def _pool_step(ops, c, s, state, x):
    return state, ops.pool(x, s["geom"], s["average"])


# ---------------------------------------------------------------- neurons
def _neuron_static(step, dyn):
    return dict(
        method=dyn.method, reset=dyn.reset, inclusive=dyn.threshold == ">=", synapse=dyn.synapse,
        surrogate=dyn.surrogate, slope=dyn.surrogate_slope, dt=dyn.dt, shape=tuple(step.input_shape),
    )


def _v_state(ops, s, batch, dtype):
    return {"v": ops.zeros(tuple(batch) + s["shape"], dtype)}


def _fire(ops, c, s, v):
    """Spike test on the updated voltage and the reset, in the same step (exact in 0/1 arithmetic)."""
    z = ops.spike(v, c["v_threshold"], s["inclusive"], s["surrogate"], s["slope"])
    if s["reset"] == "zero":
        v = v * (1 - z) + z * c["v_reset"]
    else:
        v = v - z * c["v_threshold"]
    return z, v


def _leaky_prepare(ops, p, s, dyn):
    c = dict(p)
    k = ops.const(s["dt"], like=p["tau"]) / p["tau"]
    if s["method"] == "euler":
        c["k"] = k
    else:
        c["a"] = ops.exp(-k)
    return c


def _leaky_update(c, s, v, x):
    if s["method"] == "euler":
        return v + c["k"] * (c["v_leak"] - v + c["r"] * x)
    u = c["v_leak"] + c["r"] * x
    return u + (v - u) * c["a"]


def _li_step(ops, c, s, state, x):
    v = _leaky_update(c, s, state["v"], x)
    return {"v": v}, v


def _lif_step(ops, c, s, state, x):
    z, v = _fire(ops, c, s, _leaky_update(c, s, state["v"], x))
    return {"v": v}, z


def _integrator_prepare(ops, p, s, dyn):
    c = dict(p)
    c["k"] = ops.const(s["dt"], like=p["r"]) * p["r"]
    return c


def _i_step(ops, c, s, state, x):
    v = state["v"] + c["k"] * x
    return {"v": v}, v


def _if_step(ops, c, s, state, x):
    z, v = _fire(ops, c, s, state["v"] + c["k"] * x)
    return {"v": v}, z


def _cuba_prepare(ops, p, s, dyn):
    c = dict(p)
    dt_s = ops.const(s["dt"], like=p["tau_syn"])
    dt_m = ops.const(s["dt"], like=p["tau_mem"])
    ks = dt_s / p["tau_syn"]
    km = dt_m / p["tau_mem"]
    if s["method"] == "euler":
        c["ks"], c["km"] = ks, km
        return c
    c["as"], c["am"] = ops.exp(-ks), ops.exp(-km)
    if s["synapse"] == "simultaneous":
        # exact coupled solution: v gains r * (i - w_in x) * g over the step, with
        # g = (dt/tau_mem) a_m phi(d), d = dt (1/tau_mem - 1/tau_syn), phi(d) = expm1(d)/d (1 at 0)
        d = km - ks
        zero = d == 0
        safe = ops.where(zero, ops.const(1.0, like=d), d)
        phi = ops.where(zero, ops.const(1.0, like=d), ops.expm1(safe) / safe)
        c["g"] = km * c["am"] * phi
    return c


def _cuba_update(c, s, state, x):
    i, v = state["i"], state["v"]
    if s["method"] == "euler":
        i_new = i + c["ks"] * (c["w_in"] * x - i)
        drive = i_new if s["synapse"] == "current_first" else i
        v_new = v + c["km"] * (c["v_leak"] - v + c["r"] * drive)
        return i_new, v_new
    i_inf = c["w_in"] * x
    i_new = i_inf + (i - i_inf) * c["as"]
    if s["synapse"] == "current_first":
        u = c["v_leak"] + c["r"] * i_new
        return i_new, u + (v - u) * c["am"]
    u = c["v_leak"] + c["r"] * i_inf
    return i_new, u + (v - u) * c["am"] + c["r"] * (i - i_inf) * c["g"]


def _cuba_init(ops, s, batch, dtype):
    shape = tuple(batch) + s["shape"]
    return {"i": ops.zeros(shape, dtype), "v": ops.zeros(shape, dtype)}


def _cubali_step(ops, c, s, state, x):
    i, v = _cuba_update(c, s, state, x)
    return {"i": i, "v": v}, v


def _cubalif_step(ops, c, s, state, x):
    i, v = _cuba_update(c, s, state, x)
    z, v = _fire(ops, c, s, v)
    return {"i": i, "v": v}, z


# ---------------------------------------------------------------- delay
def _delay_static(step, dyn):
    delay = np.asarray(step.node.params["delay"], dtype=np.float64)
    steps = delay / dyn.dt
    rounded = np.round(steps)
    bad = np.abs(steps - rounded) > 1e-6 * np.maximum(1.0, np.abs(steps))
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise node_error(
            DynamicsError, step.name, "delay",
            f"delay {delay[idx]!r} s is {steps[idx]:.6g} steps of dt={dyn.dt!r}, not a whole number",
            "choose a dt that divides every delay",
        )
    n = rounded.astype(np.int64)
    depth = int(n.max()) if n.size else 0
    uniform = bool(n.size == 0 or np.all(n == n.reshape(-1)[0]))
    mask = (np.arange(depth + 1).reshape((-1,) + (1,) * n.ndim) == n[None]).astype(np.float64)
    return dict(depth=depth, uniform=uniform, steps=int(n.reshape(-1)[0]) if n.size else 0,
                mask=mask, shape=tuple(step.input_shape))


def _delay_prepare(ops, p, s, dyn):
    c = dict(p)
    if not s["uniform"]:
        # one-hot over the buffer depth, broadcast over the batch axis: (1, depth+1, *shape)
        m = s["mask"].reshape((1, s["depth"] + 1) + s["shape"])
        c["mask"] = ops.const(m, like=p["delay"])
    return c


def _delay_init(ops, s, batch, dtype):
    if s["depth"] == 0:
        return {}
    return {"buffer": ops.zeros(tuple(batch) + (s["depth"],) + s["shape"], dtype)}


def _delay_step(ops, c, s, state, x):
    if s["depth"] == 0:
        return state, x
    full = ops.concat1(x[:, None], state["buffer"])  # full[:, k] = x(t - k)
    y = full[:, s["steps"]] if s["uniform"] else ops.sum1(full * c["mask"])
    return {"buffer": full[:, : s["depth"]]}, y


#: node type -> Kernel. Extend with :func:`register_kernel`.
KERNELS: dict[str, Kernel] = {
    "Input": Kernel(_no_static, _pass_params, _no_state, _identity_step),
    "Output": Kernel(_no_static, _pass_params, _no_state, _identity_step),
    "Affine": Kernel(_no_static, _pass_params, _no_state, _affine_step),
    "Linear": Kernel(_no_static, _pass_params, _no_state, _affine_step),
    "Scale": Kernel(_no_static, _pass_params, _no_state, _scale_step),
    "Threshold": Kernel(_threshold_static, _pass_params, _no_state, _threshold_step),
    "Flatten": Kernel(_flatten_static, _pass_params, _no_state, _flatten_step),
    "Conv1d": Kernel(_conv_static(1), _pass_params, _no_state, _conv_step),
    "Conv2d": Kernel(_conv_static(2), _pass_params, _no_state, _conv_step),
    "SumPool2d": Kernel(_pool_static(False), _pass_params, _no_state, _pool_step),
    "AvgPool2d": Kernel(_pool_static(True), _pass_params, _no_state, _pool_step),
    "Delay": Kernel(_delay_static, _delay_prepare, _delay_init, _delay_step),
    "I": Kernel(_neuron_static, _integrator_prepare, _v_state, _i_step),
    "IF": Kernel(_neuron_static, _integrator_prepare, _v_state, _if_step),
    "LI": Kernel(_neuron_static, _leaky_prepare, _v_state, _li_step),
    "LIF": Kernel(_neuron_static, _leaky_prepare, _v_state, _lif_step),
    "CubaLI": Kernel(_neuron_static, _cuba_prepare, _cuba_init, _cubali_step),
    "CubaLIF": Kernel(_neuron_static, _cuba_prepare, _cuba_init, _cubalif_step),
}

# backend name -> node type -> Kernel overriding the shared one for that backend only
_OVERRIDES: dict[str, dict[str, Kernel]] = {}


def register_kernel(node_type: str, kernel: Kernel, *, backend: str | None = None,
                    replace: bool = False) -> None:
    """Register the update of a node type, for every backend or (``backend=...``) for one."""
    table = KERNELS if backend is None else _OVERRIDES.setdefault(backend, {})
    if node_type in table and not replace:
        raise ValueError(f"a kernel for {node_type!r} is registered already; pass replace=True")
    table[node_type] = kernel


def get_kernel(node_type: str, backend: str, node: str = "?") -> Kernel:
    k = _OVERRIDES.get(backend, {}).get(node_type) or KERNELS.get(node_type)
    if k is None:
        raise node_error(UnknownNodeError, node, "type", f"no kernel for node type {node_type!r}",
                         "register one with nirbridge.kernels.register_kernel")
    return k
