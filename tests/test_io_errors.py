"""Malformed NIR input: every case gives a nirbridge error that names the node and the field, fast.

Each bad file is a good file written by ``nir.write`` and then edited with h5py. Every case checks
the error class, that it is also the fitting builtin (ValueError / NotImplementedError), that the
message names the node and the field (or, where the file is not HDF5 at all, the file). How fast
the errors come is measured by benchmarks/load_plan.py, not asserted here."""

from __future__ import annotations

import os

import h5py
import nir
import numpy as np
import pytest

import nirbridge as nb
from nirbridge import examples
from nirbridge.errors import (
    FileFormatError,
    GraphError,
    NirBridgeError,
    ParameterError,
    ShapeError,
    UnknownNodeError,
)

NODES = "node/nodes"


# ---------------------------------------------------------------- good files to break
def _nested_graph() -> nir.NIRGraph:
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    sub = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([3])}),
               "lif": nir.LIF(tau=f32([0.01] * 3), r=f32([1] * 3), v_leak=f32([0] * 3), v_threshold=f32([1] * 3),
                              v_reset=f32([0] * 3)),
               "output": nir.Output(output_type={"output": np.array([3])})},
        edges=[("input", "lif"), ("lif", "output")], type_check=False)
    return nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([3])}), "delay": nir.Delay(delay=f32([0, 1e-3, 2e-3])),
               "sub": sub, "output": nir.Output(output_type={"output": np.array([3])})},
        edges=[("input", "delay"), ("delay", "sub"), ("sub", "output")], type_check=False)


def _base(kind: str, path) -> None:
    if kind == "nested":
        nir.write(path, _nested_graph())
    else:
        name = {"braille": "braille_noDelay_bias_zero", "cnn": "cnn_sinabs"}[kind]
        nir.write(path, nir.read(examples.path(name), type_check=False))


# ---------------------------------------------------------------- edits (f is an open h5py.File)
def _set(path, value, **kw):
    def edit(f):
        del f[path]
        f.create_dataset(path, data=value, **kw)
    return edit


def _scale(path, index, value):
    def edit(f):
        a = f[path][()]
        a[index] = value
        del f[path]
        f.create_dataset(path, data=a)
    return edit


def _edges(add=(), drop=(), group="node"):
    def edit(f):
        e = [tuple(x.decode() for x in row) for row in f[f"{group}/edges"][()]]
        e = [x for x in e if x not in drop] + list(add)
        del f[f"{group}/edges"]
        f.create_dataset(f"{group}/edges", data=np.array(e, dtype=object), dtype=h5py.string_dtype())
    return edit


def _chain(*edits):
    def edit(f):
        for e in edits:
            e(f)
    return edit


def _delete(*paths):
    def edit(f):
        for p in paths:
            del f[p]
    return edit


def _empty_graph(f):
    for k in list(f[NODES]):
        del f[f"{NODES}/{k}"]
    del f["node/edges"]
    f.create_dataset("node/edges", data=np.zeros((0,)))


def _external_link(f):
    other = os.path.join(os.path.dirname(f.filename), "other.h5")
    with h5py.File(other, "w") as g:
        g.create_dataset("bias", data=np.zeros(38, np.float32))  # a perfectly good bias, elsewhere
    del f[f"{NODES}/fc1/bias"]
    f[f"{NODES}/fc1/bias"] = h5py.ExternalLink("other.h5", "/bias")


def _external_root(f):
    other = os.path.join(os.path.dirname(f.filename), "other.h5")
    with h5py.File(other, "w") as g:
        f.copy(f["node"], g, "node")
    del f["node"]
    f["node"] = h5py.ExternalLink("other.h5", "/node")


def _external_storage(f):
    raw = os.path.join(os.path.dirname(f.filename), "raw.bin")
    np.zeros((38, 12), np.float32).tofile(raw)
    del f[f"{NODES}/fc1/weight"]
    f.create_dataset(f"{NODES}/fc1/weight", shape=(38, 12), dtype=np.float32, external=[(raw, 0, 38 * 12 * 4)])


