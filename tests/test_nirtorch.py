"""nirbridge.nirtorch: NIRTorch 2.x call shapes, and each NIRTorch 2.6 defect fixed.

Each defect test states the correct behaviour against an independent oracle (NumPy, closed form).
Where it helps, ``_on_real_nirtorch`` runs the same scenario with the real NIRTorch 2.6 in a fresh
interpreter and the test checks that NIRTorch gets it wrong there (skipped where it is not installed).
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import nir
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nirbridge as nb  # noqa: E402
import nirbridge.nirtorch as nt  # noqa: E402

RNG = np.random.default_rng(7)


def _on_real_nirtorch(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess | None:
    """Run ``code`` with the real ``nirtorch`` in a fresh interpreter (None: not installed / timed out)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("nirtorch")
        if spec is None or "nirbridge" in str(spec.origin):
            return None
    except (ImportError, ValueError):
        return None
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"  # type: ignore[return-value]


def _affine_graph():
    w = RNG.normal(size=(3, 4)).astype(np.float32)
    b = RNG.normal(size=3).astype(np.float32)
    return nir.NIRGraph.from_list(nir.Affine(w, b)), w, b


class LI(torch.nn.Module):
    """A leaky integrator stepping ``v <- a v + x`` (closed form: sum of a^k x_{t-k})."""

    def __init__(self, a):
        super().__init__()
        self.a = a

    def forward(self, x, state=None):
        v = x if state is None else self.a * state + x
        return v, v


# --------------------------------------------------------------------------------------- defects
def test_default_affine_bias_is_the_graphs_bias():
    g, w, b = _affine_graph()
    x = RNG.normal(size=4).astype(np.float32)
    y, _ = nt.nir_to_torch(g, {})(torch.from_numpy(x))
    np.testing.assert_allclose(y.detach().numpy(), w @ x + b, rtol=1e-6, atol=1e-6)
    real = _on_real_nirtorch(f"""
        import nir, numpy as np, torch, nirtorch
        w = np.array({w.tolist()}, np.float32); b = np.array({b.tolist()}, np.float32)
        m = nirtorch.nir_to_torch(nir.NIRGraph.from_list(nir.Affine(w, b)), {{}})
        print(bool(np.allclose(m.affine.bias.detach().numpy(), b)))
    """)
    if real is not None:
        assert real.stdout.strip() == "False", real.stderr  # NIRTorch 2.6 leaves torch's random bias


def _two_output_graph():
    w1 = RNG.normal(size=(2, 3)).astype(np.float32)
    w2 = RNG.normal(size=(4, 3)).astype(np.float32)
    g = nir.NIRGraph(nodes={"x": nir.Input(np.array([3])), "a": nir.Linear(w1), "b": nir.Linear(w2),
                            "ya": nir.Output(np.array([2])), "yb": nir.Output(np.array([4]))},
                     edges=[("x", "a"), ("x", "b"), ("a", "ya"), ("b", "yb")])
    return g, w1, w2


