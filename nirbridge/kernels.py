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

__all__ = ["Kernel", "KERNELS", "NamespaceOps", "Ops", "get_kernel", "register_kernel"]


class Ops:
    """The array operations a backend provides to the kernels (see ``reference.NumpyOps``)."""

    name = "abstract"

    def const(self, value, like):
        """``value`` (a number or NumPy array) as an array with ``like``'s dtype (and device)."""
        raise NotImplementedError

    def zeros(self, shape, dtype):
        """An array of zeros of ``shape`` and ``dtype`` (on the backend's device)."""
        raise NotImplementedError

    def exp(self, x):
        """``exp(x)``, elementwise."""
        raise NotImplementedError

    def expm1(self, x):
        """``exp(x) - 1``, elementwise, accurate near 0."""
        raise NotImplementedError

    def floor(self, x):
        """Rounding towards -inf, elementwise (``Dynamics(spikes="count")``)."""
        raise NotImplementedError

    def where(self, cond, a, b):
        """``a`` where ``cond`` holds, else ``b`` (broadcasting), elementwise."""
        raise NotImplementedError

    def spike(self, v, threshold, inclusive: bool, surrogate: str, slope: float):
        """``(v > threshold)`` (``>=`` if inclusive) as 0/1 of v's dtype, with a surrogate gradient."""
        raise NotImplementedError

    def affine(self, x, w, b):
        """``x @ w.T + b`` over the last axis (``b`` may be None)."""
        raise NotImplementedError

    def conv(self, x, w, b, geom: dict, nd: int):
        """PyTorch's ``conv1d``/``conv2d`` (``nd``) of ``x`` (N, C, *spatial) with weight ``w`` (O, C/groups,
        *kernel) and bias ``b`` (O,); ``geom`` from :func:`~nirbridge.nodes.conv_geometry` (padding as
        (lo, hi) per spatial dim)."""
        raise NotImplementedError

    def pool(self, x, geom: dict, average: bool):
        """The sum over each window of ``x`` (N, C, H, W) with zero padding, divided by the window area
        if ``average``; ``geom`` from :func:`~nirbridge.nodes.pool_geometry`."""
        raise NotImplementedError

    def concat1(self, a, b):
        """Concatenate along axis 1 (the axis after the batch)."""
        raise NotImplementedError

    def sum1(self, x):
        """The sum along axis 1 (the axis after the batch)."""
        raise NotImplementedError


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


@dataclass(frozen=True)
class Kernel:
    """The discrete update of one node type: four pure functions (see the module docstring).

    ``static(step, dyn) -> dict``, ``prepare(ops, params, static, dyn) -> coefficients``,
    ``init(ops, static, batch, dtype) -> state`` and ``step(ops, coefficients, static, state, x)
    -> (state, y)``. Register one with :func:`register_kernel`.
    """

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
    dyn = dyn.for_type(step.node.type)
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
    dyn = dyn.for_type(step.node.type)
    s = dict(
        method=dyn.method, reset=dyn.reset, inclusive=dyn.threshold == ">=", synapse=dyn.synapse,
        surrogate=dyn.surrogate, slope=dyn.surrogate_slope, dt=dyn.dt, shape=tuple(step.input_shape),
        timing=dyn.reset_timing, voltage=dyn.stored_voltage, count=dyn.spikes == "count",
        gain=dyn.input_gain, v0=None,
    )
    if dyn.v_init != "zero" and step.node.params.get(dyn.v_init) is not None:
        # the initial voltage is the parameter's value in the graph (init has no access to the params pytree)
        s["v0"] = np.array(step.node.params[dyn.v_init])  # a writable copy (torch warns on read-only arrays)
    return s


def _v0(ops, s, batch, dtype):
    v = ops.zeros(tuple(batch) + s["shape"], dtype)
    return v if s.get("v0") is None else v + ops.const(s["v0"], like=v)


def _v_state(ops, s, batch, dtype):
    return {"v": _v0(ops, s, batch, dtype)}


