"""The Graph foundation: the NIR paper graphs load with the right plan and shapes; graphs that
break other tools (two outputs, deep nesting, odd names, float16/float64) load and plan.

Shapes are checked against numbers computed here by hand from the PyTorch conv/pool formulas, not
against nirbridge's own shape rules."""

from __future__ import annotations

import re

import nir
import numpy as np
import pytest

import nirbridge as nb
from nirbridge import examples

PAPER = ("lif_norse", "two_lif_neurons", "cnn_sinabs", "braille_noDelay_bias_zero")


def _assert_topological(g: nb.Graph, flat_edges):
    """Every forward edge goes from an earlier step to a later one; every recurrent edge goes back
    (or is a self-loop); the plan's sources are exactly the edges into each node."""
    pos = {n: i for i, n in enumerate(g.plan.names)}
    rec = set(g.plan.recurrent)
    assert set(rec) <= set(flat_edges)
    for a, b in flat_edges:
        if (a, b) in rec:
            assert pos[a] >= pos[b], (a, b)
        else:
            assert pos[a] < pos[b], (a, b)
    for step in g.plan.steps:
        want = sorted((a, (a, b) in rec) for a, b in flat_edges if b == step.name)
        assert sorted(step.sources) == want, step.name


def _flat_edges_of_file(name):
    """A paper graph's edges as nir.read gives them (none of them has a nested graph)."""
    g = nir.read(examples.path(name), type_check=False)
    assert not any(isinstance(n, nir.NIRGraph) for n in g.nodes.values())
    return [tuple(e) for e in g.edges], list(g.nodes)


@pytest.mark.parametrize("name", PAPER)
def test_paper_graph_loads_with_valid_plan(name):
    g = nb.load(examples.path(name))  # (load time: benchmarks/load_plan.py)
    edges, node_names = _flat_edges_of_file(name)
    assert sorted(g.plan.names) == sorted(node_names)
    assert list(g.edges) == edges
    _assert_topological(g, edges)
    assert len(g.inputs) == 1 and len(g.outputs) == 1
    assert g.plan.steps[0].role == "input" and g.plan.steps[0].name == g.inputs[0]
    roles = {s.name: s.role for s in g.plan.steps}
    assert roles[g.outputs[0]] == "output"
    assert all(r == "compute" for n, r in roles.items() if n not in (g.inputs[0], g.outputs[0]))


def test_paper_graph_io_shapes():
    shapes = {  # (input, output) shapes read off each model's definition in the NIR paper
        "lif_norse": ((1,), (1,)),
        "two_lif_neurons": ((1,), (1,)),
        "cnn_sinabs": ((2, 34, 34), (10,)),
        "braille_noDelay_bias_zero": ((12,), (7,)),
    }
    for name, (i, o) in shapes.items():
        g = nb.load(examples.path(name))
        assert g.input_shape(g.inputs[0]) == i and g.output_shape(g.inputs[0]) == i
        assert g.input_shape(g.outputs[0]) == o and g.output_shape(g.outputs[0]) == o


def _conv_out(n, k, s, p, d=1):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


# cnn_sinabs, layer by layer: (node, type, geometry). The geometry is what the file must hold;
# shapes below are computed from it here, by the PyTorch formulas, independently of nirbridge.
CNN_LAYERS = [
    ("0", "Conv2d", dict(c_out=16, k=5, s=2, p=1)),
    ("1", "IF", None),
    ("2", "Conv2d", dict(c_out=16, k=3, s=1, p=1)),
    ("3", "IF", None),
    ("4", "SumPool2d", dict(k=2, s=2, p=0)),
    ("5", "Conv2d", dict(c_out=8, k=3, s=1, p=1)),
    ("6", "IF", None),
    ("7", "SumPool2d", dict(k=2, s=2, p=0)),
    ("8", "Flatten", None),
    ("9", "Affine", dict(out=256)),
    ("10", "IF", None),
    ("11", "Affine", dict(out=10)),
    ("12", "IF", None),
]
# the same shapes written out by hand, as a check on the formula walk below
CNN_SHAPES_BY_HAND = {
    "0": (16, 16, 16), "1": (16, 16, 16), "2": (16, 16, 16), "3": (16, 16, 16), "4": (16, 8, 8),
    "5": (8, 8, 8), "6": (8, 8, 8), "7": (8, 4, 4), "8": (128,), "9": (256,), "10": (256,),
    "11": (10,), "12": (10,),
}


