"""Kernels of the neurons: LI, LIF, I, IF, CubaLI, CubaLIF (the equations are in
:mod:`nirbridge.dynamics`).

Every update is written as ``v' = decay v + leak + gain x`` with coefficients prepared once per
run; the Dynamics choices (method, reset, spike test, reset timing, stored voltage, spikes per
step, input gain, synapse order, initial voltage) are resolved when the kernel is built, into
the closures below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from .base import Kernel, register_kernel


class LeakyCoeffs(NamedTuple):
    """LI / LIF: ``v' = decay v + leak + input_gain x`` (``input_gain`` None: the input enters unscaled)."""

    decay: Any  # euler 1 - dt/tau, exact exp(-dt/tau)
    leak: Any  # (1 - decay) v_leak
    input_gain: Any  # (1 - decay) r, or None with Dynamics(input_gain="unit")
    v_threshold: Any  # None for LI
    v_reset: Any  # None for LI
    v_start: Any  # the voltage at step 0 (Dynamics.v_init), None: 0


class IntegratorCoeffs(NamedTuple):
    """I / IF: ``v' = v + input_gain x``."""

    input_gain: Any  # dt r, or None with Dynamics(input_gain="unit")
    v_threshold: Any  # None for I
    v_reset: Any  # None for I
    v_start: Any


class SynapticCoeffs(NamedTuple):
    """CubaLI / CubaLIF: ``i' = syn_decay i + syn_gain x`` and ``v' = mem_decay v + mem_leak +
    mem_gain j + direct_gain x``, ``j`` the new (``synapse="current_first"``) or old current."""

    syn_decay: Any
    syn_gain: Any  # (1 - syn_decay) w_in, or None (unit gain)
    mem_decay: Any
    mem_leak: Any  # (1 - mem_decay) v_leak
    mem_gain: Any  # (1 - mem_decay) r (exact + simultaneous: r g), or None (unit gain)
    direct_gain: Any  # exact + simultaneous only: the input's own drive of v within the step, else None
    v_threshold: Any  # None for CubaLI
    v_reset: Any  # None for CubaLI
    v_start: Any


class VoltageState(NamedTuple):
    """The state of a one-voltage neuron."""

    v: Any


class SynapticState(NamedTuple):
    """The state of a current-based neuron: synaptic current and voltage."""

    i: Any
    v: Any


# ---------------------------------------------------------------------------- shared pieces
def _decay(ops, k, method: str):
    """``(a, e)``: the per-step decay ``a`` and ``e = 1 - a`` for ``k = dt/tau`` (``e`` via expm1 for
    the exact method, so it keeps its precision when ``k`` is small)."""
    if method == "euler":
        return 1 - k, k
    return ops.exp(-k), -ops.expm1(-k)


def _v_start(d, p) -> Any:
    """The parameter the voltage starts at (``Dynamics.v_init``), or None for 0."""
    return None if d.v_init == "zero" else p.get(d.v_init)


def _voltage_init(shape):
    def init(ops, c, batch, dtype) -> VoltageState:
        v = ops.zeros((batch,) + shape, dtype)
        return VoltageState(v if c.v_start is None else v + c.v_start)

    return init


def _synaptic_init(shape):
    def init(ops, c, batch, dtype) -> SynapticState:
        v = ops.zeros((batch,) + shape, dtype)
        return SynapticState(ops.zeros((batch,) + shape, dtype), v if c.v_start is None else v + c.v_start)

    return init


def spike_rule(d) -> Callable:
    """``spikes(ops, c, v) -> (z, n)``: the 0/1 spike of voltage ``v`` and what the node emits and
    subtracts (``n = z``; with ``spikes="count"`` the number of thresholds ``v`` holds)."""
    inclusive, surrogate, slope = d.threshold == ">=", d.surrogate, d.surrogate_slope

    def single(ops, c, v):
        z = ops.spike(v, c.v_threshold, inclusive, surrogate, slope)
        return z, z

    if d.spikes != "count":
        return single

    def count(ops, c, v):
        z, _ = single(ops, c, v)
        one = ops.const(1.0, like=v)
        q = v / c.v_threshold
        if inclusive:  # v >= thr: floor(v / thr) >= 1 (correctly rounded division is monotone)
            k = ops.floor(q)
        else:  # v > thr: the thresholds strictly below v, at least 1 (v / thr may round to exactly 1)
            k = -ops.floor(-q) - one
            k = ops.where(k < one, one, k)
        return z, z * ops.where(z > 0, k, one)

    return count