def test_two_outputs_give_a_tuple_in_graph_order():
    g, w1, w2 = _two_output_graph()
    x = RNG.normal(size=3).astype(np.float32)
    (ya, yb), _ = nt.nir_to_torch(g, {})(torch.from_numpy(x))
    np.testing.assert_allclose(ya.detach().numpy(), w1 @ x, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(yb.detach().numpy(), w2 @ x, rtol=1e-6, atol=1e-6)
    real = _on_real_nirtorch("""
        import nir, numpy as np, nirtorch
        g = nir.NIRGraph(nodes={"x": nir.Input(np.array([3])), "a": nir.Linear(np.ones((2, 3))),
                                "b": nir.Linear(np.ones((4, 3))), "ya": nir.Output(np.array([2])),
                                "yb": nir.Output(np.array([4]))},
                         edges=[("x", "a"), ("x", "b"), ("a", "ya"), ("b", "yb")])
        nirtorch.nir_to_torch(g, {})
        print("built")
    """, timeout=8)
    if real is not None:
        assert real == "timeout" or "built" not in real.stdout  # NIRTorch 2.6 loops forever here


def test_two_inputs_summed_into_one_node():
    w = RNG.normal(size=(2, 3)).astype(np.float32)
    g = nir.NIRGraph(nodes={"p": nir.Input(np.array([3])), "q": nir.Input(np.array([3])), "l": nir.Linear(w),
                            "y": nir.Output(np.array([2]))},
                     edges=[("p", "l"), ("q", "l"), ("l", "y")])
    m = nt.nir_to_torch(g, {})
    p, q = RNG.normal(size=3).astype(np.float32), RNG.normal(size=3).astype(np.float32)
    y, _ = m(torch.from_numpy(p), torch.from_numpy(q))
    np.testing.assert_allclose(y.detach().numpy(), w @ (p + q), rtol=1e-5, atol=1e-6)
    y2, _ = m(q=torch.from_numpy(q), p=torch.from_numpy(p))
    assert torch.equal(y, y2)


def test_dtype_applies_to_every_node_and_plain_tensors():
    g = nir.NIRGraph.from_list(nir.Linear(np.ones((2, 2), np.float32)), nir.LI(np.ones(2), np.ones(2), np.zeros(2)))
    m = nt.nir_to_torch(g, {nir.LI: lambda n: LI(torch.tensor(0.5, dtype=torch.float32))}, dtype=torch.float64)
    assert m.linear.weight.dtype == torch.float64
    assert m.li.a.dtype == torch.float64  # a plain attribute, which Module.to leaves alone
    y, _ = m(torch.ones(2, dtype=torch.float64))
    assert y.dtype == torch.float64
    single = nt.nir_to_torch(nir.Linear(np.ones((2, 2), np.float32)), {}, dtype=torch.float64)
    assert single.weight.dtype == torch.float64  # NIRTorch 2.6 ignores dtype for a single node


def test_recurrent_zero_state_follows_the_input_dtype():
    w = (RNG.normal(size=(2, 2)) * 0.5).astype(np.float64)
    g = nir.NIRGraph(nodes={"i": nir.Input(np.array([2])), "l": nir.Linear(w), "o": nir.Output(np.array([2]))},
                     edges=[("i", "l"), ("l", "l"), ("l", "o")])
    m = nt.nir_to_torch(g, {}, dtype=torch.float64)
    x = RNG.normal(size=(5, 2))
    ys, _ = m.run(torch.from_numpy(x))
    prev, ref = np.zeros(2), []
    for t in range(5):
        prev = w @ (x[t] + prev)
        ref.append(prev)
    assert ys.dtype == torch.float64
    np.testing.assert_allclose(ys.detach().numpy(), np.array(ref), rtol=1e-12)
    # bfloat16: zeros of another dtype would promote the sum to float32 and break the bfloat16 Linear
    mb = nt.nir_to_torch(g, {}, dtype=torch.bfloat16)
    yb, _ = mb.run(torch.from_numpy(x).to(torch.bfloat16))
    assert yb.dtype == torch.bfloat16
    np.testing.assert_allclose(yb.float().detach().numpy(), np.array(ref), rtol=0.1, atol=0.1)
    real = _on_real_nirtorch(f"""
        import nir, numpy as np, torch, nirtorch
        w = np.array({w.tolist()})
        g = nir.NIRGraph(nodes={{"i": nir.Input(np.array([2])), "l": nir.Linear(w), "o": nir.Output(np.array([2]))}},
                         edges=[("i", "l"), ("l", "l"), ("l", "o")])
        m = nirtorch.nir_to_torch(g, {{}}, dtype=torch.bfloat16)
        try:
            print(m(torch.ones(2, dtype=torch.bfloat16))[0].dtype)
        except Exception as e:
            print("error", type(e).__name__)
    """)
    if real is not None:  # NIRTorch 2.6: float32 CPU zeros for the first step
        assert real.stdout.strip() != "torch.bfloat16", real.stdout


def test_none_entry_bypasses_the_node_in_both_directions():
    w = RNG.normal(size=(2, 3)).astype(np.float32)
    g = nir.NIRGraph.from_list(nir.Linear(w), nir.LI(np.ones(2), np.ones(2), np.zeros(2)))
    m = nt.nir_to_torch(g, {nir.LI: None})
    x = RNG.normal(size=3).astype(np.float32)
    y, _ = m(torch.from_numpy(x))
    np.testing.assert_allclose(y.detach().numpy(), w @ x, rtol=1e-6, atol=1e-6)
    assert "li" not in dict(m.named_children())
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(), torch.nn.Linear(2, 1))
    out = nt.torch_to_nir(model, {torch.nn.Dropout: None})
    kinds = {k: type(v).__name__ for k, v in out.nodes.items()}
    assert sorted(kinds.values()) == ["Affine", "Affine", "Input", "Output"]
    assert len(out.edges) == 3


def test_unmapped_types_raise_value_errors_naming_them():
    g = nir.NIRGraph.from_list(nir.LIF(np.ones(2), np.ones(2), np.zeros(2), np.ones(2)))
    with pytest.raises(ValueError, match=r"'lif'.*LIF.*Fix"):
        nt.nir_to_torch(g, {})
    with pytest.raises(ValueError, match=r"Dropout.*Fix"):
        nt.torch_to_nir(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()), {})