def _soft_link(f):
    del f[f"{NODES}/fc2/weight"]
    f[f"{NODES}/fc2/weight"] = h5py.SoftLink(f"/{NODES}/fc1/weight")


def _corrupt_chunk(f):
    ds = f[f"{NODES}/fc1/weight"]
    info = ds.id.get_chunk_info(0)  # nir.write compresses with gzip: one chunk
    f.flush()
    with open(f.filename, "r+b") as raw:
        raw.seek(info.byte_offset)
        raw.write(b"\xff" * info.size)


def _huge_unwritten(f):
    del f[f"{NODES}/fc1/weight"]  # 40 GB declared, nothing written: the file stays small
    f.create_dataset(f"{NODES}/fc1/weight", shape=(100_000, 100_000), dtype=np.float32, chunks=(1000, 1000),
                     compression="gzip")


def _soft_link_in_metadata(f):
    f.create_group(f"{NODES}/lif2/metadata")
    f[f"{NODES}/lif2/metadata/note"] = h5py.SoftLink(f"/{NODES}/fc1/weight")


def _orphan(f):
    f.copy(f[f"{NODES}/lif2"], f[NODES], "orphan")
    _edges(add=[("orphan", "output")])(f)


def _root_is_a_node(f):
    f.copy(f[f"{NODES}/lif2"], f, "lif_alone")
    del f["node"]
    f.move("lif_alone", "node")


def _rename_node_group(f):
    del f["node"]


def _nested_two_inputs(f):
    f.copy(f[f"{NODES}/sub/nodes/input"], f[f"{NODES}/sub/nodes"], "input2")
    _edges(add=[("input2", "lif")], group=f"{NODES}/sub")(f)


