"""The torch backend against the NumPy reference (the oracle), node type by node type.

Tolerances: the torch backend runs the same kernels (nirbridge.kernels) as the reference, so the
only differences are the order of floating-point additions inside matrix products, convolutions
and pooling (F.linear / F.conv / avg_pool2d vs the reference's einsum and slice sums) and the
last bit of exp/expm1. Over the <= 200 steps used here these stay below a few float32 ulps of
values of size <= ~10: 1e-5 (absolute and relative) in float32, 1e-10 in float64.

Spikes must be identical. Rule for voltages within rounding of the threshold: the spike test is
exact on the (slightly different) voltages of each backend, so a spike may legitimately differ
only where the reference's voltage lies within ~1e-6 (float32) / ~1e-14 (float64) of the
threshold. The seeded inputs here never come that close (checked: every spike agrees); should
a new case do so, change its seed or input, not the tolerance.
"""

from __future__ import annotations

import copy
import itertools
import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cases import NODE_TYPES, SPIKING, node_case, recurrent_case  # noqa: E402

import nirbridge as nb  # noqa: E402
from nirbridge import examples, kernels  # noqa: E402
from nirbridge.backends.torch import TorchOps, to_torch  # noqa: E402
from nirbridge.errors import InputError  # noqa: E402

TOL = {"float32": 1e-5, "float64": 1e-10}


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # performance only (see conftest.py)


def _variants(node_type):
    """(method, reset, synapse, threshold) combinations that matter for a node type."""
    synapses = ("simultaneous", "current_first") if node_type.startswith("Cuba") else ("simultaneous",)
    thresholds = (">", ">=") if node_type in SPIKING else (">",)
    return itertools.product(("euler", "exact"), ("zero", "subtract"), synapses, thresholds)


CASES = [(t, *v) for t in NODE_TYPES for v in _variants(t)]


def assert_matches(graph, ref, out, dtype):
    """Same keys, dtypes and shapes; spikes identical; everything else within TOL[dtype]."""
    assert set(ref) == set(out)
    for k in ref:
        r, o = ref[k], out[k]
        assert isinstance(o, np.ndarray) and o.dtype == r.dtype == np.dtype(dtype) and o.shape == r.shape, k
        if not isinstance(k, tuple) and graph.plan[k].node.spec.spiking:
            np.testing.assert_array_equal(o, r, err_msg=f"spikes of {k!r}")
        else:
            np.testing.assert_allclose(o, r, rtol=TOL[dtype], atol=TOL[dtype], err_msg=str(k))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("node_type,method,reset,synapse,threshold", CASES)
def test_node_matches_reference(node_type, method, reset, synapse, threshold, dtype):
    g, x, dt = node_case(node_type)
    dyn = nb.Dynamics(dt=dt, method=method, reset=reset, synapse=synapse, threshold=threshold)
    ref = nb.simulate(g, x, dyn, backend="reference", record="all", dtype=dtype)
    out = nb.simulate(g, x, dyn, backend="torch", record="all", dtype=dtype)
    assert_matches(g, ref, out, dtype)
    if node_type in SPIKING:  # the case must exercise the spike path
        assert ref["node"].any() and not ref["node"].all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("method,reset", [("euler", "zero"), ("exact", "subtract")])
def test_recurrent_graph(method, reset, dtype):
    g, x, dt = recurrent_case()
    dyn = nb.Dynamics(dt=dt, method=method, reset=reset)
    ref = nb.simulate(g, x, dyn, backend="reference", record="all", dtype=dtype)
    out = nb.simulate(g, x, dyn, backend="torch", record="all", dtype=dtype)
    assert_matches(g, ref, out, dtype)
    assert ref["lif"].any()