def reset_rule(d) -> Callable:
    """``reset(ops, c, v, z, n) -> v``. A select, not ``v (1 - z) + z v_reset``: the same values (exact
    either way), half the operations; the reset is not differentiated through the spike
    (snnTorch's default, a detached reset)."""
    if d.reset == "zero":
        return lambda ops, c, v, z, n: ops.where(z > 0, c.v_reset, v)
    return lambda ops, c, v, z, n: v - n * c.v_threshold


def fire_rule(d) -> Callable:
    """``fire(ops, c, v, update) -> (aux, v', out)``: spike test, reset and output of a spiking node;
    ``update(v) -> (aux, v')`` is the node's update of the voltage (and of ``aux``, its current)
    on this step's input.

    ``voltage="post"`` (default): update, spike test on the updated voltage, reset in the same
    step. ``"pre"``: the state keeps the voltage before the reset, the previous step's spike is
    recomputed from it and reset first (``reset_timing="same"``) or after the update (``"late"``).
    (``output_delay`` is not the node's: :mod:`nirbridge.program` delays its outgoing edges.)
    """
    spikes, reset = spike_rule(d), reset_rule(d)
    if d.stored_voltage == "post":

        def post(ops, c, v, update):
            aux, v = update(v)
            z, n = spikes(ops, c, v)
            return aux, reset(ops, c, v, z, n), n

        return post
    if d.reset_timing == "same":

        def pre_same(ops, c, v, update):  # reset first, then the update, as "post" does one step earlier
            aux, v = update(reset(ops, c, v, *spikes(ops, c, v)))
            return aux, v, spikes(ops, c, v)[1]

        return pre_same

    def pre_late(ops, c, v, update):  # the update first, then the previous step's reset
        z_prev, n_prev = spikes(ops, c, v)
        aux, v = update(v)
        v = reset(ops, c, v, z_prev, n_prev)
        return aux, v, spikes(ops, c, v)[1]

    return pre_late


def _neuron_kernel(step, dyn, *, prepare, update, spiking: bool) -> Kernel:
    """A one-voltage neuron: ``update(c, v, x) -> v'``, then (spiking) fire."""
    shape = tuple(step.input_shape)
    if not spiking:

        def value_step(ops, c, state, x):
            v = update(c, state.v, x)
            return VoltageState(v), v

        return Kernel(prepare, _voltage_init(shape), value_step, state=VoltageState(shape), layout="element")
    fire = fire_rule(dyn)

    def spiking_step(ops, c, state, x):
        _, v, out = fire(ops, c, state.v, lambda v: (None, update(c, v, x)))
        return VoltageState(v), out

    return Kernel(prepare, _voltage_init(shape), spiking_step, state=VoltageState(shape), layout="element")


# ---------------------------------------------------------------------------- LI, LIF
def leaky(step, dyn) -> Kernel:
    """LI / LIF: euler ``v += dt/tau (v_leak - v + r x)``, exact ``v = u + (v - u) exp(-dt/tau)``."""
    d = dyn.for_node(step.name, step.node.type)
    spiking = step.node.spec.spiking
    method, unit = d.method, d.input_gain == "unit"

    def prepare(ops, p) -> LeakyCoeffs:
        a, e = _decay(ops, ops.const(d.dt, like=p["tau"]) / p["tau"], method)
        return LeakyCoeffs(a, e * p["v_leak"], None if unit else e * p["r"],
                           p.get("v_threshold"), p.get("v_reset"), _v_start(d, p))

    if unit:
        def update(c, v, x):
            return c.decay * v + c.leak + x
    else:
        def update(c, v, x):
            return c.decay * v + c.leak + c.input_gain * x

    return _neuron_kernel(step, d, prepare=prepare, update=update, spiking=spiking)


# ---------------------------------------------------------------------------- I, IF
def integrator(step, dyn) -> Kernel:
    """I / IF: ``v += dt r x`` (exact for an input held over the step)."""
    d = dyn.for_node(step.name, step.node.type)
    unit = d.input_gain == "unit"

    def prepare(ops, p) -> IntegratorCoeffs:
        gain = None if unit else ops.const(d.dt, like=p["r"]) * p["r"]
        return IntegratorCoeffs(gain, p.get("v_threshold"), p.get("v_reset"), _v_start(d, p))

    if unit:
        def update(c, v, x):
            return v + x
    else:
        def update(c, v, x):
            return v + c.input_gain * x

    return _neuron_kernel(step, d, prepare=prepare, update=update, spiking=step.node.spec.spiking)