# (id, base, edit, error class, strings the message must contain: node and field)
CASES = [
    ("missing_parameter", "braille", _delete(f"{NODES}/fc1/bias"), FileFormatError, ["'fc1'", "'bias'", "missing"]),
    ("missing_input_shape", "braille", _delete(f"{NODES}/input/shape"), FileFormatError,
     ["'input'", "'input_type'", "missing"]),
    ("missing_type", "braille", _delete(f"{NODES}/fc2/type"), FileFormatError, ["'fc2'", "'type'"]),
    ("bias_shape", "braille", _set(f"{NODES}/fc1/bias", np.zeros(37, np.float32)), ShapeError,
     ["'fc1'", "'bias'", "(37,)"]),
    ("weight_not_2d", "braille", _set(f"{NODES}/fc1/weight", np.zeros(12, np.float32)), ShapeError,
     ["'fc1'", "'weight'"]),
    ("neuron_shapes_differ", "braille", _set(f"{NODES}/lif2/v_leak", np.zeros(6)), ShapeError,
     ["'lif2'", "'v_leak'", "(6,)"]),
    ("unknown_type", "braille", _set(f"{NODES}/fc2/type", "Spiky", dtype=h5py.string_dtype()), FileFormatError,
     ["'fc2'", "'type'", "'Spiky'"]),
    ("unexpected_field", "braille", lambda f: f.create_dataset(f"{NODES}/fc1/gain", data=np.ones(3)),
     FileFormatError, ["'fc1'", "'gain'"]),
    ("edge_to_missing_node", "braille", _edges(add=[("fc2", "ghost")]), GraphError, ["'ghost'", "'edges'"]),
    ("edge_out_of_output", "braille", _edges(add=[("output", "fc1")]), GraphError,
     ["'output'", "'edges'", "leaves an Output"]),
    ("edge_into_input", "braille", _edges(add=[("fc1", "input")]), GraphError,
     ["'input'", "'edges'", "enters an Input"]),
    ("duplicate_edge", "braille", _edges(add=[("fc1", "lif1.lif")]), GraphError,
     ["'lif1.lif'", "'edges'", "twice"]),
    # a stateless self-loop beside the neuron loop: the neuron must not hide it
    ("stateless_self_loop", "braille", _edges(add=[("lif1.w_rec", "lif1.w_rec")]), GraphError,
     ["'lif1.w_rec'", "'edges'", "cycle"]),
    ("stateless_two_cycle", "cnn", _edges(add=[("9", "8")]), GraphError, ["'8'", "'9'", "'edges'", "cycle"]),
    ("empty_graph", "braille", _empty_graph, GraphError, ["<root graph>", "'nodes'", "no nodes"]),
    ("nan_weight", "braille", _scale(f"{NODES}/fc1/weight", (2, 3), np.nan), ParameterError,
     ["'fc1'", "'weight'", "nan", "(2, 3)"]),
    ("inf_threshold", "braille", _scale(f"{NODES}/lif2/v_threshold", 3, np.inf), ParameterError,
     ["'lif2'", "'v_threshold'", "inf", "(3,)"]),
    ("negative_tau", "braille", _scale(f"{NODES}/lif2/tau_mem", 0, -1e-3), ParameterError,
     ["'lif2'", "'tau_mem'", "<= 0"]),
    ("negative_delay", "nested", _scale(f"{NODES}/delay/delay", 1, -1e-3), ParameterError,
     ["'delay'", "negative"]),
    ("external_link", "braille", _external_link, FileFormatError, ["'fc1'", "'bias'", "external link", "other.h5"]),
    ("external_link_at_root", "braille", _external_root, FileFormatError, ["<root graph>", "/node", "external"]),
    ("external_storage", "braille", _external_storage, FileFormatError, ["'fc1'", "'weight'", "outside the file"]),
    ("soft_link", "braille", _soft_link, FileFormatError, ["'fc2'", "'weight'", "soft link"]),
    ("huge_unwritten_dataset", "braille", _huge_unwritten, FileFormatError, ["'fc1'", "'weight'", "declares"]),
    ("soft_link_in_metadata", "braille", _soft_link_in_metadata, FileFormatError,
     ["'lif2'", "'metadata'", "soft link"]),
    ("root_without_type", "braille", _delete("node/type"), FileFormatError, ["<root graph>", "'type'"]),
    ("corrupt_chunk", "braille", _corrupt_chunk, FileFormatError, ["'fc1'", "'weight'", "corrupt"]),
    ("fan_in_shape_mismatch", "braille", _edges(add=[("input", "lif1.lif")]), ShapeError,
     ["'lif1.lif'", "'input'", "different shapes"]),
    ("unreachable_node", "braille", _orphan, GraphError, ["'orphan'", "'edges'", "no path from any Input"]),
    ("no_output", "braille", _chain(_delete(f"{NODES}/output"), _edges(drop=[("lif2", "output")])), GraphError,
     ["'nodes'", "no Output node", "lif2"]),
    ("no_input", "braille", _chain(_delete(f"{NODES}/input"), _edges(drop=[("input", "fc1")])), GraphError,
     ["'nodes'", "no Input node", "fc1"]),
    ("output_shape_mismatch", "braille", _set(f"{NODES}/output/shape", np.array([8])), ShapeError,
     ["'output'", "'output_type'", "7"]),
    ("non_positive_input_shape", "braille", _set(f"{NODES}/input/shape", np.array([0])), ShapeError,
     ["'input'", "'input_type'"]),
    ("conv_channel_mismatch", "cnn", _set(f"{NODES}/2/weight", np.zeros((16, 8, 3, 3), np.float32)), ShapeError,
     ["'2'", "'weight'", "8x16x16", "16x16x16"]),
    ("flatten_input_type_mismatch", "cnn", _set(f"{NODES}/8/input_type", np.array([8, 2, 8])), ShapeError,
     ["'8'", "'input_type'", "8x2x8", "8x4x4"]),
    ("conv_input_shape_mismatch", "cnn", _set(f"{NODES}/5/input_shape", np.array([9, 9])), ShapeError,
     ["'5'", "'input_shape'", "16x9x9", "16x8x8"]),
    ("flatten_dims_out_of_range", "cnn", _set(f"{NODES}/8/start_dim", np.int64(5)), ShapeError,
     ["'8'", "'start_dim'"]),
    ("non_numeric_weight", "braille", _set(f"{NODES}/fc1/weight", "abc", dtype=h5py.string_dtype()),
     ParameterError, ["'fc1'", "'weight'", "str"]),
    ("non_numeric_stride", "cnn", _set(f"{NODES}/0/stride", "two", dtype=h5py.string_dtype()), ParameterError,
     ["'0'", "'stride'", "whole numbers"]),
    ("fractional_kernel", "cnn", _set(f"{NODES}/4/kernel_size", np.array([2.5, 2.5])), ParameterError,
     ["'4'", "'kernel_size'", "whole numbers"]),
    ("bad_groups", "cnn", _set(f"{NODES}/5/groups", np.int64(3)), ParameterError, ["'5'", "'groups'"]),
    ("edges_wrong_shape", "braille", _set("node/edges", np.array([["a", "b", "c"]], dtype=object),
                                          dtype=h5py.string_dtype()), FileFormatError, ["<root graph>", "'edges'"]),
    ("nested_nan", "nested", _scale(f"{NODES}/sub/nodes/lif/tau", 0, np.nan), ParameterError,
     ["'sub.lif'", "'tau'"]),
    ("nested_edge_to_missing", "nested", _edges(add=[("lif", "ghost")], group=f"{NODES}/sub"), GraphError,
     ["'sub.ghost'", "'edges'"]),
    ("nested_ambiguous_input", "nested", _nested_two_inputs, GraphError, ["'sub'", "'edges'", "2 Input nodes"]),
    ("root_is_not_a_graph", "braille", _root_is_a_node, FileFormatError, ["<root graph>", "'type'", "not a graph"]),
    ("no_node_group", "braille", _rename_node_group, FileFormatError, ["no 'node' group"]),
]

