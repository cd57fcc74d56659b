"""Hostile and unusual inputs, one regression test per class of failure: no data loss, no hang, no
super-linear walk, no memory before a check, no silently accepted graph that crashes later, no
valid file refused, no bare exception, bit-exact round trips, non-finite runs named.

Every hostile file is a valid file written by ``nir.write`` (or ``nb.save``) and then edited with
h5py. Timings are not asserted here (the machine is shared): ``benchmarks/load_plan.py`` measures
them. What would take time or memory is bounded by construction instead: a limit on the address
space of a subprocess, a deadline that the loader itself enforces.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

import h5py
import nir
import numpy as np
import pytest

import nirbridge as nb
from nirbridge.errors import (
    DynamicsError,
    FileFormatError,
    GraphError,
    InputError,
    NirBridgeError,
    NonFiniteError,
    ParameterError,
    ShapeError,
    UnsupportedError,
)


def _f(v, n=3, dtype=np.float32):
    return np.full(n, v, dtype)


def _lif_graph(n=3, dtype=np.float32) -> nir.NIRGraph:
    return nir.NIRGraph.from_list(nir.LIF(tau=_f(0.01, n, dtype), r=_f(1, n, dtype), v_leak=_f(0, n, dtype),
                                          v_threshold=_f(1, n, dtype), v_reset=_f(0, n, dtype)))


def _io(shape):
    return (nir.Input(input_type={"input": np.array(shape)}), nir.Output(output_type={"output": np.array(shape)}))


def _one(node, in_shape, out_shape=None) -> nir.NIRGraph:
    i, _ = _io(in_shape)
    _, o = _io(out_shape or in_shape)
    return nir.NIRGraph(nodes={"input": i, "node": node, "output": o},
                        edges=[("input", "node"), ("node", "output")], type_check=False)


def _nested(depth: int) -> nir.NIRGraph:
    g = _lif_graph(2)
    for _ in range(depth):
        i, o = _io([2])
        g = nir.NIRGraph(nodes={"input": i, "sub": g, "output": o}, edges=[("input", "sub"), ("sub", "output")],
                         type_check=False)
    return g


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- data loss: save is atomic
@pytest.mark.parametrize("bad", ["none_metadata", "object_metadata", "slash_name", "unicode_text", "str_array"])
def test_a_failed_save_leaves_the_old_file_byte_identical(bad, tmp_path):
    path = tmp_path / "model.nir"
    good = nb.Graph.from_nir(_lif_graph())
    nb.save(good, path)
    before = _sha(path)
    raw = _lif_graph()
    if bad == "none_metadata":
        raw.metadata = {"note": None}
    elif bad == "object_metadata":
        raw.nodes["lif"].metadata = {"thing": object()}
    elif bad == "slash_name":
        raw.nodes["a/b"] = raw.nodes.pop("lif")
        raw.edges = [("input", "a/b"), ("a/b", "output")]
    elif bad == "unicode_text":
        raw.metadata = {"note": "bad \udcff text"}
    else:
        raw.nodes["lif"].metadata = {"labels": np.array(["a", "b"])}  # a '<U1' array: h5py cannot store it
    g = nb.Graph.from_nir(raw)
    with pytest.raises(UnsupportedError) as e:
        nb.save(g, path)
    assert "node '" in str(e.value) and "Fix:" in str(e.value)
    assert _sha(path) == before
    assert nb.load(path).equals(good)
    assert [p.name for p in tmp_path.iterdir()] == ["model.nir"]  # no temporary file left behind


@pytest.mark.parametrize("path", [5, None, 3.5, ["a.nir"]])
def test_save_and_load_refuse_what_is_not_a_path(path):
    g = nb.Graph.from_nir(_lif_graph())
    with pytest.raises(FileFormatError, match="path"):
        nb.save(g, path)
    with pytest.raises(FileFormatError, match="path"):
        nb.load(path)


def test_save_to_a_bytes_path_round_trips(tmp_path):
    g = nb.Graph.from_nir(_lif_graph())
    p = bytes(tmp_path / "b.nir")
    nb.save(g, p)
    assert nb.load(p).equals(g)


# ---------------------------------------------------------------- hangs: each object once, links refused
def test_hard_links_making_a_dag_are_refused(tmp_path):
    path = tmp_path / "dag.nir"
    nir.write(path, _nested(12))
    with h5py.File(path, "r+") as f:  # every level's nested graph linked twice: 2^12 paths
        g = f["node"]
        while "nodes" in g and "sub" in g["nodes"]:
            g["nodes"]["twin"] = g["nodes"]["sub"]
            g = g["nodes"]["sub"]
    with pytest.raises(FileFormatError, match="second hard link") as e:
        nb.load(path)
    assert "node '" in str(e.value)


def test_a_hard_link_to_an_ancestor_is_refused(tmp_path):
    path = tmp_path / "cycle.nir"
    nir.write(path, _lif_graph())
    with h5py.File(path, "r+") as f:
        f["node/nodes/lif/metadata"] = f["node"]
    with pytest.raises(FileFormatError, match="second hard link") as e:
        nb.load(path)
    assert "node 'lif', field 'metadata'" in str(e.value)


def test_metadata_nested_500_deep_is_refused_by_name(tmp_path):
    path = tmp_path / "deep_meta.nir"
    nir.write(path, _lif_graph())
    with h5py.File(path, "r+") as f:
        g = f["node/nodes/lif"].create_group("metadata")
        for _ in range(500):
            g = g.create_group("m")
    with pytest.raises(FileFormatError, match="metadata hold at most") as e:
        nb.load(path)
    assert "node 'lif', field 'metadata'" in str(e.value)


def test_a_read_that_makes_no_progress_is_stopped(tmp_path):
    """The deadline is the loader's own: a read without progress for ``timeout`` seconds is killed
    (here a timeout far below what any read takes stands in for a read stuck in the HDF5 library)."""
    path = tmp_path / "g.nir"
    nir.write(path, _nested(3))
    with pytest.raises(FileFormatError, match="made no progress") as e:
        nb.load(path, timeout=1e-9)
    assert "node '" in str(e.value) and "timeout" in str(e.value)
    assert nb.load(path).plan.names[-1] == "output"  # and the next load works


# ---------------------------------------------------------------- linear walks: deep and wide valid graphs
@pytest.mark.parametrize("depth", [200, 1000])
def test_deeply_nested_valid_files_load(depth, tmp_path):
    path = tmp_path / "deep.nir"
    g = nb.Graph.from_nir(_nested(depth))
    nb.save(g, path)
    g2 = nb.load(path)
    assert g2.equals(g)
    assert g2.plan.names == ("input", *[".".join(["sub"] * k + ["input"]) for k in range(1, depth + 1)],
                             ".".join(["sub"] * depth + ["lif"]),
                             *[".".join(["sub"] * k + ["output"]) for k in range(depth, 0, -1)], "output")


def test_ten_thousand_self_loops_plan():
    n = 10_000
    i, o = _io([1])
    nodes, edges = {"input": i, "output": o}, []
    for k in range(n):
        nodes[f"n{k}"] = nir.LIF(tau=_f(0.01, 1), r=_f(1, 1), v_leak=_f(0, 1), v_threshold=_f(1, 1),
                                 v_reset=_f(0, 1))
        edges += [("input", f"n{k}"), (f"n{k}", f"n{k}"), (f"n{k}", "output")]
    g = nb.Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    assert g.plan.recurrent == tuple(sorted((f"n{k}", f"n{k}") for k in range(n)))


def test_nesting_deeper_than_the_limit_is_refused_by_name():
    with pytest.raises(GraphError, match="deeper than"):
        nb.Graph.from_nir(_nested(nb.limits.MAX_NESTING + 5))


# ---------------------------------------------------------------- memory: sizes checked before reading
def _load_in_limited_process(path, extra_mb: int):
    """Load ``path`` in a subprocess whose address space may grow ``extra_mb`` MB beyond what it
    uses after importing nirbridge; return (returncode, output)."""
    code = textwrap.dedent(f"""
        import resource, nirbridge as nb
        used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        lim = used + {extra_mb} * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
        try:
            nb.load({str(path)!r}, timeout=60)
            print("LOADED")
        except nb.NirBridgeError as e:
            print(type(e).__name__, e)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout + r.stderr


