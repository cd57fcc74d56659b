"""The Dynamics contract: the Dynamics object itself, and every neuron's discrete update checked
against a closed form or a hand-computed sequence (never against the simulator itself).

All neuron checks run in float64 through the NumPy reference. Unless stated otherwise the
tolerance is rtol 1e-12 / atol 1e-13: the oracle and the simulator compute the same real number
by different float64 operation sequences (a closed form ``q**n`` against ``n`` repeated updates),
so they differ by some ulps per step, a few 1e-15 over the few hundred steps used here.
"""

from __future__ import annotations

import dataclasses
import math

import nir
import numpy as np
import pytest

import nirbridge as nb
from nirbridge.errors import DynamicsError

RTOL, ATOL = 1e-12, 1e-13


def _graph(node, in_shape) -> nb.Graph:
    nodes = {"input": nir.Input(input_type={"input": np.array(in_shape)}), "n": node,
             "output": nir.Output(output_type={"output": None})}
    return nb.Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=[("input", "n"), ("n", "output")], type_check=False))


def _run(node, x, dyn, states=("v",)):
    """Simulate Input -> node -> Output on ``x`` (T, B, n) in float64: (output, {state: trace})."""
    x = np.asarray(x, dtype=np.float64)
    g = _graph(node, x.shape[2:])
    out = nb.simulate(g, x, dyn, record=[("n", s) for s in states], dtype="float64")
    return out["output"], {s: out[("n", s)] for s in states}


def _arr(*v):
    return np.array(v, dtype=np.float64)


# ------------------------------------------------------------------ the Dynamics object
def test_dynamics_defaults_and_repr():
    d = nb.Dynamics(dt=1e-4)
    assert (d.dt, d.method, d.reset, d.threshold, d.synapse) == (1e-4, "euler", "zero", ">", "simultaneous")
    assert repr(d) == "Dynamics(dt=0.0001, method='euler', reset='zero', threshold='>', synapse='simultaneous')"
    e = nb.Dynamics(dt=1e-3, method="exact", reset="subtract", threshold=">=", synapse="current_first",
                    surrogate="sigmoid", surrogate_slope=5)
    assert repr(e) == ("Dynamics(dt=0.001, method='exact', reset='subtract', threshold='>=', "
                       "synapse='current_first', surrogate='sigmoid', surrogate_slope=5.0)")
    # the repr is valid Python that builds an equal object
    for obj in (d, e):
        assert eval(repr(obj), {"Dynamics": nb.Dynamics}) == obj