@pytest.mark.parametrize("preset", ["snntorch", "norse", "sinabs", "spikingjelly", "spyx"])
@pytest.mark.parametrize("case", ["IF", "LIF", "CubaLIF", "recurrent"])
def test_library_presets(case, preset):
    """The library conventions of the Dynamics (reset timing, stored voltage, spike counts, output
    delay, initial voltage, ...) live in the shared kernels and program; torch runs them alike."""
    g, x, dt = recurrent_case() if case == "recurrent" else node_case(case)
    dyn = nb.Dynamics.preset(preset, dt=dt)
    for dtype in ("float32", "float64"):
        ref = nb.simulate(g, x, dyn, backend="reference", record="all", dtype=dtype)
        out = nb.simulate(g, x, dyn, backend="torch", record="all", dtype=dtype)
        assert_matches(g, ref, out, dtype)


PAPER = {  # name: (dt, input shape, T, B, input spike probability)
    "braille_noDelay_bias_zero": (1e-4, (12,), 150, 4, 0.1),
    "cnn_sinabs": (1.0, (2, 34, 34), 12, 2, 0.2),  # Sinabs counts time in steps
    "lif_norse": (1e-4, (1,), 200, 3, 0.5),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("method", ["euler", "exact"])
@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_graph(name, method, dtype):
    dt, shape, T, B, p = PAPER[name]
    g = nb.load(examples.path(name))
    x = (np.random.default_rng(0).random((T, B) + shape) < p).astype(np.float32)
    dyn = nb.Dynamics(dt=dt, method=method)
    ref = nb.simulate(g, x, dyn, backend="reference", record="all", dtype=dtype)
    out = nb.simulate(g, x, dyn, backend="torch", record="all", dtype=dtype)
    assert_matches(g, ref, out, dtype)
    assert ref["output"].any()


def test_lif_norse_golden_trace():
    # an oracle independent of the reference: Norse's own simulation, from the NIR paper
    data = np.loadtxt(Path(__file__).parent / "data" / "lif_norse.csv", delimiter=",")
    g = nb.load(examples.path("lif_norse"))
    out = nb.simulate(g, data[:, 0].reshape(-1, 1, 1), nb.Dynamics(dt=1e-4), backend="torch",
                      record=[("1", "v")], dtype="float32")
    np.testing.assert_array_equal(out["output"][:, 0, 0], data[:, 2])
    # Norse computed in float32: voltages ~0.1 agree to a few float32 ulps (~1e-8)
    np.testing.assert_allclose(out[("1", "v")][:, 0, 0], data[:, 1], rtol=0, atol=1e-7)


# ---------------------------------------------------------------------------- the module API
def _ff_graph(rng, n_in=5, n_hid=7, n_out=3, dtype=np.float32):
    import nir

    f = lambda *s: rng.uniform(-1, 1, size=s).astype(dtype)  # noqa: E731
    return nb.Graph.from_nir(nir.NIRGraph.from_list(
        nir.Affine(weight=f(n_hid, n_in) * 2 + 0.5, bias=f(n_hid) * 0.1),
        nir.LIF(tau=np.full(n_hid, 5e-3, dtype), r=np.ones(n_hid, dtype), v_leak=np.zeros(n_hid, dtype),
                v_threshold=np.full(n_hid, 0.5, dtype), v_reset=np.zeros(n_hid, dtype)),
        nir.Affine(weight=f(n_out, n_hid), bias=f(n_out) * 0.1),
        nir.LI(tau=np.full(n_out, 1e-2, dtype), r=np.ones(n_out, dtype), v_leak=np.zeros(n_out, dtype)),
    ))


def test_forward_step_and_hoist_agree(rng):
    g, x, dt = recurrent_case()
    dyn = nb.Dynamics(dt=dt)
    m = to_torch(g, dyn, dtype=torch.float64)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        y = m(xt)
        m.hoist = False
        y_plain = m(xt)
        state, ys = None, []
        for t in range(x.shape[0]):
            state, y_t = m.step(state, xt[t])
            ys.append(y_t["output"])
    ref = nb.simulate(g, x, dyn, dtype="float64")["output"]
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y_plain.numpy(), ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(torch.stack(ys).numpy(), ref, rtol=1e-10, atol=1e-10)
    # continuing from a state: two halves give the whole
    with torch.no_grad():
        r1, s1 = m.run(xt[:25])
        r2, _ = m.run(xt[25:], state=s1)
    np.testing.assert_allclose(torch.cat([r1["output"], r2["output"]]).numpy(), ref, rtol=1e-10, atol=1e-10)


def test_state_dict_names_and_param_paths():
    g = nb.load(examples.path("braille_noDelay_bias_zero"))
    m = to_torch(g, nb.Dynamics(dt=1e-4))
    keys = set(m.state_dict())
    assert {"fc1.weight", "fc1.bias", "lif1.lif.tau_syn", "lif1.w_rec.weight", "lif2.v_threshold"} <= keys
    assert m.param_paths["lif1.lif"] == "lif1.lif"
    assert all(v.dtype == torch.float32 for v in m.state_dict().values())
    # a node named like a module attribute gets a trailing "_"
    import nir

    clash = nb.Graph.from_nir(nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([2])}),
               "step": nir.Scale(scale=np.array([2.0, 3.0])),
               "output": nir.Output(output_type={"output": np.array([2])})},
        edges=[("input", "step"), ("step", "output")]))
    m2 = to_torch(clash, nb.Dynamics(dt=1.0))
    assert m2.param_paths == {"step": "step_"} and list(m2.state_dict()) == ["step_.scale"]
    assert torch.equal(m2(torch.ones(2, 1, 2))[0, 0], torch.tensor([2.0, 3.0]))