def test_cnn_sinabs_every_intermediate_shape():
    g = nb.load(examples.path("cnn_sinabs"))
    raw = nir.read(examples.path("cnn_sinabs"), type_check=False)
    shape = (2, 34, 34)
    walked = {}
    for name, typ, geo in CNN_LAYERS:
        node = raw.nodes[name]
        assert type(node).__name__ == typ == g.node(name).type
        in_shape = shape
        if typ == "Conv2d":
            assert node.weight.shape == (geo["c_out"], in_shape[0], geo["k"], geo["k"])
            assert list(node.stride) == [geo["s"]] * 2 and list(node.padding) == [geo["p"]] * 2
            assert list(node.dilation) == [1, 1] and int(node.groups) == 1
            shape = (geo["c_out"], *(_conv_out(n, geo["k"], geo["s"], geo["p"]) for n in in_shape[1:]))
        elif typ == "SumPool2d":
            assert list(node.kernel_size) == [geo["k"]] * 2 and list(node.stride) == [geo["s"]] * 2
            assert list(node.padding) == [geo["p"]] * 2
            shape = (in_shape[0], *(_conv_out(n, geo["k"], geo["s"], geo["p"]) for n in in_shape[1:]))
        elif typ == "Flatten":
            assert int(node.start_dim) == 0 and int(node.end_dim) == -1  # no batch dim in this file
            shape = (int(np.prod(in_shape)),)
        elif typ == "Affine":
            assert node.weight.shape == (geo["out"], in_shape[0]) and node.bias.shape == (geo["out"],)
            shape = (geo["out"],)
        else:  # IF: elementwise, one parameter per neuron
            assert node.r.shape == in_shape
        assert g.input_shape(name) == in_shape, name
        assert g.output_shape(name) == shape, name
        walked[name] = shape
    assert walked == CNN_SHAPES_BY_HAND
    assert g.input_shape("output") == (10,)


def test_plan_order_is_topological_not_alphabetical():
    g = nb.load(examples.path("cnn_sinabs"))
    file_order = list(nir.read(examples.path("cnn_sinabs"), type_check=False).nodes)
    assert file_order == sorted(file_order)  # the file stores nodes by name: '0', '1', '10', ...
    assert g.plan.names == ("input", *map(str, range(13)), "output")
    assert list(g.plan.names) != file_order
    pos = {n: i for i, n in enumerate(g.plan.names)}
    assert pos["10"] > pos["9"] and pos["2"] > pos["1"]


def test_braille_has_one_recurrent_edge_into_the_cubalif():
    g = nb.load(examples.path("braille_noDelay_bias_zero"))
    assert g.plan.recurrent == (("lif1.w_rec", "lif1.lif"),)
    step = g.plan["lif1.lif"]
    assert step.node.type == "CubaLIF"
    assert sorted(step.sources) == [("fc1", False), ("lif1.w_rec", True)]
    assert g.plan["lif1.w_rec"].sources == (("lif1.lif", False),)
    assert g.node("lif1.w_rec").type == "Affine"
    # every other edge is forward
    for s in g.plan.steps:
        if s.name != "lif1.lif":
            assert all(not rec for _, rec in s.sources)
    assert g.input_shape("lif1.lif") == (38,) and g.output_shape("lif1.w_rec") == (38,)


def _param_count(node):
    spec = nb.NODE_SPECS[type(node).__name__]
    return sum(int(np.size(getattr(node, f))) for f in spec.float_params)