def test_dynamics_is_frozen_and_hashable():
    d = nb.Dynamics(dt=1e-4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.dt = 1e-3
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.method = "exact"
    assert d.dt == 1e-4
    # equal settings are equal and hash alike (usable as a jit static argument / dict key)
    assert nb.Dynamics(dt=1e-4) == d and hash(nb.Dynamics(dt=1e-4)) == hash(d)
    assert nb.Dynamics(dt=1e-4, reset="subtract") != d
    assert isinstance(nb.Dynamics(dt=np.float32(0.5)).dt, float)  # normalised to a Python float


def test_dynamics_replace_validates_and_copies():
    d = nb.Dynamics(dt=1e-4)
    e = d.replace(method="exact", dt=1e-3)
    assert (e.method, e.dt, e.reset) == ("exact", 1e-3, "zero")
    assert (d.method, d.dt) == ("euler", 1e-4)  # unchanged
    with pytest.raises(DynamicsError, match="method"):
        d.replace(method="rk4")
    with pytest.raises(DynamicsError, match="dt"):
        d.replace(dt=0.0)


def test_dynamics_preset_nir():
    d = nb.Dynamics.preset("nir", dt=1e-4)
    assert d == nb.Dynamics(dt=1e-4, method="euler", reset="zero", threshold=">", synapse="simultaneous")
    assert nb.Dynamics.preset("nir", dt=1e-3, reset="subtract").reset == "subtract"
    assert nb.Dynamics.preset("nir", dt=1e-3, reset="subtract") == nb.Dynamics(dt=1e-3, reset="subtract")
    with pytest.raises(DynamicsError, match=r"dt"):  # "nir" has no dt of its own
        nb.Dynamics.preset("nir")
    with pytest.raises(DynamicsError, match=r"'snntorchh'") as e:
        nb.Dynamics.preset("snntorchh", dt=1e-4)
    assert "nir" in str(e.value) and "Fix" in str(e.value)  # names the known presets and the fix


@pytest.mark.parametrize("dt", [0, 0.0, -1e-4, float("nan"), float("inf"), -float("inf")])
def test_dynamics_rejects_bad_dt(dt):
    with pytest.raises(DynamicsError, match=r"Dynamics\.dt must be a finite number > 0.*Fix"):
        nb.Dynamics(dt=dt)


@pytest.mark.parametrize("dt", [None, "fast", [1e-4, 2e-4], object()])
def test_dynamics_rejects_non_number_dt(dt):
    with pytest.raises(DynamicsError, match=r"Dynamics\.dt must be a number of seconds.*Fix: e\.g\. dt=1e-4"):
        nb.Dynamics(dt=dt)


def test_dynamics_dt_is_required():
    # there is no default dt on purpose (every library assumes another one); Python's own error
    # for the missing argument names it
    with pytest.raises(TypeError, match="dt"):
        nb.Dynamics()
    with pytest.raises(TypeError, match="dt"):
        nb.Dynamics(method="exact")


@pytest.mark.parametrize("field,value", [("method", "rk4"), ("method", "Euler"), ("reset", "none"),
                                         ("reset", "to_zero"), ("threshold", "=>"), ("threshold", "<"),
                                         ("synapse", "current-first"), ("surrogate", "tanh")])
def test_dynamics_rejects_unknown_choices(field, value):
    with pytest.raises(DynamicsError) as e:
        nb.Dynamics(dt=1e-4, **{field: value})
    msg = str(e.value)
    assert f"Dynamics.{field}={value!r}" in msg and "is not one of" in msg and "Fix" in msg


@pytest.mark.parametrize("slope", [0, -1.0, float("nan"), None, "steep"])
def test_dynamics_rejects_bad_surrogate_slope(slope):
    with pytest.raises(DynamicsError, match="surrogate_slope"):
        nb.Dynamics(dt=1e-4, surrogate_slope=slope)


# ------------------------------------------------------------------ LI
@pytest.mark.parametrize("method", ["euler", "exact"])
def test_li_constant_input_closed_form(method):
    dt, T = 1e-3, 120
    tau, r, v_leak = _arr(5e-3, 2e-2, 1e-2), _arr(2.0, 0.5, 1.0), _arr(0.1, -0.2, 0.0)
    x = _arr(0.7, 1.5, -0.3)
    u = v_leak + r * x
    # euler: v_n = v_{n-1} + k (u - v_{n-1})  =>  v_n = u (1 - (1 - k)^n);  exact: v_n = u (1 - a^n)
    q = 1 - dt / tau if method == "euler" else np.exp(-dt / tau)
    n = np.arange(1, T + 1)[:, None, None]  # output at step index t is the state after t+1 updates
    expected = u * (1 - q**n)
    out, st = _run(nir.LI(tau=tau, r=r, v_leak=v_leak), np.broadcast_to(x, (T, 2, 3)), nb.Dynamics(dt, method=method))
    np.testing.assert_allclose(out, np.broadcast_to(expected, (T, 2, 3)), rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(st["v"], out)  # LI outputs its voltage


def test_li_exact_is_the_ode_solution_for_piecewise_constant_input():
    # the exact (zero-order-hold) update solves tau v' = v_leak - v + r x exactly when x is held
    # over each step: v(t) = u + (v(t0) - u) exp(-(t - t0)/tau), restarted at each input change
    dt, tau, r, vl = 1e-3, 4e-3, 1.5, 0.05
    x = np.concatenate([np.full(7, 2.0), np.full(5, -1.0), np.full(9, 0.25)])
    v, expected = 0.0, []
    for seg_start, seg_len in ((0, 7), (7, 5), (12, 9)):
        u = vl + r * x[seg_start]
        expected += [u + (v - u) * math.exp(-(n * dt) / tau) for n in range(1, seg_len + 1)]
        v = expected[-1]
    out, _ = _run(nir.LI(tau=_arr(tau), r=_arr(r), v_leak=_arr(vl)), x[:, None, None], nb.Dynamics(dt, method="exact"))
    np.testing.assert_allclose(out[:, 0, 0], expected, rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------ LIF
def _lif_closed_form(u, q, thr, v_reset, reset, T):
    """Spikes and after-reset voltages of a LIF under constant drive, from the closed form
    v(n steps after a start v0) = u + (v0 - u) q^n, restarted after each reset.

    The first spike after a start is at n* = floor(log((u - thr)/(u - v0)) / log(q)) + 1 steps:
    the first n with u + (v0 - u) q^n > thr (u > thr > v0 so it always comes)."""
    z, v = np.zeros(T), np.zeros(T)
    t0, v0 = -1, 0.0  # the state v0 holds after step index t0 (-1: the initial state)
    while True:
        ratio = math.log((u - thr) / (u - v0)) / math.log(q)
        assert abs(ratio - round(ratio)) > 1e-6, "a spike within rounding of a step boundary: pick other numbers"
        nstar = math.floor(ratio) + 1
        for n in range(1, nstar + 1):
            if t0 + n >= T:
                return z, v
            v[t0 + n] = u + (v0 - u) * q**n
        t0 += nstar
        z[t0] = 1.0
        v[t0] = v_reset if reset == "zero" else v[t0] - thr
        v0 = v[t0]


@pytest.mark.parametrize("method", ["euler", "exact"])
@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_lif_constant_input_spike_times_and_voltage(method, reset):
    dt, T = 1e-3, 300
    # three neurons with different time constants, drives and resets, one value per neuron
    tau, r, vl = _arr(2e-2, 7e-3, 4e-2), _arr(2.0, 1.0, 3.0), _arr(0.1, 0.0, -0.2)
    thr, v_reset, x = _arr(1.0, 0.3, 0.9), _arr(0.2, -0.1, 0.0), _arr(0.7, 0.55, 0.5)
    node = nir.LIF(tau=tau, r=r, v_leak=vl, v_threshold=thr, v_reset=v_reset)
    out, st = _run(node, np.broadcast_to(x, (T, 1, 3)), nb.Dynamics(dt, method=method, reset=reset))
    for j in range(3):
        u = vl[j] + r[j] * x[j]
        q = 1 - dt / tau[j] if method == "euler" else math.exp(-dt / tau[j])
        z, v = _lif_closed_form(u, q, thr[j], v_reset[j], reset, T)
        assert z.sum() >= 5  # the drive makes it fire repeatedly: the test exercises the reset
        np.testing.assert_array_equal(out[:, 0, j], z)
        # the recorded state is the voltage after this step's reset
        np.testing.assert_allclose(st["v"][:, 0, j], v, rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("method", ["euler", "exact"])
def test_lif_first_spike_step(method):
    # LIF from rest with v_leak = 0, constant r x = u > thr: first spike at step index
    # n* - 1 with n* = floor(log(1 - thr/u) / log(q)) + 1
    dt, tau, u, thr = 1e-4, 2.5e-3, 0.15, 0.1
    q = 1 - dt / tau if method == "euler" else math.exp(-dt / tau)
    nstar = math.floor(math.log(1 - thr / u) / math.log(q)) + 1
    assert nstar == (27 if method == "euler" else 28)  # computed by hand: ln(1/3)/ln(0.96) = 26.9, 0.04 -> 27.5
    node = nir.LIF(tau=_arr(tau), r=_arr(1.0), v_leak=_arr(0.0), v_threshold=_arr(thr), v_reset=_arr(0.0))
    out, _ = _run(node, np.full((40, 1, 1), u), nb.Dynamics(dt, method=method))
    assert np.flatnonzero(out[:, 0, 0])[0] == nstar - 1


# ------------------------------------------------------------------ I and IF
@pytest.mark.parametrize("method", ["euler", "exact"])
def test_i_ramps_linearly(method):
    dt, T = 1e-3, 50
    r, x = _arr(0.5, 2.0, -1.0), _arr(1.0, 0.3, 2.0)
    out, st = _run(nir.I(r=r), np.broadcast_to(x, (T, 2, 3)), nb.Dynamics(dt, method=method))
    n = np.arange(1, T + 1)[:, None, None]
    np.testing.assert_allclose(out, np.broadcast_to(n * dt * r * x, out.shape), rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(st["v"], out)
    # a time-varying input is integrated: v_n = dt r (x_0 + ... + x_{n-1})
    xs = np.random.default_rng(3).normal(size=(T, 1, 3))
    out, _ = _run(nir.I(r=r), xs, nb.Dynamics(dt, method=method))
    np.testing.assert_allclose(out, dt * r * np.cumsum(xs, axis=0), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("method", ["euler", "exact"])
def test_if_constant_input_period_is_ceil(method):
    # v gains c = dt r x per step; with v_reset = 0 and reset to zero it spikes every ceil(thr / c)
    # steps (thr / c is not an integer here, so '>' and '>=' agree)
    dt, T = 1e-3, 200
    r, x, thr = _arr(3.0, 10.0, 1.0), _arr(0.7, 0.3, 4.0), _arr(0.05, 0.2, 0.03)
    node = nir.IF(r=r, v_threshold=thr, v_reset=np.zeros(3))
    for threshold in (">", ">="):
        out, _ = _run(node, np.broadcast_to(x, (T, 1, 3)), nb.Dynamics(dt, method=method, threshold=threshold))
        for j in range(3):
            ratio = thr[j] / (dt * r[j] * x[j])
            assert abs(ratio - round(ratio)) > 1e-3
            period = math.ceil(ratio)  # 24 (23.8), 67 (66.7), 8 (7.5)
            expected = np.zeros(T)
            expected[period - 1 :: period] = 1
            np.testing.assert_array_equal(out[:, 0, j], expected)


# IF with c = dt r x = 0.5 * 0.5 * 1 = 0.25 and v_threshold = 1: every number is exact in binary,
# so the voltage hits the threshold exactly and '>' vs '>=' and both resets differ; the
# expected sequences are worked out by hand (v after each step, after reset).
_IF_CASES = {
    # threshold, reset, v_reset: (spike steps, voltages)
    (">", "zero", 0.0): ([4, 9], [.25, .5, .75, 1., 0., .25, .5, .75, 1., 0., .25]),
    (">=", "zero", 0.0): ([3, 7], [.25, .5, .75, 0., .25, .5, .75, 0., .25, .5, .75]),
    (">", "zero", 0.5): ([4, 7, 10], [.25, .5, .75, 1., .5, .75, 1., .5, .75, 1., .5]),
    (">=", "zero", 0.5): ([3, 5, 7, 9], [.25, .5, .75, .5, .75, .5, .75, .5, .75, .5, .75]),
    (">", "subtract", 0.5): ([4, 8], [.25, .5, .75, 1., .25, .5, .75, 1., .25, .5, .75]),
    (">=", "subtract", 0.5): ([3, 7], [.25, .5, .75, 0., .25, .5, .75, 0., .25, .5, .75]),
}


@pytest.mark.parametrize("method", ["euler", "exact"])
@pytest.mark.parametrize("case", list(_IF_CASES))
def test_if_exact_threshold_hand_sequence(case, method):
    threshold, reset, v_reset = case
    spikes, volts = _IF_CASES[case]
    node = nir.IF(r=_arr(0.5), v_threshold=_arr(1.0), v_reset=_arr(v_reset))
    dyn = nb.Dynamics(0.5, method=method, reset=reset, threshold=threshold)
    for dtype in ("float32", "float64"):  # exact arithmetic: identical in both precisions
        g = _graph(node, (1,))
        res = nb.simulate(g, np.ones((11, 1, 1)), dyn, record=[("n", "v")], dtype=dtype)
        assert np.flatnonzero(res["output"][:, 0, 0]).tolist() == spikes
        assert res[("n", "v")][:, 0, 0].tolist() == volts


# ------------------------------------------------------------------ CubaLI / CubaLIF, Euler
# tau_syn = 2 ms, tau_mem = 5 ms, dt = 1 ms: ks = 0.5, km = 0.2; r = 2, v_leak = 0.1, w_in = 1.5;
# input 1.0, -0.5, 2.0, so w_in x = 1.5, -0.75, 3.0. The current is the same for both orders:
#   i1 = 0 + 0.5 (1.5 - 0) = 0.75;  i2 = 0.75 + 0.5 (-0.75 - 0.75) = 0;  i3 = 0 + 0.5 (3 - 0) = 1.5
# simultaneous (v uses the old current):
#   v1 = 0 + 0.2 (0.1 - 0 + 2*0) = 0.02
#   v2 = 0.02 + 0.2 (0.1 - 0.02 + 2*0.75) = 0.336
#   v3 = 0.336 + 0.2 (0.1 - 0.336 + 2*0) = 0.2888
# current_first (v uses the new current):
#   v1 = 0 + 0.2 (0.1 - 0 + 2*0.75) = 0.32
#   v2 = 0.32 + 0.2 (0.1 - 0.32 + 2*0) = 0.276
#   v3 = 0.276 + 0.2 (0.1 - 0.276 + 2*1.5) = 0.8408
_CUBA = dict(tau_syn=_arr(2e-3), tau_mem=_arr(5e-3), r=_arr(2.0), v_leak=_arr(0.1), w_in=_arr(1.5))
_CUBA_X = _arr(1.0, -0.5, 2.0)[:, None, None]
_CUBA_I = [0.75, 0.0, 1.5]
_CUBA_V = {"simultaneous": [0.02, 0.336, 0.2888], "current_first": [0.32, 0.276, 0.8408]}


@pytest.mark.parametrize("synapse", ["simultaneous", "current_first"])
def test_cubali_euler_hand_unrolled(synapse):
    out, st = _run(nir.CubaLI(**_CUBA), _CUBA_X, nb.Dynamics(1e-3, synapse=synapse), states=("i", "v"))
    np.testing.assert_allclose(st["i"][:, 0, 0], _CUBA_I, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(st["v"][:, 0, 0], _CUBA_V[synapse], rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(out, st["v"])


# CubaLIF with v_threshold = 0.3, v_reset = 0.05 on the same numbers (spike test on the updated v):
# simultaneous: v1 = 0.02; v2 = 0.336 > 0.3 spikes -> 0.05 (zero) or 0.036 (subtract);
#   v3 = 0.05 + 0.2 (0.1 - 0.05 + 0) = 0.06, or 0.036 + 0.2 (0.1 - 0.036 + 0) = 0.0488
# current_first: v1 = 0.32 spikes -> 0.05 or 0.02; v2 = 0.05 + 0.2 (0.05) = 0.06, or 0.02 + 0.2 (0.08) = 0.036;
#   v3 = 0.06 + 0.2 (0.1 - 0.06 + 3) = 0.668 spikes -> 0.05, or 0.036 + 0.2 (3.064) = 0.6488 -> 0.3488
_CUBALIF = {
    ("simultaneous", "zero"): ([0, 1, 0], [0.02, 0.05, 0.06]),
    ("simultaneous", "subtract"): ([0, 1, 0], [0.02, 0.036, 0.0488]),
    ("current_first", "zero"): ([1, 0, 1], [0.05, 0.06, 0.05]),
    ("current_first", "subtract"): ([1, 0, 1], [0.02, 0.036, 0.3488]),
}


@pytest.mark.parametrize("case", list(_CUBALIF))
def test_cubalif_euler_hand_unrolled(case):
    synapse, reset = case
    z, v = _CUBALIF[case]
    node = nir.CubaLIF(**_CUBA, v_threshold=_arr(0.3), v_reset=_arr(0.05))
    out, st = _run(node, _CUBA_X, nb.Dynamics(1e-3, synapse=synapse, reset=reset), states=("i", "v"))
    np.testing.assert_array_equal(out[:, 0, 0], z)
    np.testing.assert_allclose(st["i"][:, 0, 0], _CUBA_I, rtol=RTOL, atol=ATOL)  # the reset leaves i alone
    np.testing.assert_allclose(st["v"][:, 0, 0], v, rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------ CubaLI / CubaLIF, exact
def _cuba_flow(i0, v0, x, t, tau_syn, tau_mem, r, v_leak, w_in):
    """The analytic solution of tau_syn i' = -i + w_in x, tau_mem v' = v_leak - v + r i with x
    constant, from (i0, v0), at time t:
    i(t) = I + (i0 - I) e^{-t/ts},  I = w_in x
    v(t) = U + (v0 - U - B) e^{-t/tm} + B e^{-t/ts},  U = v_leak + r I,  B = r (i0 - I) ts / (ts - tm)
         = U + (v0 - U) e^{-t/tm} + B (e^{-t/ts} - e^{-t/tm})
    and for ts == tm == tau: v(t) = U + (v0 - U) e^{-t/tau} + r (i0 - I) (t/tau) e^{-t/tau}.

    e^{-t/ts} - e^{-t/tm} is evaluated as e^{-t/tm} expm1(delta) (or -e^{-t/ts} expm1(-delta) for
    delta > 0, to avoid overflow), delta = t (ts - tm) / (ts tm), with ts - tm exact in floating
    point when they are close: no cancellation for ts ~ tm."""
    big_i = w_in * x
    u = v_leak + r * big_i
    e_s, e_m = math.exp(-t / tau_syn), math.exp(-t / tau_mem)
    i = big_i + (i0 - big_i) * e_s
    if tau_syn == tau_mem:
        return i, u + (v0 - u) * e_m + r * (i0 - big_i) * (t / tau_mem) * e_m
    delta = t * (tau_syn - tau_mem) / (tau_syn * tau_mem)
    diff = e_m * math.expm1(delta) if delta <= 0 else -e_s * math.expm1(-delta)
    b = r * (i0 - big_i) * tau_syn / (tau_syn - tau_mem)
    return i, u + (v0 - u) * e_m + b * diff


@pytest.mark.parametrize("taus", [(2e-3, 5e-3), (8e-3, 3e-3), (4e-3, 4e-3), (4e-3, 4e-3 * (1 + 1e-7))],
                         ids=["syn<mem", "syn>mem", "syn==mem", "syn~mem"])
def test_cubali_exact_simultaneous_is_the_analytic_solution(taus):
    # the input is held over each step and changes twice; the analytic solution restarts at each
    # change from its own (analytic) state and is sampled at every step time
    tau_syn, tau_mem = taus
    dt, r, vl, w = 1e-3, 2.0, 0.1, 1.5
    x = np.concatenate([np.full(10, 1.0), np.full(15, -0.5), np.full(20, 2.0)])
    i0 = v0 = 0.0
    exp_i, exp_v, start = [], [], 0
    for end in (10, 25, 45):
        for n in range(1, end - start + 1):
            i, v = _cuba_flow(i0, v0, x[start], n * dt, tau_syn, tau_mem, r, vl, w)
            exp_i.append(i)
            exp_v.append(v)
        i0, v0, start = exp_i[-1], exp_v[-1], end
    node = nir.CubaLI(tau_syn=_arr(tau_syn), tau_mem=_arr(tau_mem), r=_arr(r), v_leak=_arr(vl), w_in=_arr(w))
    out, st = _run(node, x[:, None, None], nb.Dynamics(dt, method="exact"), states=("i", "v"))
    np.testing.assert_allclose(st["i"][:, 0, 0], exp_i, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(st["v"][:, 0, 0], exp_v, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(out, st["v"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cubali_exact_very_fast_membrane_stays_finite(dtype):
    # dt / tau_mem = 100 or 1000 (Sinabs-style dt = 1 with a tiny tau): the coupling coefficient
    # must not overflow exp/expm1 (it did: -inf in float32, NaN in float64 at 1000)
    dt, ts, r, vl, w = 1.0, 10.0, 1.0, 0.0, 1.0
    for tm in (1e-2, 1e-3):
        node = nir.CubaLI(tau_syn=_arr(ts), tau_mem=_arr(tm), r=_arr(r), v_leak=_arr(vl), w_in=_arr(w))
        g = _graph(node, (1,))
        res = nb.simulate(g, np.ones((5, 1, 1)), nb.Dynamics(dt, method="exact"), dtype=dtype)
        expected = [_cuba_flow(0.0, 0.0, 1.0, n * dt, ts, tm, r, vl, w)[1] for n in range(1, 6)]
        # float32: a few ulps of 0.1..0.4 (1e-6 relative)
        np.testing.assert_allclose(res["output"][:, 0, 0], expected, rtol=1e-6 if dtype == "float32" else 1e-12)


def test_cubali_exact_current_first_hand_unrolled():
    # current_first + exact: i is updated exactly, then v exactly with i held at its new value:
    #   i_n = I + (i_{n-1} - I) a_s ;  v_n = u_n + (v_{n-1} - u_n) a_m,  u_n = v_leak + r i_n
    ts, tm, dt, r, vl, w = 2e-3, 5e-3, 1e-3, 2.0, 0.1, 1.5
    a_s, a_m = math.exp(-0.5), math.exp(-0.2)
    i1 = 1.5 + (0 - 1.5) * a_s
    v1 = (vl + r * i1) + (0 - (vl + r * i1)) * a_m
    i2 = -0.75 + (i1 + 0.75) * a_s
    v2 = (vl + r * i2) + (v1 - (vl + r * i2)) * a_m
    i3 = 3.0 + (i2 - 3.0) * a_s
    v3 = (vl + r * i3) + (v2 - (vl + r * i3)) * a_m
    node = nir.CubaLI(tau_syn=_arr(ts), tau_mem=_arr(tm), r=_arr(r), v_leak=_arr(vl), w_in=_arr(w))
    _, st = _run(node, _CUBA_X, nb.Dynamics(dt, method="exact", synapse="current_first"), states=("i", "v"))
    np.testing.assert_allclose(st["i"][:, 0, 0], [i1, i2, i3], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(st["v"][:, 0, 0], [v1, v2, v3], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_cubalif_exact_spikes_on_the_analytic_flow(reset):
    # each step: flow (i, v) analytically over dt with the held input, spike on the updated v, reset
    dt, ts, tm, r, vl, w, thr, vr = 1e-3, 3e-3, 6e-3, 1.0, 0.0, 2.0, 0.5, 0.1
    x = np.concatenate([np.full(30, 0.8), np.full(10, -0.5), np.full(40, 0.6)])
    i = v = 0.0
    exp_z, exp_v = [], []
    for xt in x:
        i, v = _cuba_flow(i, v, xt, dt, ts, tm, r, vl, w)
        z = float(v > thr)
        if z:
            v = vr if reset == "zero" else v - thr
        exp_z.append(z)
        exp_v.append(v)
    assert sum(exp_z) >= 4
    node = nir.CubaLIF(tau_syn=_arr(ts), tau_mem=_arr(tm), r=_arr(r), v_leak=_arr(vl), w_in=_arr(w),
                       v_threshold=_arr(thr), v_reset=_arr(vr))
    out, st = _run(node, x[:, None, None], nb.Dynamics(dt, method="exact", reset=reset))
    np.testing.assert_array_equal(out[:, 0, 0], exp_z)
    np.testing.assert_allclose(st["v"][:, 0, 0], exp_v, rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------ convergence
def _final_error(node_fn, truth, dt, t_end, method, synapse="simultaneous"):
    n = round(t_end / dt)
    out, _ = _run(node_fn(), np.ones((n, 1, 1)), nb.Dynamics(dt, method=method, synapse=synapse))
    return abs(out[-1, 0, 0] - truth)


def test_euler_converges_to_exact_linearly_li():
    tau, r, vl, t_end = 5e-3, 2.0, 0.1, 1e-2
    truth = (vl + r) * (1 - math.exp(-t_end / tau))  # v(t) from rest under constant x = 1
    node = lambda: nir.LI(tau=_arr(tau), r=_arr(r), v_leak=_arr(vl))  # noqa: E731
    dts = [1e-3 / 2**j for j in range(4)]
    errs = [_final_error(node, truth, dt, t_end, "euler") for dt in dts]
    # forward Euler is first order: halving dt halves the error (ratio -> 2 as dt -> 0)
    ratios = [errs[j] / errs[j + 1] for j in range(3)]
    assert all(1.85 < q < 2.1 for q in ratios), ratios
    assert ratios[-1] == pytest.approx(2.0, abs=0.05)
    # the exact update has no discretisation error for a constant input
    assert max(_final_error(node, truth, dt, t_end, "exact") for dt in dts) < 1e-14


def test_euler_converges_to_exact_linearly_cubali():
    ts, tm, r, vl, w, t_end = 2e-3, 5e-3, 2.0, 0.1, 1.5, 2e-2
    truth = _cuba_flow(0.0, 0.0, 1.0, t_end, ts, tm, r, vl, w)[1]
    node = lambda: nir.CubaLI(tau_syn=_arr(ts), tau_mem=_arr(tm), r=_arr(r), v_leak=_arr(vl), w_in=_arr(w))  # noqa: E731
    dts = [5e-4 / 2**j for j in range(4)]
    for method, synapse in (("euler", "simultaneous"), ("euler", "current_first"), ("exact", "current_first")):
        errs = [_final_error(node, truth, dt, t_end, method, synapse) for dt in dts]
        ratios = [errs[j] / errs[j + 1] for j in range(3)]
        # all three are first-order approximations of the coupled system
        assert all(1.8 < q < 2.2 for q in ratios), (method, synapse, ratios)
    # the exact, simultaneous update is the analytic solution at every dt
    assert max(_final_error(node, truth, dt, t_end, "exact") for dt in dts) < 1e-13