def test_to_float64_and_state_follow_the_module(rng):
    g = _ff_graph(rng)  # float32 parameters: exact in float64 as well
    x = (rng.random((30, 4, 5)) < 0.5).astype(np.float64)
    dyn = nb.Dynamics(dt=1e-3)
    m = to_torch(g, dyn).to(torch.float64)
    assert m.init_state(4)["nodes"]["lif"]["v"].dtype == torch.float64
    rec = to_torch(recurrent_case()[0], dyn).to(torch.float64).init_state(2)
    assert rec["prev"] and all(t.dtype == torch.float64 for t in rec["prev"].values())
    with torch.no_grad():
        y = m(x)
    assert y.dtype == torch.float64
    ref = nb.simulate(g, x, dyn, dtype="float64")["output"]
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-10, atol=1e-10)


def test_meta_device(rng):
    g, _, dt = recurrent_case()
    m = to_torch(g, nb.Dynamics(dt=dt, method="exact")).to("meta")
    y = m(torch.zeros(7, 2, 4, device="meta"))
    assert y.device.type == "meta" and y.shape == (7, 2, 2)
    state = m.init_state(2)
    assert state["nodes"]["lif"]["v"].device.type == "meta"
    assert state["prev"] and all(t.device.type == "meta" for t in state["prev"].values())  # recurrent edges
    _, y_t = m.step(state, torch.zeros(2, 4, device="meta"))
    y_t = y_t["output"]
    assert y_t.shape == (2, 2)


def test_gradients_flow_through_the_surrogate(rng):
    g = _ff_graph(rng)
    x = torch.from_numpy((rng.random((40, 4, 5)) < 0.5).astype(np.float32))
    for surrogate in ("fast_sigmoid", "sigmoid", "straight_through"):
        m = to_torch(g, nb.Dynamics(dt=1e-3, surrogate=surrogate))
        m(x).pow(2).sum().backward()
        w1 = m.get_parameter("affine.weight").grad  # before the LIF: only the surrogate carries it
        assert w1 is not None and torch.isfinite(w1).all() and (w1 != 0).any(), surrogate
        for name, p in m.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("surrogate", ["fast_sigmoid", "sigmoid", "straight_through"])