def test_unwritten_huge_weights_are_refused_from_their_declared_size(tmp_path):
    path = tmp_path / "unwritten.nir"
    nir.write(path, _lif_graph())
    with h5py.File(path, "r+") as f:  # 60 x 64 MiB declared, a few KB on disk
        for k in range(60):
            f.create_dataset(f"node/nodes/w{k}/weight", shape=(4096, 4096), dtype="f4", chunks=(256, 256),
                             compression="gzip")
    rc, out = _load_in_limited_process(path, 300)
    assert rc == 0 and out.startswith("FileFormatError") and "budget" in out and "field 'weight'" in out, out


def test_a_compressed_weight_of_the_wrong_shape_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "bomb.nir"
    nir.write(path, _lif_graph())
    with h5py.File(path, "r+") as f:  # 256 MiB of float32 that gzip stores in well under 1 MB
        del f["node/nodes/lif/tau"]
        ds = f.create_dataset("node/nodes/lif/tau", shape=(1 << 26,), dtype="f4", chunks=(1 << 20,),
                              compression="gzip")
        for k in range(64):
            ds[k << 20:(k + 1) << 20] = np.full(1 << 20, 0.01, np.float32)
    assert path.stat().st_size < 2 << 20
    rc, out = _load_in_limited_process(path, 150)  # less than the weight would take
    assert rc == 0 and out.startswith("ShapeError") and "node 'lif'" in out, out


