"""A new neuron type is one file: this one. It defines a toy adaptive LIF (two state variables, a
spike threshold that rises after each spike and relaxes back), registers its node spec and its
kernel, and then the type runs in every backend, through ``compare()``, and converts back to NIR
from torch and JAX, with no other change to nirbridge.

The toy's update (forward Euler, reset to v_reset; a = adaptation):
    v' = v + dt/tau (v_leak - v + r x)
    z  = [v' > v_threshold + a]
    v' <- v_reset where z
    a' = a - dt/tau_adapt a + beta z
The oracle is a plain NumPy loop written from these equations below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import nir
import numpy as np
import pytest

import nirbridge as nb
from nirbridge import kernels, nodes

# ------------------------------------------------------------------ the whole extension


@dataclass(eq=False)
class AdaptiveLIF(nir.NIRNode):
    """A LIF neuron whose threshold rises by ``beta`` per spike and decays with ``tau_adapt``."""

    tau: np.ndarray
    r: np.ndarray
    v_leak: np.ndarray
    v_threshold: np.ndarray
    v_reset: np.ndarray
    tau_adapt: np.ndarray
    beta: np.ndarray

    def __post_init__(self):
        self.input_type = {"input": np.array(self.tau.shape)}
        self.output_type = {"output": np.array(self.tau.shape)}


FIELDS = ("tau", "r", "v_leak", "v_threshold", "v_reset", "tau_adapt", "beta")
SPEC = nodes.NodeSpec(
    type="AdaptiveLIF", nir_class=AdaptiveLIF, fields=FIELDS, float_params=FIELDS, state=("v", "a"), spiking=True,
    expected_input=lambda name, p: tuple(np.shape(p["tau"])),
    param_kinds={"tau": "time_constant", "tau_adapt": "time_constant", "r": "gain", "v_leak": "voltage",
                 "v_reset": "voltage", "v_threshold": "threshold", "beta": "threshold"},
    equation="tau dv/dt = v_leak - v + r x ; z = [v > v_threshold + a] ; tau_a da/dt = -a + tau_a beta z",
)


class AdaptCoeffs(NamedTuple):
    decay: Any
    leak: Any
    gain: Any
    v_threshold: Any
    v_reset: Any
    adapt_decay: Any
    beta: Any


class AdaptState(NamedTuple):
    v: Any
    a: Any


def adaptive_lif(step, dyn) -> kernels.Kernel:
    d = dyn.for_node(step.name, step.node.type)
    shape = tuple(step.input_shape)
    inclusive, surrogate, slope = d.threshold == ">=", d.surrogate, d.surrogate_slope

    def prepare(ops, p):
        k = ops.const(d.dt, like=p["tau"]) / p["tau"]
        ka = ops.const(d.dt, like=p["tau_adapt"]) / p["tau_adapt"]
        return AdaptCoeffs(1 - k, k * p["v_leak"], k * p["r"], p["v_threshold"], p["v_reset"], 1 - ka, p["beta"])

    def init(ops, c, batch, dtype):
        return AdaptState(ops.zeros((batch,) + shape, dtype), ops.zeros((batch,) + shape, dtype))

    def run(ops, c, st, x):
        v = c.decay * st.v + c.leak + c.gain * x
        z = ops.spike(v, c.v_threshold + st.a, inclusive, surrogate, slope)
        v = ops.where(z > 0, c.v_reset, v)
        return AdaptState(v, c.adapt_decay * st.a + c.beta * z), z

    return kernels.Kernel(prepare, init, run, state=AdaptState(shape, shape), layout="element")


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(nodes.NODE_SPECS, "AdaptiveLIF", SPEC)  # both undone after each test
    monkeypatch.setitem(kernels.KERNELS, "AdaptiveLIF", adaptive_lif)


# ------------------------------------------------------------------ the proof

N = 5
DT = 1e-3


def _graph() -> nb.Graph:
    rng = np.random.default_rng(11)
    neuron = AdaptiveLIF(tau=np.full(N, 5e-3), r=np.full(N, 3.0), v_leak=np.zeros(N), v_threshold=np.full(N, 0.6),
                         v_reset=np.zeros(N), tau_adapt=np.full(N, 2e-2), beta=np.linspace(0.1, 0.5, N))
    return nb.Graph.from_nir(nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([3])}),
        "fc": nir.Affine(weight=rng.uniform(0.2, 1.0, (N, 3)), bias=np.zeros(N)),
        "alif": neuron,
        "output": nir.Output(output_type={"output": np.array([N])}),
    }, edges=[("input", "fc"), ("fc", "alif"), ("alif", "output")], type_check=False))


def _oracle(g: nb.Graph, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The equations of the module docstring, in float64 NumPy."""
    w = g.node("fc").params["weight"]
    p = g.node("alif").params
    T, B = x.shape[:2]
    v, a = np.zeros((B, N)), np.zeros((B, N))
    zs, vs, as_ = [], [], []
    for t in range(T):
        i = x[t] @ w.T
        v = v + DT / p["tau"] * (p["v_leak"] - v + p["r"] * i)
        z = (v > p["v_threshold"] + a).astype(float)
        v = np.where(z > 0, p["v_reset"], v)
        a = a - DT / p["tau_adapt"] * a + p["beta"] * z
        zs.append(z), vs.append(v), as_.append(a)
    return np.stack(zs), np.stack(vs), np.stack(as_)


def _input() -> np.ndarray:
    return (np.random.default_rng(5).random((80, 3, 3)) < 0.5).astype(np.float64)


def test_the_toy_type_runs_in_every_backend_against_its_equations(registered):
    g, x = _graph(), _input()
    z, v, a = _oracle(g, x)
    assert 5 < z.sum() < z.size / 2  # it spikes, and adaptation thins the spikes
    for backend in ("reference", "jax", "torch"):
        out = nb.simulate(g, x, nb.Dynamics(dt=DT), backend=backend, dtype="float64",
                          record=[("alif", "v"), ("alif", "a")])
        np.testing.assert_array_equal(out["output"], z, err_msg=backend)
        np.testing.assert_allclose(out[("alif", "v")], v, rtol=0, atol=1e-12, err_msg=backend)
        np.testing.assert_allclose(out[("alif", "a")], a, rtol=0, atol=1e-12, err_msg=backend)


def test_the_toy_type_through_compare_and_back_to_nir(registered):
    g, x = _graph(), _input()
    r = nb.compare(g, x.astype(np.float32), nb.Dynamics(dt=DT))
    assert r.ok and r.ran == ["reference", "jax", "torch"], str(r)
    assert r.comparisons["jax"].entry(("alif", "a")).ok  # the new state variable is compared too
    assert nb.from_torch(nb.to_torch(g, nb.Dynamics(dt=DT))).equals(g)
    assert nb.from_jax(nb.to_jax(g, nb.Dynamics(dt=DT))).equals(g)
    assert "AdaptiveLIF" in g.summary()


def test_without_the_registration_the_type_is_unknown():
    with pytest.raises(nb.errors.UnknownNodeError, match="AdaptiveLIF"):
        _graph()