def _spikes(ops, c, s, v):
    """``(z, n)``: the 0/1 spike of voltage ``v`` and what the node emits and subtracts (``n = z``,
    or with ``spikes="count"`` the number of thresholds ``v`` holds)."""
    thr = c["v_threshold"]
    z = ops.spike(v, thr, s["inclusive"], s["surrogate"], s["slope"])
    if not s["count"]:
        return z, z
    one = ops.const(1.0, like=v)
    q = v / thr
    if s["inclusive"]:  # v >= thr: floor(v / thr) >= 1 (correctly rounded division is monotone)
        k = ops.floor(q)
    else:  # v > thr: the thresholds strictly below v, at least 1 (v / thr may round to exactly 1)
        k = -ops.floor(-q) - one
        k = ops.where(k < one, one, k)
    return z, z * ops.where(z > 0, k, one)


def _reset(ops, c, s, v, z, n):
    # a select, not v*(1-z) + z*v_reset: the same values (exact either way), half the operations; the
    # reset is not differentiated through the spike (snnTorch's default, a detached reset)
    if s["reset"] == "zero":
        return ops.where(z > 0, c["v_reset"], v)
    return v - n * c["v_threshold"]


def _fire(ops, c, s, state, update):
    """Spike test, reset and output of a spiking node; ``update(v) -> (new state, v')`` is the
    node's update of the voltage (and current) from voltage ``v`` on this step's input.

    Default (``voltage="post"``, ``reset_timing="same"``): update, spike test on the updated voltage,
    reset in the same step (exact in 0/1 arithmetic). The other settings are in :mod:`nirbridge.dynamics`
    (``output_delay`` is not the node's: :mod:`nirbridge.program` delays its outgoing edges).
    """
    v = state["v"]
    if s["voltage"] == "post":
        new, v = update(v)
        z, n = _spikes(ops, c, s, v)
        new["v"] = _reset(ops, c, s, v, z, n)
        return new, n
    # the state holds the pre-reset voltage: the previous step's spike is recomputed from it
    z_prev, n_prev = _spikes(ops, c, s, v)
    if s["timing"] == "same":  # reset first, then the update, as "post" does one step earlier
        new, v = update(_reset(ops, c, s, v, z_prev, n_prev))
    else:  # late: the update first, then the previous step's reset
        new, v = update(v)
        v = _reset(ops, c, s, v, z_prev, n_prev)
    new["v"] = v
    return new, _spikes(ops, c, s, v)[1]


def _decay(ops, k, method):
    """``(a, e)``: the per-step decay ``a`` and ``e = 1 - a`` for ``k = dt/tau`` (``e`` via expm1 for
    the exact method, so it keeps its precision when ``k`` is small)."""
    if method == "euler":
        return 1 - k, k
    return ops.exp(-k), -ops.expm1(-k)


def _leaky_prepare(ops, p, s, dyn):
    """Coefficients of ``v' = a v + b + c x`` (``c`` absent with ``input_gain="unit"``): euler
    ``a = 1 - k``, exact ``a = exp(-k)``; ``b = (1 - a) v_leak``, ``c = (1 - a) r``, ``k = dt/tau``."""
    c = dict(p)
    a, e = _decay(ops, ops.const(s["dt"], like=p["tau"]) / p["tau"], s["method"])
    c["a"], c["b"] = a, e * p["v_leak"]
    if s["gain"] == "nir":
        c["c"] = e * p["r"]
    return c


def _leaky_update(c, s, v, x):
    drive = x if s["gain"] == "unit" else c["c"] * x
    return c["a"] * v + c["b"] + drive


def _value_step(update):
    """The step of a non-spiking one-voltage node (LI, I): output the updated voltage."""

    def step(ops, c, s, state, x):
        v = update(c, s, state["v"], x)
        return {"v": v}, v

    return step


def _spiking_step(update):
    """The step of a spiking one-voltage node (LIF, IF): the update, then spike and reset."""

    def step(ops, c, s, state, x):
        return _fire(ops, c, s, state, lambda v: ({}, update(c, s, v, x)))

    return step


def _integrator_prepare(ops, p, s, dyn):
    c = dict(p)
    c["k"] = ops.const(s["dt"], like=p["r"]) * p["r"]
    return c


def _integrate(c, s, v, x):
    return v + x if s["gain"] == "unit" else v + c["k"] * x