def test_a_64_mib_shape_field_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "shape.nir"
    nir.write(path, _lif_graph())
    with h5py.File(path, "r+") as f:
        del f["node/nodes/input/shape"]
        f.create_dataset("node/nodes/input/shape", data=np.ones(16 << 20, np.int32))
    rc, out = _load_in_limited_process(path, 40)  # less than the 64 MiB field
    assert rc == 0 and out.startswith("FileFormatError") and "node 'input', field 'shape'" in out, out


def test_the_budget_is_a_parameter(tmp_path):
    path = tmp_path / "g.nir"
    nir.write(path, _lif_graph(1000, np.float64))
    with pytest.raises(FileFormatError, match="budget of 4096 bytes"):
        nb.load(path, max_bytes=4096)
    assert nb.load(path, max_bytes=1 << 20).plan.names == ("input", "lif", "output")


# ---------------------------------------------------------------- invalid graphs refused at load, by name
def test_a_0d_input_shape_is_refused():
    i = nir.Input(input_type={"input": np.array([], dtype=np.int64)})
    o = nir.Output(output_type={"output": np.array([], dtype=np.int64)})
    with pytest.raises(ShapeError, match="0-d") as e:
        nb.Graph.from_nir(nir.NIRGraph(nodes={"input": i, "output": o}, edges=[("input", "output")],
                                       type_check=False))
    assert "node 'input', field 'input_type'" in str(e.value)


def test_an_element_count_beyond_int64_is_refused():
    shape = np.array([2**31 - 1] * 3)  # each size fits, the product (~2^93) does not fit int64
    flat = nir.Flatten(input_type={"input": shape}, start_dim=0, end_dim=-1)
    with pytest.raises(ShapeError, match="elements") as e:
        nb.Graph.from_nir(_one(flat, shape, [1]))
    assert "node 'input'" in str(e.value)


def test_a_flatten_product_beyond_int64_is_refused():
    # np.prod of these sizes wraps around in int64 (2^62 * 4 = 2^64 -> 0)
    shape = (2**20, 2**20, 4)
    i, _ = _io(list(shape))
    with pytest.raises(ShapeError, match="elements"):
        nb.Graph.from_nir(nir.NIRGraph(
            nodes={"input": i, "f": nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1),
                   "output": nir.Output(output_type={"output": np.array([2**42])})},
            edges=[("input", "f"), ("f", "output")], type_check=False))


def test_a_conv_padding_no_backend_can_run_is_refused():
    conv = nir.Conv2d(input_shape=(1, 1), weight=np.ones((1, 1, 1, 1), np.float32), stride=1, padding=10**9,
                      dilation=1, groups=1, bias=np.zeros(1, np.float32))
    with pytest.raises(UnsupportedError) as e:
        nb.Graph.from_nir(_one(conv, [1, 1, 1]))
    assert "node 'node', field 'padding'" in str(e.value)