# errors that are ValueError vs NotImplementedError
_VALUE = (FileFormatError, GraphError, ShapeError, ParameterError)


def _load_error(path):
    try:
        nb.load(path)
    except NirBridgeError as e:
        return e
    raise AssertionError("no error")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_file_gives_a_named_error(case, tmp_path):
    _, base, edit, cls, must = case
    path = tmp_path / "bad.nir"
    _base(base, path)
    nb.load(path)  # the good file loads
    with h5py.File(path, "r+") as f:
        edit(f)
    err = _load_error(path)
    assert type(err) is cls, f"{type(err).__name__}: {err}"
    assert isinstance(err, ValueError) == (cls in _VALUE)
    msg = str(err)
    for s in must:
        assert s.lower() in msg.lower(), f"{s!r} not in: {msg}"
    assert "Fix:" in msg


def test_at_least_twenty_distinct_malformed_files():
    assert len({c[0] for c in CASES}) >= 20


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.nir"
    _base("braille", path)
    data = path.read_bytes()
    for frac in (0.9, 0.5, 0.1):
        path.write_bytes(data[: int(len(data) * frac)])
        err = _load_error(path)
        # no node can be named in a file HDF5 cannot open: the message names the file and the cause
        assert type(err) is FileFormatError and isinstance(err, ValueError)
        assert "cut.nir" in str(err) and "truncated" in str(err)


@pytest.mark.parametrize("content", [b"", b"hello, I am not a NIR file\n", bytes(range(256)) * 64,
                                     b"\x89HDF\r\n\x1a\n" + b"\x00" * 100])
def test_not_an_hdf5_file(tmp_path, content):
    path = tmp_path / "junk.nir"
    path.write_bytes(content)
    err = _load_error(path)
    assert type(err) is FileFormatError and isinstance(err, ValueError)
    assert "junk.nir" in str(err) and "HDF5" in str(err)