@pytest.mark.parametrize("name", ["braille_noDelay_bias_zero", "cnn_sinabs"])
def test_summary_shows_nodes_types_shapes_params_and_recurrence(name):
    g = nb.load(examples.path(name))
    raw = nir.read(examples.path(name), type_check=False)
    text = str(g)
    assert text == g.summary()
    lines = text.splitlines()
    rows = {ln.split()[0]: ln.split() for ln in lines[2:-1]}
    assert set(rows) == set(raw.nodes)
    fmt = lambda s: "x".join(map(str, s))  # noqa: E731
    total = 0
    for n, node in raw.nodes.items():
        row = rows[n]
        assert row[1] == type(node).__name__
        assert row[2] == fmt(g.input_shape(n)) and row[3] == fmt(g.output_shape(n))
        count = _param_count(node) if not isinstance(node, (nir.Input, nir.Output)) else 0
        assert row[4] == str(count), n
        total += count
    last = lines[-1]
    assert f"{len(raw.nodes)} nodes, {total} parameters" in last
    if name == "braille_noDelay_bias_zero":
        assert total == 12 * 38 + 38 + 7 * 38 + 38 * 38 + 38 * 7 + 38 + 7 * 7 + 7  # weights+biases, 7 per neuron
        assert "recurrent edges: lif1.w_rec -> lif1.lif" in last
        assert re.search(r"^lif1\.lif\s+CubaLIF\s+38\s+38\s+266\s+i,v\s+.*lif1\.w_rec \(recurrent\)", text, re.M)
    else:
        assert "recurrent edges: none" in last
        assert re.search(r"^0\s+Conv2d\s+2x34x34\s+16x16x16\s+816\s", text, re.M)  # 16*2*5*5 + 16


# ---------------------------------------------------------------- valid graphs that trip up other tools
def _v(x, dtype=np.float32):
    return np.asarray(x, dtype=dtype)


def _lif(n, dtype=np.float32):
    return nir.LIF(tau=_v(np.full(n, 0.01), dtype), r=_v(np.ones(n), dtype), v_leak=_v(np.zeros(n), dtype),
                   v_threshold=_v(np.ones(n), dtype), v_reset=_v(np.zeros(n), dtype))


def _affine(n_out, n_in, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return nir.Affine(weight=_v(rng.normal(size=(n_out, n_in)), dtype), bias=_v(rng.normal(size=n_out), dtype))


def _io(n):
    return nir.Input(input_type={"input": np.array([n])}), nir.Output(output_type={"output": np.array([n])})


def _load_both_ways(nir_graph, tmp_path):
    """The Graph from memory and from a file written by nir.write."""
    g = nb.Graph.from_nir(nir_graph)
    g.plan  # noqa: B018
    p = tmp_path / "g.nir"
    nir.write(p, nir_graph)
    g2 = nb.load(p)
    g2.plan  # noqa: B018
    assert g.equals(g2)
    return g, g2


def test_two_outputs_load_and_plan(tmp_path):
    inp, out = _io(3)
    nodes = {"input": inp, "fc": _affine(4, 3), "lif": _lif(4), "fc2": _affine(2, 4, seed=1),
             "spikes": nir.Output(output_type={"output": np.array([4])}), "out": nir.Output(output_type={
                 "output": np.array([2])})}
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "spikes"), ("lif", "fc2"), ("fc2", "out")]
    for g in _load_both_ways(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), tmp_path):
        assert sorted(g.outputs) == ["out", "spikes"] and g.plan.outputs == tuple(g.outputs)
        assert g.input_shape("spikes") == (4,) and g.input_shape("out") == (2,)
        _assert_topological(g, edges)


def test_two_inputs_two_outputs_with_fan_in(tmp_path):
    nodes = {"x1": nir.Input(input_type={"input": np.array([3])}),
             "x2": nir.Input(input_type={"input": np.array([5])}),
             "a1": _affine(4, 3), "a2": _affine(4, 5, seed=2), "lif": _lif(4),
             "y1": nir.Output(output_type={"output": np.array([4])}),
             "y2": nir.Output(output_type={"output": np.array([4])})}
    edges = [("x1", "a1"), ("x2", "a2"), ("a1", "lif"), ("a2", "lif"), ("lif", "y1"), ("a2", "y2")]
    for g in _load_both_ways(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), tmp_path):
        assert sorted(g.inputs) == ["x1", "x2"] and sorted(g.outputs) == ["y1", "y2"]
        assert sorted(g.plan["lif"].sources) == [("a1", False), ("a2", False)]  # fan-in: both summed
        assert g.output_shape("x2") == (5,) and g.input_shape("lif") == (4,)
        _assert_topological(g, edges)