# ---------------------------------------------------------------------------- CubaLI, CubaLIF
def synaptic(step, dyn) -> Kernel:
    """CubaLI / CubaLIF: ``i' = a_s i + c_s x`` and ``v' = a_m v + b_m + c_m j (+ c_x x)``, where ``j``
    is the new current (``synapse="current_first"``) or the old one (``"simultaneous"``). Euler:
    ``a = 1 - dt/tau``; exact: ``a = exp(-dt/tau)``, and with ``"simultaneous"`` the exact solution
    of the coupled equations (the ``c_x`` term)."""
    d = dyn.for_node(step.name, step.node.type)
    shape = tuple(step.input_shape)
    method, unit, first = d.method, d.input_gain == "unit", d.synapse == "current_first"
    coupled = method == "exact" and not first and not unit

    def prepare(ops, p) -> SynapticCoeffs:
        ks = ops.const(d.dt, like=p["tau_syn"]) / p["tau_syn"]
        km = ops.const(d.dt, like=p["tau_mem"]) / p["tau_mem"]
        a_s, e_s = _decay(ops, ks, method)
        a_m, e_m = _decay(ops, km, method)
        mem_leak = e_m * p["v_leak"]
        syn_gain = mem_gain = direct = None
        if not unit:
            syn_gain = e_s * p["w_in"]
            if coupled:
                # exact coupled solution: v gains r (i - w_in x) g over the step, with
                # g = (dt/tau_mem) (a_s - a_m) / dd, dd = dt (1/tau_mem - 1/tau_syn), written without overflow
                # as g = (dt/tau_mem) exp(-min(ks, km)) phi(-|dd|), phi(y) = expm1(y)/y (1 at 0, in (0, 1] for
                # y <= 0); so v' = a_m v + (1 - a_m) v_leak + r g i + ((1 - a_m) - g) r w_in x
                dd = km - ks
                pos = dd > 0
                lead = ops.where(pos, a_s, a_m)  # exp(-min(ks, km))
                nd = ops.where(pos, -dd, dd)  # -|dd|
                zero = nd == 0
                safe = ops.where(zero, ops.const(-1.0, like=dd), nd)
                phi = ops.where(zero, ops.const(1.0, like=dd), ops.expm1(safe) / safe)
                g = km * lead * phi
                mem_gain = p["r"] * g
                direct = (e_m - g) * p["r"] * p["w_in"]
            else:
                mem_gain = e_m * p["r"]
        return SynapticCoeffs(a_s, syn_gain, a_m, mem_leak, mem_gain, direct, p.get("v_threshold"),
                              p.get("v_reset"), _v_start(d, p))

    def update(c, i, v, x):
        i_new = c.syn_decay * i + (x if unit else c.syn_gain * x)
        drive = i_new if first else i
        v_new = c.mem_decay * v + c.mem_leak + (drive if unit else c.mem_gain * drive)
        if coupled:
            v_new = v_new + c.direct_gain * x
        return i_new, v_new

    init = _synaptic_init(shape)
    state = SynapticState(shape, shape)
    if not step.node.spec.spiking:

        def value_step(ops, c, st, x):
            i, v = update(c, st.i, st.v, x)
            return SynapticState(i, v), v

        return Kernel(prepare, init, value_step, state=state, layout="element")
    fire = fire_rule(d)

    def spiking_step(ops, c, st, x):
        i, v, out = fire(ops, c, st.v, lambda v: update(c, st.i, v, x))
        return SynapticState(i, v), out

    return Kernel(prepare, init, spiking_step, state=state, layout="element")


for _t in ("LI", "LIF"):
    register_kernel(_t, leaky)
for _t in ("I", "IF"):
    register_kernel(_t, integrator)
for _t in ("CubaLI", "CubaLIF"):
    register_kernel(_t, synaptic)

__all__ = ["IntegratorCoeffs", "LeakyCoeffs", "SynapticCoeffs", "SynapticState", "VoltageState", "fire_rule",
           "integrator", "leaky", "reset_rule", "spike_rule", "synaptic"]