def test_load_of_a_missing_path_or_a_folder(tmp_path):
    for p in (tmp_path / "nope.nir", tmp_path):
        with pytest.raises(FileFormatError, match="is not a file"):
            nb.load(p)


# ---------------------------------------------------------------- bad graphs in memory
class Spiky(nir.NIRNode):
    """A node type nirbridge does not know."""

    def __init__(self):
        self.input_type = {"input": np.array([3])}
        self.output_type = {"output": np.array([3])}
        self.metadata = {}


def _mem(nodes, edges):
    io = {"input": nir.Input(input_type={"input": np.array([3])}),
          "output": nir.Output(output_type={"output": np.array([3])})}
    return nir.NIRGraph(nodes={**io, **nodes}, edges=edges, type_check=False)


_F = np.ones(3, np.float32)
MEM_CASES = [
    ("unknown_class", _mem({"spiky": Spiky()}, [("input", "spiky"), ("spiky", "output")]), UnknownNodeError,
     ["'spiky'", "'type'", "Spiky"]),
    ("python_float_parameter", _mem({"s": nir.Scale(scale=_F)}, [("input", "s"), ("s", "output")]), None, []),
    ("complex_weight", _mem({"s": nir.Scale(scale=_F.astype(np.complex64))}, [("input", "s"), ("s", "output")]),
     ParameterError, ["'s'", "'scale'", "complex64"]),
    ("nested_graph_without_input", _mem({"sub": nir.NIRGraph(
        nodes={"s": nir.Scale(scale=_F), "output": nir.Output(output_type={"output": np.array([3])})},
        edges=[("s", "output")], type_check=False)}, [("input", "sub.s"), ("sub", "output")]), GraphError,
     ["'sub'", "'nodes'", "no Input node", "s"]),
    ("same_edge_twice_through_nested_name", _mem({"sub": nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([3])}), "s": nir.Scale(scale=_F),
               "output": nir.Output(output_type={"output": np.array([3])})},
        edges=[("input", "s"), ("s", "output")], type_check=False)},
        [("input", "sub"), ("input", "sub.input"), ("sub", "output")]), GraphError,
     ["'sub.input'", "'edges'", "same edge"]),
    ("non_string_edge_end", _mem({"s": nir.Scale(scale=_F)}, [("input", 3), ("s", "output")]), GraphError,
     ["'edges'", "3"]),
    ("edge_with_three_ends", _mem({"s": nir.Scale(scale=_F)}, [("input", "s", "output")]), GraphError,
     ["'edges'", "two ends"]),
]


@pytest.mark.parametrize("case", MEM_CASES, ids=[c[0] for c in MEM_CASES])
def test_bad_graph_in_memory(case):
    name, graph, cls, must = case
    if name == "python_float_parameter":
        # a Python float becomes a float64 0-d array (no loss); here its shape does not fit the input
        graph.nodes["s"].scale = 2.0
        cls, must = ShapeError, ["'s'", "'scale'", "expects input shape ()"]
    with pytest.raises(NirBridgeError) as e:
        nb.Graph.from_nir(graph)
    assert type(e.value) is cls, f"{type(e.value).__name__}: {e.value}"
    assert isinstance(e.value, NotImplementedError) == (cls is UnknownNodeError)
    assert isinstance(e.value, ValueError) == (cls is not UnknownNodeError)
    for s in must:
        assert s in str(e.value), f"{s!r} not in: {e.value}"


def test_errors_do_not_change_the_callers_graph():
    g = nir.read(examples.path("braille_noDelay_bias_zero"), type_check=False)
    g.nodes["fc1"].weight[0, 0] = np.nan
    before = {k: np.array(v.weight, copy=True) for k, v in g.nodes.items() if hasattr(v, "weight")}
    with pytest.raises(ParameterError):
        nb.Graph.from_nir(g)
    for k, w in before.items():
        assert g.nodes[k].weight.tobytes() == w.tobytes()