def test_spike_surrogate_closed_form(surrogate):
    slope = 7.0
    v = torch.linspace(-1, 1, 11, dtype=torch.float64, requires_grad=True)
    thr = torch.tensor(0.15, dtype=torch.float64, requires_grad=True)
    z = TorchOps().spike(v, thr, False, surrogate, slope)
    np.testing.assert_array_equal(z.detach().numpy(), (v.detach().numpy() > 0.15).astype(np.float64))
    z.backward(torch.ones_like(z))
    d = v.detach().numpy() - 0.15
    s = 1 / (1 + np.exp(-slope * d))
    want = {"fast_sigmoid": 1 / (1 + slope * np.abs(d)) ** 2, "sigmoid": slope * s * (1 - s),
            "straight_through": np.ones_like(d)}[surrogate]
    np.testing.assert_allclose(v.grad.numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(thr.grad.numpy(), -want.sum(), rtol=1e-12)
    # >= fires at equality, > does not
    assert TorchOps().spike(thr.detach(), thr.detach(), True, surrogate, slope).item() == 1.0
    assert TorchOps().spike(thr.detach(), thr.detach(), False, surrogate, slope).item() == 0.0


# torch 2.13's own code warns here: inductor imports call the deprecated torch.jit.script_method,
# and dynamo instantiates torch.autograd.Function when it traces one (any autograd.Function)
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:<class 'torch.autograd.function.Function'> should not be:DeprecationWarning")
@pytest.mark.slow  # 20-60 s on a busy 2-core machine, most of it inductor's start-up
def test_torch_compile(rng):
    g = _ff_graph(rng, n_in=3, n_hid=4, n_out=2)
    x = torch.from_numpy((rng.random((5, 2, 3)) < 0.7).astype(np.float32))
    dyn = nb.Dynamics(dt=1e-3)
    eager, m = to_torch(g, dyn), to_torch(g, dyn)
    compiled = torch.compile(m)
    y = compiled(x)
    y_eager = eager(x)
    ref = nb.simulate(g, x.numpy(), dyn)["output"]
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-5, atol=1e-5)
    (y ** 2).sum().backward()  # gradients through the compiled graph, surrogate included
    (y_eager ** 2).sum().backward()
    for name, p in eager.named_parameters():
        np.testing.assert_allclose(m.get_parameter(name).grad.numpy(), p.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert (m.get_parameter("affine.weight").grad != 0).any()
    assert nb.from_torch(compiled).equals(g)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:<class 'torch.autograd.function.Function'> should not be:DeprecationWarning")
@pytest.mark.slow  # inductor compiles two chunk programs (the 60 steps are 7 chunks of 8 and one of 4)
def test_compiled_chunks_match_the_reference():
    """to_torch(compile=True): the time loop as compiled chunks of 8 steps, the same numbers as the
    reference (outputs and recorded states, recurrent edges and a Delay carried across chunks)."""
    g, x, dt = recurrent_case(T=60)
    dyn = nb.Dynamics(dt=dt)
    m = to_torch(g, dyn, compile=True)
    with torch.no_grad():
        got, _ = m.run(torch.from_numpy(x.astype(np.float32)), record=["lif", ("lif", "v"), ("delay", "buffer")])
    ref = nb.simulate(g, x, dyn, record=["lif", ("lif", "v"), ("delay", "buffer")])
    for key in ("output", "lif", ("lif", "v"), ("delay", "buffer")):
        # float32, same operations in the same order; 1e-5 covers fused-kernel rounding
        np.testing.assert_allclose(got[key].numpy(), ref[key], rtol=1e-5, atol=1e-5, err_msg=str(key))
    np.testing.assert_array_equal(got["lif"].numpy(), ref["lif"])  # spikes identical
    # another module of a graph with the same structure (other parameter values) reuses the compiled
    # chunks: no new graph is compiled, and its numbers are its own parameters'
    from torch._dynamo.utils import counters

    compiled_before = counters["stats"]["unique_graphs"]
    g2 = g.replace_params({"fc_in": {"weight": g.node("fc_in").params["weight"] * 1.5}})
    m2 = to_torch(g2, dyn, compile=True)
    assert m2._run_program() is m._run_program()
    with torch.no_grad():
        got2, _ = m2.run(torch.from_numpy(x.astype(np.float32)), record=["lif", ("lif", "v"), ("delay", "buffer")])
    assert counters["stats"]["unique_graphs"] == compiled_before
    ref2 = nb.simulate(g2, x, dyn, record=["lif"])
    np.testing.assert_array_equal(got2["lif"].numpy(), ref2["lif"])
    assert not np.array_equal(ref2["lif"], ref["lif"])  # the other weights matter
    with pytest.raises(ValueError, match="chunk length"):
        to_torch(g, dyn, compile=-1)


def test_custom_kernel_for_torch_only(monkeypatch):
    """register_kernel(..., backend="torch") changes torch modules only, not the reference."""
    monkeypatch.setitem(kernels.OVERRIDES, "torch", {})  # restored after the test
    shared = kernels.KERNELS["Scale"]

    def factory(step, dyn):  # a deliberately different rule: y = scale * x + 1
        return shared(step, dyn).replace(step=lambda ops, c, state, x: (state, x * c.scale + 1))

    nb.register_kernel("Scale", factory, backend="torch")
    g, x, dt = node_case("Scale")
    dyn = nb.Dynamics(dt=dt)
    ref = nb.simulate(g, x, dyn, dtype="float64")["output"]
    out = nb.simulate(g, x, dyn, backend="torch", dtype="float64")["output"]
    np.testing.assert_allclose(out, ref + 1, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        np.testing.assert_allclose(to_torch(g, dyn, dtype=torch.float64)(x).numpy(), ref + 1, rtol=1e-12)
    np.testing.assert_array_equal(nb.simulate(g, x, dyn)["output"], nb.simulate(g, x, dyn)["output"])


def test_several_inputs_and_outputs():
    import nir

    n = 3
    g = nb.Graph.from_nir(nir.NIRGraph(
        nodes={"a": nir.Input(input_type={"input": np.array([n])}),
               "b": nir.Input(input_type={"input": np.array([n])}),
               "li": nir.LI(tau=np.full(n, 2e-3), r=np.ones(n), v_leak=np.zeros(n)),
               "sc": nir.Scale(scale=np.array([1.0, -2.0, 0.5])),
               "y1": nir.Output(output_type={"output": np.array([n])}),
               "y2": nir.Output(output_type={"output": np.array([n])})},
        edges=[("a", "li"), ("b", "li"), ("b", "sc"), ("li", "y1"), ("sc", "y2")]))
    rng = np.random.default_rng(3)
    x = {"a": rng.normal(size=(9, 2, n)), "b": rng.normal(size=(9, 2, n))}
    dyn = nb.Dynamics(dt=1e-3)
    ref = nb.simulate(g, x, dyn, dtype="float64")
    with torch.no_grad():
        y = to_torch(g, dyn, dtype=torch.float64)({k: torch.from_numpy(v) for k, v in x.items()})
    assert set(y) == {"y1", "y2"}
    for k in y:
        np.testing.assert_allclose(y[k].numpy(), ref[k], rtol=1e-10, atol=1e-10)


def test_bad_input_names_the_fix():
    g, x, dt = recurrent_case()
    m = to_torch(g, nb.Dynamics(dt=dt))
    with pytest.raises(InputError, match="time-major"):
        m(torch.zeros(3, 4))
    with pytest.raises(InputError, match="Fix"):
        m.step(None, torch.zeros(2, 5))


def test_adapter_progress_and_numpy_out(capsys):
    g, x, dt = recurrent_case(T=5)
    out = nb.simulate(g, x, nb.Dynamics(dt=dt), backend="torch", progress=True)
    assert isinstance(out["output"], np.ndarray) and out["output"].shape == (5, 3, 2)
    assert "simulate (torch)" in capsys.readouterr().err


def test_deepcopy_and_pickle():
    g, x, dt = recurrent_case(T=10)
    m = to_torch(g, nb.Dynamics(dt=dt))
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        with torch.no_grad():
            assert torch.equal(clone(x), m(x))
        assert nb.from_torch(clone).equals(g)