def _three_level_graph():
    inp, out = _io(3)
    inner = nir.NIRGraph(nodes={"input": _io(3)[0], "lif": _lif(3), "output": _io(3)[1]},
                         edges=[("input", "lif"), ("lif", "output")], type_check=False)
    mid = nir.NIRGraph(nodes={"input": _io(3)[0], "inner": inner, "scale": nir.Scale(scale=_v([1, 2, 3])),
                              "output": _io(3)[1]},
                       edges=[("input", "inner"), ("inner.output", "scale"), ("scale", "output")], type_check=False)
    outer = nir.NIRGraph(nodes={"input": _io(3)[0], "mid": mid, "output": _io(3)[1]},
                         edges=[("input", "mid.input"), ("mid", "output")], type_check=False)
    top = nir.NIRGraph(nodes={"input": inp, "affine": _affine(3, 3), "outer": outer, "output": out,
                              "spikes": nir.Output(output_type={"output": np.array([3])})},
                       edges=[("input", "affine"), ("affine", "outer"), ("outer.output", "output"),
                              ("outer.mid.inner.lif", "spikes")], type_check=False)
    return top


def test_three_levels_of_nesting_with_dotted_and_bare_edges(tmp_path):
    flat_edges = [("input", "affine"), ("affine", "outer.input"), ("outer.input", "outer.mid.input"),
                  ("outer.mid.input", "outer.mid.inner.input"), ("outer.mid.inner.input", "outer.mid.inner.lif"),
                  ("outer.mid.inner.lif", "outer.mid.inner.output"), ("outer.mid.inner.output", "outer.mid.scale"),
                  ("outer.mid.scale", "outer.mid.output"), ("outer.mid.output", "outer.output"),
                  ("outer.output", "output"), ("outer.mid.inner.lif", "spikes")]
    for g in _load_both_ways(_three_level_graph(), tmp_path):
        assert g.nodes["outer"].type == "NIRGraph"
        assert g.nodes["outer"].subgraph.nodes["mid"].subgraph.nodes["inner"].type == "NIRGraph"
        assert sorted(g.plan.names) == sorted({n for e in flat_edges for n in e})
        _assert_topological(g, flat_edges)
        roles = {s.name: s.role for s in g.plan.steps}
        assert roles["outer.mid.inner.input"] == roles["outer.output"] == "identity"
        assert roles["input"] == "input" and roles["spikes"] == roles["output"] == "output"
        assert roles["outer.mid.inner.lif"] == "compute"
        assert g.node("outer.mid.scale").type == "Scale"
        assert g.output_shape("outer.mid.inner.lif") == (3,)


def test_dotted_and_keyword_node_names(tmp_path):
    nodes = {"in": _io(2)[0], "class": _affine(3, 2), "lambda": _lif(3), "a.b": nir.Scale(scale=_v([1, -1, 2])),
             "x.y.z": nir.Threshold(threshold=_v([0, 0, 0])), "return": _io(3)[1]}
    edges = [("in", "class"), ("class", "lambda"), ("lambda", "a.b"), ("a.b", "x.y.z"), ("x.y.z", "return"),
             ("a.b", "lambda")]
    for g in _load_both_ways(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), tmp_path):
        assert g.plan.names == ("in", "class", "lambda", "a.b", "x.y.z", "return")
        assert g.plan.recurrent == (("a.b", "lambda"),)
        assert g.node("a.b").type == "Scale" and g.node("class").type == "Affine"


def test_float16_and_float64_parameters_keep_their_dtype(tmp_path):
    inp, out = _io(4)
    nodes = {"input": inp, "fc": _affine(4, 4, np.float64), "lif": _lif(4, np.float16),
             "li": nir.LI(tau=_v([0.01] * 4, np.float16), r=_v([1] * 4, np.float64), v_leak=_v([0] * 4, np.float32)),
             "output": out}
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "li"), ("li", "output")]
    for g in _load_both_ways(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), tmp_path):
        assert g.node("fc").params["weight"].dtype == np.float64
        assert all(g.node("lif").params[f].dtype == np.float16 for f in ("tau", "r", "v_leak", "v_threshold"))
        assert [g.node("li").params[f].dtype for f in ("tau", "r", "v_leak")] == [np.float16, np.float64,
                                                                                    np.float32]
        assert g.node("lif").params["tau"].tobytes() == nodes["lif"].tau.tobytes()