def _cuba_prepare(ops, p, s, dyn):
    """Coefficients of ``i' = a_s i + c_s x`` and ``v' = a_m v + b_m + c_m j (+ c_x x)``, where ``j``
    is the new current (``synapse="current_first"``) or the old one (``"simultaneous"``); ``c_s`` and
    ``c_m`` are absent with ``input_gain="unit"``. Euler: ``a = 1 - dt/tau``; exact: ``a = exp(-dt/tau)``,
    and with ``"simultaneous"`` the exact solution of the coupled equations (the ``c_x`` term)."""
    c = dict(p)
    ks = ops.const(s["dt"], like=p["tau_syn"]) / p["tau_syn"]
    km = ops.const(s["dt"], like=p["tau_mem"]) / p["tau_mem"]
    c["as"], es = _decay(ops, ks, s["method"])
    c["am"], em = _decay(ops, km, s["method"])
    c["bm"] = em * p["v_leak"]
    if s["gain"] == "unit":
        return c
    c["cs"] = es * p["w_in"]
    if s["method"] == "exact" and s["synapse"] == "simultaneous":
        # exact coupled solution: v gains r (i - w_in x) g over the step, with
        # g = (dt/tau_mem) (a_s - a_m) / d, d = dt (1/tau_mem - 1/tau_syn), written without overflow as
        # g = (dt/tau_mem) exp(-min(ks, km)) phi(-|d|), phi(y) = expm1(y)/y (1 at 0, in (0, 1] for y <= 0);
        # so v' = a_m v + (1 - a_m) v_leak + r g i + ((1 - a_m) - g) r w_in x
        d = km - ks
        pos = d > 0
        lead = ops.where(pos, c["as"], c["am"])  # exp(-min(ks, km))
        nd = ops.where(pos, -d, d)  # -|d|
        zero = nd == 0
        safe = ops.where(zero, ops.const(-1.0, like=d), nd)
        phi = ops.where(zero, ops.const(1.0, like=d), ops.expm1(safe) / safe)
        g = km * lead * phi
        c["cm"] = p["r"] * g
        c["cx"] = (em - g) * p["r"] * p["w_in"]
    else:
        c["cm"] = em * p["r"]
    return c


def _cuba_update(c, s, state, x):
    i, v = state["i"], state["v"]
    unit = s["gain"] == "unit"
    i_new = c["as"] * i + (x if unit else c["cs"] * x)
    drive = i_new if s["synapse"] == "current_first" else i
    v_new = c["am"] * v + c["bm"] + (drive if unit else c["cm"] * drive)
    if "cx" in c:
        v_new = v_new + c["cx"] * x
    return i_new, v_new


def _cuba_init(ops, s, batch, dtype):
    return {"i": ops.zeros(tuple(batch) + s["shape"], dtype), **_v_state(ops, s, batch, dtype)}


def _cubali_step(ops, c, s, state, x):
    i, v = _cuba_update(c, s, state, x)
    return {"i": i, "v": v}, v


def _cubalif_step(ops, c, s, state, x):
    def update(v):
        i, v = _cuba_update(c, s, {"i": state["i"], "v": v}, x)
        return {"i": i}, v

    return _fire(ops, c, s, state, update)


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
        c["zero"] = ops.const(0.0, like=p["delay"])
    return c


def _delay_init(ops, s, batch, dtype):
    if s["depth"] == 0:
        return {}
    return {"buffer": ops.zeros(tuple(batch) + (s["depth"],) + s["shape"], dtype)}


def _delay_step(ops, c, s, state, x):
    if s["depth"] == 0:
        return state, x
    full = ops.concat1(x[:, None], state["buffer"])  # full[:, k] = x(t - k)
    if s["uniform"]:
        y = full[:, s["steps"]]
    else:  # select with where, not full * mask: 0 * inf would turn one buffered inf into NaN
        y = ops.sum1(ops.where(c["mask"] > 0, full, c["zero"]))
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
    "I": Kernel(_neuron_static, _integrator_prepare, _v_state, _value_step(_integrate)),
    "IF": Kernel(_neuron_static, _integrator_prepare, _v_state, _spiking_step(_integrate)),
    "LI": Kernel(_neuron_static, _leaky_prepare, _v_state, _value_step(_leaky_update)),
    "LIF": Kernel(_neuron_static, _leaky_prepare, _v_state, _spiking_step(_leaky_update)),
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
    """The kernel of ``node_type`` for ``backend``: its own override if registered, else the shared one."""
    k = _OVERRIDES.get(backend, {}).get(node_type) or KERNELS.get(node_type)
    if k is None:
        raise node_error(UnknownNodeError, node, "type", f"no kernel for node type {node_type!r}",
                         "register one with nirbridge.kernels.register_kernel")
    return k