def test_user_map_overrides_the_default_map_in_torch_to_nir():
    def mine(module):
        return nir.Linear(np.full((2, 2), 7.0))

    out = nt.torch_to_nir(torch.nn.Sequential(torch.nn.Linear(2, 2)), {torch.nn.Linear: mine})
    lin = [v for v in out.nodes.values() if isinstance(v, nir.Linear)]
    assert len(lin) == 1 and np.all(lin[0].weight == 7.0)  # NIRTorch 2.6 let its default win


def test_nested_graph_entry_keeps_the_subgraph_as_one_module():
    w = RNG.normal(size=(2, 2)).astype(np.float32)
    inner = nir.NIRGraph.from_list(nir.Linear(w))
    g = nir.NIRGraph.from_list(inner)

    class Doubling(torch.nn.Module):
        def forward(self, x):
            return 2 * x

    m = nt.nir_to_torch(g, {nir.NIRGraph: lambda sub: Doubling()})
    assert isinstance(m.nirgraph, Doubling)
    x = torch.ones(2)
    assert torch.equal(m(x)[0], 2 * x)
    m2 = nt.nir_to_torch(g, {})  # without the entry the subgraph is wired recursively
    np.testing.assert_allclose(m2(x)[0].detach().numpy(), w @ np.ones(2), rtol=1e-6)


def test_star_import_and_module_names():
    ns: dict = {}
    exec("from nirbridge.nirtorch import *", ns)
    for name in ("nir_to_torch", "torch_to_nir", "load", "extract_nir_graph", "install"):
        assert name in ns  # NIRTorch 2.6 lists extract_torch_graph in __all__ without defining it
    assert all(hasattr(nt, n) for n in nt.__all__)


def test_modules_pickle_and_run_the_same():
    g, w, b = _affine_graph()
    m = nt.nir_to_torch(g, {})
    m2 = pickle.loads(pickle.dumps(m))
    x = torch.from_numpy(RNG.normal(size=4).astype(np.float32))
    assert torch.equal(m(x)[0], m2(x)[0])


# --------------------------------------------------------------------------------------- NIRTorch behaviour
def test_recurrent_edges_carry_the_previous_step_under_prev_output():
    w = RNG.normal(size=(2, 2)).astype(np.float32)
    g = nir.NIRGraph(nodes={"i": nir.Input(np.array([2])), "a": nir.Linear(w), "b": nir.Linear(w),
                            "o": nir.Output(np.array([2]))},
                     edges=[("i", "a"), ("a", "b"), ("b", "a"), ("b", "o")])
    m = nt.nir_to_torch(g, {})
    x = RNG.normal(size=2).astype(np.float32)
    y, s = m(torch.from_numpy(x))
    np.testing.assert_allclose(y.detach().numpy(), w @ (w @ x), rtol=1e-5)
    np.testing.assert_allclose(s["b_prev_output"].detach().numpy(), w @ (w @ x), rtol=1e-5)
    y2, _ = m(torch.from_numpy(x), s)
    np.testing.assert_allclose(y2.detach().numpy(), w @ (w @ (x + w @ (w @ x))), rtol=1e-5)


def test_names_sanitized_like_nirtorch():
    g = nir.NIRGraph(nodes={"i": nir.Input(np.array([2])), "a.b": nir.Linear(np.eye(2)),
                            "if": nir.Linear(np.eye(2)), "o": nir.Output(np.array([2]))},
                     edges=[("i", "a.b"), ("a.b", "if"), ("if", "o")])
    assert [n for n, _ in nt.nir_to_torch(g, {}).named_children()] == ["a_b", "nir_node_if"]


def test_stateful_child_gets_and_returns_its_state():
    g = nir.NIRGraph.from_list(nir.LI(np.ones(1), np.ones(1), np.zeros(1)))
    m = nt.nir_to_torch(g, {nir.LI: lambda n: LI(0.5)})
    x = torch.tensor([1.0, 2.0, 4.0])[:, None]
    ys, s = m.run(x)
    np.testing.assert_allclose(ys[:, 0].numpy(), [1.0, 2.5, 5.25])
    assert float(s["li"]) == 5.25