def test_a_float_dilation_of_1e308_is_refused():
    conv = nir.Conv1d(input_shape=4, weight=np.ones((1, 1, 3), np.float32), stride=1, padding="same",
                      dilation=np.float64(1e308), groups=1, bias=np.zeros(1, np.float32))
    with pytest.raises(UnsupportedError) as e:
        nb.Graph.from_nir(_one(conv, [1, 4]))
    assert "node 'node', field 'dilation'" in str(e.value)


@pytest.mark.parametrize("backend", ["reference", "jax", "torch"])
def test_a_delay_that_overflows_in_steps_is_named(backend):
    pytest.importorskip(backend if backend != "reference" else "numpy")
    g = nb.Graph.from_nir(_one(nir.Delay(delay=np.array([1e300])), [1]))
    with pytest.raises(DynamicsError) as e:
        nb.simulate(g, np.ones((2, 1, 1)), nb.Dynamics(dt=1e-3), backend=backend)
    assert "node 'node', field 'delay'" in str(e.value)


# ---------------------------------------------------------------- a valid file that was refused
def test_a_flat_dotted_name_beside_a_nested_graph_stays_addressable(tmp_path):
    i, o = _io([3])
    si, so = _io([3])
    sub = nir.NIRGraph(nodes={"input": si, "lif": nir.Scale(scale=_f(2.0)), "output": so},
                       edges=[("input", "lif"), ("lif", "output")], type_check=False)
    raw = nir.NIRGraph(nodes={"input": i, "sub": sub, "sub.lif": nir.Scale(scale=_f(3.0)), "output": o},
                       edges=[("input", "sub"), ("sub", "sub.lif"), ("sub.lif", "output")], type_check=False)
    path = tmp_path / "clash.nir"
    nir.write(path, raw)
    g = nb.load(path)
    assert "sub.lif" in g.plan and "[sub.lif]" in g.plan
    assert g.node("sub.lif").params["scale"][0] == 2.0 and g.node("[sub.lif]").params["scale"][0] == 3.0
    x = np.arange(6, dtype=np.float32).reshape(2, 1, 3)
    out = nb.simulate(g, x, nb.Dynamics(dt=1e-3), record=["sub.lif", "[sub.lif]"])
    np.testing.assert_array_equal(out["sub.lif"], 2 * x)  # closed form: Scale 2 then Scale 3
    np.testing.assert_array_equal(out["output"], 6 * x)
    nb.save(g, tmp_path / "again.nir")
    assert nb.load(tmp_path / "again.nir").equals(g)
    g2 = g.replace_params({"[sub.lif]": {"scale": _f(5.0)}})
    assert g2.node("[sub.lif]").params["scale"][0] == 5.0 and g2.node("sub.lif").params["scale"][0] == 2.0


# ---------------------------------------------------------------- no bare exceptions
@pytest.mark.parametrize("kw", [dict(dt=10**400), dict(dt=1e-3, method=np.array(["euler", "exact"])),
                                dict(dt=1e-3, surrogate_slope=10**400), dict(dt=1e-3, surrogate_slope=float("inf")),
                                dict(dt=1e-3, by_type={"LIF": {("a",): 1}}), dict(dt=1e-3, by_type={"LIF": {1: 2}}),
                                dict(dt=1e-3, by_type={"LIF": {"method": ["euler"]}}), dict(dt=complex(1, 1)),
                                dict(dt=1e-3, output_delay=np.array([0, 1]))])
def test_dynamics_never_raises_a_bare_error(kw):
    with pytest.raises(DynamicsError, match="Fix"):
        nb.Dynamics(**kw)


def test_dynamics_still_takes_numpy_choices():
    d = nb.Dynamics(dt=np.float32(1e-3), method=np.str_("exact"), output_delay=np.int64(1))
    assert d.method == "exact" and d.output_delay == 1


@pytest.mark.parametrize("backend", ["reference", "jax", "torch"])
@pytest.mark.parametrize("kw, cls", [
    (dict(backend=["jax"]), UnsupportedError),
    (dict(record=[(["lif"], "v")]), InputError),
    (dict(record=[["lif", "v"]]), InputError),
    (dict(record=[{"lif": "v"}]), InputError),
    (dict(record=5), InputError),
    (dict(progress="yes"), InputError),
    (dict(check_finite=None), InputError),
])
def test_simulate_arguments_give_one_error_in_every_backend(backend, kw, cls):
    pytest.importorskip(backend if backend != "reference" else "numpy")
    g = nb.Graph.from_nir(_lif_graph())
    kw = {"backend": backend, **kw}
    with pytest.raises(cls, match="Fix"):
        nb.simulate(g, np.ones((2, 1, 3)), nb.Dynamics(dt=1e-3), **kw)