def test_a_loop_through_a_neuron_is_recurrent_and_a_self_loop_too():
    inp, out = _io(3)
    nodes = {"input": inp, "fc": _affine(3, 3), "lif": _lif(3), "rec": _affine(3, 3, seed=3), "output": out}
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "fc"), ("lif", "lif"), ("lif", "output")]
    g = nb.Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    assert g.plan.names == ("input", "fc", "lif", "output", "rec")
    assert g.plan.recurrent == (("lif", "lif"), ("rec", "fc"))
    _assert_topological(g, edges)


def test_graph_is_immutable_and_does_not_share_arrays():
    raw = nir.read(examples.path("lif_norse"), type_check=False)
    g = nb.Graph.from_nir(raw)
    w = g.node("0").params["weight"]
    with pytest.raises(ValueError):
        w[0, 0] = 5.0  # read-only
    before = w.copy()
    raw.nodes["0"].weight[0, 0] += 1.0  # the caller's graph changes: the Graph does not
    assert g.node("0").params["weight"].tobytes() == before.tobytes()
    out = g.to_nir()
    out.nodes["0"].weight[0, 0] = 42.0  # to_nir hands out writeable copies
    assert g.node("0").params["weight"].tobytes() == before.tobytes()


def test_replace_params_gives_a_new_validated_graph():
    g = nb.load(examples.path("braille_noDelay_bias_zero"))
    w = np.zeros((38, 38), np.float32)
    g2 = g.replace_params({"lif1.w_rec": {"weight": w}})
    assert g2.node("lif1.w_rec").params["weight"].tobytes() == w.tobytes()
    assert not g.equals(g2) and g.node("lif1.w_rec").params["weight"].any()
    with pytest.raises(nb.errors.ShapeError, match=r"lif1\.w_rec.*weight"):
        g.replace_params({"lif1.w_rec": {"weight": np.zeros((38, 37), np.float32)}})
    with pytest.raises(nb.errors.ParameterError, match=r"lif2.*tau_mem"):
        g.replace_params({"lif2": {"tau_mem": np.full(7, -1.0)}})
    with pytest.raises(nb.errors.GraphError, match="nope"):
        g.replace_params({"nope": {"weight": w}})


def test_a_long_graph_plans():
    # 2000 dotted names in a chain with a recurrent edge every 100 nodes (timings: benchmarks/load_plan.py)
    n = 2000
    nodes = {"input": nir.Input(input_type={"input": np.array([2])})}
    edges, prev = [], "input"
    for i in range(n):
        name = f"layer.{i}"
        nodes[name] = _lif(2) if i % 100 == 0 else nir.Scale(scale=_v([1, 2]))
        edges.append((prev, name))
        if i % 100 == 99:
            edges.append((name, f"layer.{i - 99}"))  # back into the LIF that opens this block
        prev = name
    nodes["output"] = _io(2)[1]
    edges.append((prev, "output"))
    g = nb.Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    assert g.plan.names == ("input", *(f"layer.{i}" for i in range(n)), "output")
    assert g.plan.recurrent == tuple(sorted((f"layer.{i}", f"layer.{i - 99}") for i in range(99, n, 100)))


def test_load_takes_a_nir_graph_in_memory_and_repairs_it_like_a_file(tmp_path):
    """nb.load(nir.NIRGraph) is Graph.from_nir; with strict=False the exporter repairs apply to it
    as to the file (a batch dimension leaked into the Input), and the caller's graph is unchanged."""
    raw = nir.read(examples.path("lif_norse"), type_check=False)
    assert nb.load(raw).equals(nb.load(examples.path("lif_norse")))
    g = nb.load(raw)
    assert nb.load(g) is g
    n_in = int(np.asarray(raw.nodes["input"].input_type["input"])[-1])
    raw.nodes["input"] = nir.Input(input_type={"input": np.array([1, n_in])})  # as Norse writes a batched sample
    with pytest.raises(nb.errors.ShapeError, match="strict=False"):
        nb.load(raw)
    with pytest.warns(nb.repair.RepairWarning, match=rf"the graph: repaired .*\[1, {n_in}\] -> \[{n_in}\]"):
        fixed = nb.load(raw, strict=False)
    assert fixed.equals(g)
    assert list(raw.nodes["input"].input_type["input"]) == [1, n_in]