def test_torch_to_nir_traces_fan_in_and_input_types():
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(3, 2)
            self.b = torch.nn.Linear(3, 2, bias=False)

        def forward(self, x):
            return self.a(x) + self.b(x)

    model = Two()
    g = nt.torch_to_nir(model, {})
    kinds = {k: type(v).__name__ for k, v in g.nodes.items()}
    assert sorted(kinds.values()) == ["Affine", "Input", "Linear", "Output"]
    assert len(g.edges) == 4
    inp = next(v for v in g.nodes.values() if isinstance(v, nir.Input))
    assert list(inp.input_type["input"]) == [3]
    back = nt.nir_to_torch(g, {})
    x = torch.from_numpy(RNG.normal(size=3).astype(np.float32))
    torch.testing.assert_close(back(x)[0], model(x), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------- beyond NIRTorch
def test_node_map_none_falls_back_to_nirbridge_kernels():
    g = nir.read(str(nb.examples.path("braille_noDelay_bias_zero")))
    dyn = nb.Dynamics(dt=1e-4)
    m = nt.nir_to_torch(g, None, dynamics=dyn)
    x = (RNG.random((20, 2, 12)) < 0.3).astype(np.float32)
    ys, _ = m.run(torch.from_numpy(x))
    ref = nb.simulate(g, x, dyn, backend="reference")["output"]  # the NumPy oracle
    assert np.asarray(ref).sum() > 0  # the net spikes at all
    np.testing.assert_allclose(ys.detach().numpy(), np.asarray(ref), atol=1e-5)
    # a partial map: the library maps its Affine layers, nirbridge runs the neurons
    m2 = nt.nir_to_torch(g, {nir.Affine: nt.nir_interpreter.DEFAULT_MAP[nir.Affine]}, dynamics=dyn)
    assert isinstance(m2.fc1, torch.nn.Linear)
    np.testing.assert_allclose(m2.run(torch.from_numpy(x))[0].detach().numpy(), np.asarray(ref), atol=1e-5)


def test_install_registers_nirtorch_and_submodules():
    code = """
        import sys, nirbridge.nirtorch as nt
        nt.install()
        import nirtorch, nirtorch.graph, nirtorch.torch_tracer
        from nirtorch.graph_executor import GraphExecutor
        from nirtorch.from_nir import GraphExecutor as G2
        assert nirtorch is nt and G2 is GraphExecutor
        assert nirtorch.torch_tracer.NIRTorchTracer is nt.torch_tracer.NIRTorchTracer
        nt.uninstall()
        assert sys.modules.get("nirtorch") is not nt
        print("ok")
    """
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "ok", r.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_recurrent_graph_runs_on_the_gpu():
    w = RNG.normal(size=(2, 2)).astype(np.float32)
    g = nir.NIRGraph(nodes={"i": nir.Input(np.array([2])), "l": nir.Linear(w), "o": nir.Output(np.array([2]))},
                     edges=[("i", "l"), ("l", "l"), ("l", "o")])
    x = RNG.normal(size=(4, 2)).astype(np.float32)
    ys, _ = nt.nir_to_torch(g, {}, device="cuda").run(torch.from_numpy(x).cuda())
    prev, ref = np.zeros(2), []
    for t in range(4):
        prev = w @ (x[t] + prev)
        ref.append(prev)
    np.testing.assert_allclose(ys.detach().cpu().numpy(), np.array(ref), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------- legacy entry points
def test_extract_nir_graph_records_module_wiring():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    with pytest.warns(DeprecationWarning):
        g = nt.extract_nir_graph(model, nt.torch_tracer.DEFAULT_MAP[torch.nn.Linear], torch.zeros(1, 3),
                                 ignore_dims=[0])
    assert {k: type(v).__name__ for k, v in g.nodes.items()} == {"input": "Input", "0": "Affine", "1": "Affine",
                                                                 "output": "Output"}
    assert sorted(g.edges) == [("0", "1"), ("1", "output"), ("input", "0")]
    assert list(g.nodes["input"].input_type["input"]) == [3] and list(g.nodes["output"].output_type["output"]) == [2]
    np.testing.assert_array_equal(g.nodes["1"].weight, model[1].weight.detach().numpy())


def test_load_runs_a_recurrent_graph_from_the_previous_step_cache():
    w = (RNG.normal(size=(2, 2)) * 0.5).astype(np.float32)
    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([2])), "a": nir.Linear(w), "b": nir.Linear(w),
                            "output": nir.Output(np.array([2]))},
                     edges=[("input", "a"), ("a", "b"), ("b", "a"), ("b", "output")], type_check=False)

    def model_map(node):
        return nt.nir_interpreter.DEFAULT_MAP[nir.Linear](node) if isinstance(node, nir.Linear) else None

    with pytest.warns(DeprecationWarning):
        m = nt.load(g, model_map)
    assert [n.name for n in m.execution_order] == ["input", "a", "b", "output"]
    x = RNG.normal(size=(3, 2)).astype(np.float32)
    state, prev_b, ys = None, np.zeros(2, np.float32), []
    for t in range(3):
        y, state = m(torch.from_numpy(x[t]), state)
        ys.append(y.detach().numpy())
        prev_b = w @ (w @ (x[t] + prev_b))
        np.testing.assert_allclose(ys[-1], prev_b, rtol=1e-5, atol=1e-6)