@pytest.mark.parametrize("x", [[[[1.0, 2.0, 3.0]]], np.ones((2, 1, 3), bool), np.ones((2, 1, 3), np.int8),
                               np.ones((2, 1, 3), np.float16)], ids=["list", "bool", "int8", "float16"])
def test_inputs_are_the_same_numbers_in_every_backend(x):
    pytest.importorskip("jax")
    pytest.importorskip("torch")
    g = nb.Graph.from_nir(_lif_graph())
    ref = nb.simulate(g, np.asarray(x, np.float64), nb.Dynamics(dt=1e-3), record=[("lif", "v")], dtype="float64")
    for bk in ("reference", "jax", "torch"):
        out = nb.simulate(g, x, nb.Dynamics(dt=1e-3), backend=bk, record=[("lif", "v")], dtype="float64")
        np.testing.assert_allclose(out[("lif", "v")], ref[("lif", "v")], rtol=1e-12, atol=0)


@pytest.mark.parametrize("x", [np.zeros((0, 1, 3)), np.zeros((2, 0, 3)), np.ones((2, 1, 3), complex)])
def test_empty_or_complex_inputs_are_refused(x):
    with pytest.raises(InputError, match="Fix"):
        nb.simulate(nb.Graph.from_nir(_lif_graph()), x, nb.Dynamics(dt=1e-3))


def test_non_utf8_type_and_edge_strings_name_the_node(tmp_path):
    path = tmp_path / "t.nir"
    nir.write(path, _lif_graph())
    with h5py.File(path, "r+") as f:
        del f["node/nodes/lif/type"]
        f.create_dataset("node/nodes/lif/type", data=np.void(b"\xff\xfeLIF"))
    with pytest.raises(FileFormatError) as e:
        nb.load(path)
    assert "node 'lif', field 'type'" in str(e.value), str(e.value)
    nir.write(path, _lif_graph())
    with h5py.File(path, "r+") as f:
        del f["node/edges"]
        f.create_dataset("node/edges", data=np.array([[b"input", b"\xff\xfe"]], dtype=object),
                         dtype=h5py.string_dtype("ascii"))
    with pytest.raises(FileFormatError) as e:
        nb.load(path)
    assert "field 'edges'" in str(e.value) and "UTF-8" in str(e.value), str(e.value)


def test_tensors_lists_and_python_numbers_become_arrays_without_loss():
    torch = pytest.importorskip("torch")
    raw = _lif_graph()
    lif = raw.nodes["lif"]
    lif.tau = torch.full((3,), 0.01, dtype=torch.float16)
    lif.r = [1.0, 1.0, 1.0]
    lif.v_leak = torch.zeros(3, dtype=torch.float64)
    g = nb.Graph.from_nir(raw)
    p = g.node("lif").params
    assert p["tau"].dtype == np.float16 and p["tau"].tobytes() == np.full(3, 0.01, np.float16).tobytes()
    assert p["r"].dtype == np.float64 and p["v_leak"].dtype == np.float64
    raw.nodes["lif"].tau = torch.ones(3, dtype=torch.bfloat16)
    with pytest.raises(ParameterError, match="bfloat16") as e:
        nb.Graph.from_nir(raw)
    assert "node 'lif', field 'tau'" in str(e.value)


# ---------------------------------------------------------------- bit-exact round trip of w_in
@pytest.mark.parametrize("w_dtype", [np.float32, np.int8, np.float16, np.dtype(">f8")], ids=str)
@pytest.mark.parametrize("node_type", ["CubaLIF", "CubaLI"])
def test_w_in_keeps_its_dtype_through_a_file(node_type, w_dtype, tmp_path):
    kw = dict(tau_syn=_f(0.01, 3, np.float64), tau_mem=_f(0.02, 3, np.float64), r=_f(1, 3, np.float64),
              v_leak=_f(0, 3, np.float64))
    if node_type == "CubaLIF":
        kw.update(v_threshold=_f(1, 3, np.float64), v_reset=_f(0, 3, np.float64))
    node = getattr(nir, node_type)(**kw)
    w = np.array([0.5, 2, 3]).astype(w_dtype)
    node.w_in = w  # nir's constructor would broadcast it to float64
    g = nb.Graph.from_nir(_one(node, [3]))
    assert g.node("node").params["w_in"].dtype == w.dtype
    assert g.to_nir().nodes["node"].w_in.dtype == w.dtype
    nb.save(g, tmp_path / "c.nir")
    g2 = nb.load(tmp_path / "c.nir")
    assert g2.equals(g)
    back = g2.node("node").params["w_in"]
    assert back.dtype == w.dtype and back.tobytes() == w.tobytes()


# ---------------------------------------------------------------- NaN/inf: check_finite names node and step
@pytest.mark.parametrize("backend", ["reference", "jax", "torch"])
def test_check_finite_names_the_first_node_and_step(backend):
    pytest.importorskip(backend if backend != "reference" else "numpy")
    # an integrator with r = 2^120 and dt = 1, fed ones: v_t = (t + 1) 2^120, exact in float32 until
    # (t + 1) = 256 gives 2^128, which float32 cannot hold: the first inf is at step 255
    r = np.float32(2.0**120)
    g = nb.Graph.from_nir(_one(nir.I(r=np.full(2, r, np.float32)), [2]))
    x = np.ones((300, 1, 2), np.float32)
    with np.errstate(over="ignore"):  # without the check: no error (NumPy may warn)
        out = nb.simulate(g, x, nb.Dynamics(dt=1.0), backend=backend)
    assert not np.isfinite(out["output"]).all()
    with pytest.raises(NonFiniteError) as e:
        nb.simulate(g, x, nb.Dynamics(dt=1.0), backend=backend, check_finite=True)
    assert (e.value.node, e.value.step) == ("node", 255)
    assert "node 'node'" in str(e.value) and "step 255" in str(e.value)
    fine = nb.simulate(g, x[:200], nb.Dynamics(dt=1.0), backend=backend, check_finite=True)
    np.testing.assert_array_equal(fine["output"][:, 0, 0], np.arange(1, 201, dtype=np.float32) * r)


def test_every_error_above_is_a_nirbridge_error():
    for cls in (DynamicsError, FileFormatError, GraphError, InputError, NonFiniteError, ParameterError, ShapeError,
                UnsupportedError):
        assert issubclass(cls, NirBridgeError)


def test_a_padding_of_non_text_bytes_is_named():
    """Found by the long fuzz campaign: a Conv's padding given as bytes that are not UTF-8."""
    conv = nir.Conv2d(input_shape=(4, 4), weight=np.ones((1, 1, 3, 3), np.float32), stride=1, padding=1,
                      dilation=1, groups=1, bias=np.zeros(1, np.float32))
    conv.padding = b"\xff"
    with pytest.raises(ParameterError) as e:
        nb.Graph.from_nir(_one(conv, [1, 4, 4]))
    assert "node 'node', field 'padding'" in str(e.value)


@pytest.mark.parametrize("field", ["input_shape", "stride", "padding"])
def test_a_ragged_shape_field_is_named(field):
    """Found by the long fuzz campaign: a Conv1d whose shape-like field is a ragged list (NumPy
    cannot make an array of it) gave a bare ValueError."""
    conv = nir.Conv1d(input_shape=4, weight=np.ones((1, 1, 3), np.float32), stride=1, padding=1,
                      dilation=1, groups=1, bias=np.zeros(1, np.float32))
    setattr(conv, field, [[1.0], [2.0, 3.0]])
    with pytest.raises(ParameterError) as e:
        nb.Graph.from_nir(_one(conv, [1, 4]))
    assert f"node 'node', field '{field}'" in str(e.value)


def test_save_to_a_folder_or_a_missing_folder_is_named(tmp_path):
    g = nb.Graph.from_nir(_lif_graph())
    with pytest.raises(FileFormatError, match="is a folder"):
        nb.save(g, tmp_path)
    with pytest.raises(FileFormatError, match="does not exist"):
        nb.save(g, tmp_path / "missing" / "g.nir")
