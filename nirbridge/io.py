"""Reading and writing NIR files, with errors that name the node and the field.

The HDF5 layout is ``nir``'s (``nir.write`` writes it). :func:`load` reads it the way ``nir.read``
does (every dataset read as ``nir``'s ``hdf2dict`` reads it, every node built by ``nir``'s own
``dict2NIRNode``), but one node at a time, so that each way a file can be broken becomes a
:class:`~nirbridge.errors.NirBridgeError` naming the node and the field instead of a bare traceback
from h5py or nir:

* not HDF5, truncated, or a dataset whose bytes are corrupt (:class:`FileFormatError`);
* links (soft, external) and datasets stored outside the file: a NIR file is self-contained;
* an unknown node type, a missing or unexpected field (:class:`FileFormatError`);
* a parameter of the wrong kind, shape, or with NaN/inf (:class:`ParameterError`, :class:`ShapeError`).

Once the walk finds the file valid, a graph without nested graphs is read with ``nir.read`` itself.
Nested graphs keep the walk's result, built without ``nir``'s type check (``nir.read(type_check=False)``
checks nested graphs anyway, and changes them by inserting Input nodes);
:class:`~nirbridge.graph.Graph` validates the whole graph itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nir
import numpy as np

from .errors import FileFormatError, NirBridgeError, ShapeError, UnsupportedError, node_error
from .graph import ROOT, Graph, _values_equal, check_graph
from .h5read import H5Tree, read_tree
from .limits import deep_recursion
from .nodes import NODE_SPECS, SUBGRAPH, check_params

__all__ = ["as_graph", "load", "save"]

# fields nir's readers fill in when a file leaves them out (older NIR files have no v_reset / w_in)
_OPTIONAL_IN_FILE = {
    "Conv1d": {"input_shape"}, "Conv2d": {"input_shape"}, "Flatten": {"input_type"},
    "IF": {"v_reset"}, "LIF": {"v_reset"}, "CubaLIF": {"v_reset", "w_in"}, "CubaLI": {"w_in"},
}
# name of each field as nir.write stores it, where it differs from the constructor field
_FILE_NAME = {"Input": {"input_type": "shape"}, "Output": {"output_type": "shape"}}


def load(path: str | os.PathLike | nir.NIRGraph, *, strict: bool = True, max_bytes: int | None = None,
         timeout: float | None = None) -> Graph:
    """Read a ``.nir`` file into a validated :class:`Graph`.

    ``path`` may also be a ``nir.NIRGraph`` in memory, such as an exporter returns (parameters as
    torch tensors, lists or Python numbers are converted without loss, a tensor keeping its
    dtype: :meth:`Graph.from_nir`); ``strict=False`` repairs it as it would the file.

    Raises :class:`~nirbridge.errors.FileFormatError` for a file that is not a readable NIR
    graph, and the graph's own errors (``GraphError``, ``ShapeError``, ``ParameterError``, ...)
    for a graph that reads but is invalid; every message names the node and the field.

    The file is treated as untrusted (:mod:`nirbridge.h5read`): every HDF5 object is visited once
    (shared or cyclic links are refused), the declared sizes of all datasets together must stay
    within ``max_bytes`` (default 1 GiB) before anything is read, and the read stops after
    ``timeout`` seconds (default 10 s plus 1 s per 100 MB) where a damaged file would make the
    HDF5 library loop.

    >>> import nirbridge as nb
    >>> from nirbridge import examples
    >>> nb.load(examples.path("lif_norse")).plan.names
    ('input', '0', '1', 'output')
    """
    if isinstance(path, Graph):
        return path
    if isinstance(path, nir.NIRGraph):
        raw, name = path, "the graph"
    else:
        p = _as_path(path, "load")
        if not p.is_file():
            raise FileFormatError(f"{str(p)!r} is not a file. Fix: check the path")
        # walks and checks the whole file first, so errors name the node and the field
        raw, name = read_nir(p, max_bytes=max_bytes, timeout=timeout), p.name
    with deep_recursion(_nesting(raw)):
        if not strict:  # repair known exporter quirks, one RepairWarning each (nirbridge.repair)
            import warnings

            from .repair import RepairWarning, repair_nir

            raw, repairs = repair_nir(raw)
            for r in repairs:
                warnings.warn(RepairWarning(f"{name}: repaired {r}"), stacklevel=2)
            return Graph.from_nir(raw)
        try:
            return Graph.from_nir(raw)
        except NirBridgeError as e:
            from .repair import find_repairs

            repairs = find_repairs(raw)
            if not repairs:
                raise
            raise type(e)(f"{e}. This is a known exporter quirk: nb.load(..., strict=False) repairs it "
                          f"({'; '.join(map(str, repairs))}) and warns") from None


def _nesting(g: Any) -> int:
    """How deep nested graphs go in a nir.NIRGraph (without recursion)."""
    depth, level = 0, [g]
    while level:
        level = [n for x in level for n in x.nodes.values() if isinstance(n, nir.NIRGraph)]
        depth += bool(level)
    return depth


def _as_path(path: Any, caller: str) -> Path:
    if isinstance(path, bytes):
        try:
            path = os.fsdecode(path)
        except UnicodeDecodeError:
            raise FileFormatError(f"{caller}(): the path {path!r} is not valid text. Fix: pass a str or Path") from None
    if not isinstance(path, (str, os.PathLike)):
        raise FileFormatError(f"{caller}() takes a path (str or pathlib.Path), got {type(path).__name__} "
                              f"{path!r:.60}. Fix: pass the file name as a str or Path")
    try:
        p = Path(path)
    except TypeError as e:
        raise FileFormatError(f"{caller}(): {path!r:.60} is not a path ({e}). Fix: pass a str or Path") from None
    if "\x00" in str(p):
        raise FileFormatError(f"{caller}(): the path {str(p)!r:.80} holds a NUL character. Fix: pass a real file name")
    return p


def save(graph: Graph, path: str | os.PathLike) -> None:
    """Write a :class:`Graph` as a ``.nir`` file, as ``nir.write`` does, atomically.

    ``nb.load(path)`` gives an equal graph (:meth:`Graph.equals`, bit for bit, dtypes included)
    for the values the HDF5 format keeps: NumPy arrays (1-d and up) and scalars, strings, nested
    dicts of them. NIR's format turns a Python ``int``/``float`` or a 0-d array into a NumPy
    scalar, and stores nodes sorted by name (so ``g.inputs`` may come back in another order).

    The file holds what ``nir.write`` would write (written in time linear in the graph, also for
    deeply nested graphs). The graph is checked first, then written to a temporary file beside ``path``, read back and
    compared with ``graph``; only a file that loads back equal replaces ``path`` (by a rename).
    A failed save leaves an existing file at ``path`` untouched, byte for byte.

    Raises :class:`~nirbridge.errors.UnsupportedError`, naming node and field, for what a NIR file
    cannot store: a shape field left None (a Conv's ``input_shape``, a Flatten's ``input_type``,
    an Output's ``output_type``), a node name with ``/`` or non-text metadata, or any value that
    would not read back equal.
    """
    check_graph(graph, "save")
    p = _as_path(path, "save")
    with deep_recursion(_graph_depth(graph)):
        _check_writable(graph, "")
        if p.is_dir():
            raise FileFormatError(f"save(): {str(p)!r} is a folder. Fix: give a file name, e.g. 'model.nir'")
        folder = p.parent if str(p.parent) else Path(".")
        if not folder.is_dir():
            raise FileFormatError(f"save(): the folder {str(folder)!r} does not exist. Fix: create it first")
        import tempfile

        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(folder))
        except OSError as e:
            raise FileFormatError(f"save(): cannot write in {str(folder)!r} ({e}). Fix: choose a folder you can "
                                  "write to") from None
        os.close(fd)
        try:
            try:
                _write_nir(tmp, graph.to_nir())
            except Exception as e:  # what the checks above did not foresee
                raise node_error(UnsupportedError, ROOT, None, f"nir.write cannot store this graph "
                                 f"({type(e).__name__}: {e})", "store arrays, strings and numbers only") from None
            try:
                back = load(tmp)
            except NirBridgeError as e:
                raise UnsupportedError(f"save(): the file written for this graph does not load back ({e}). "
                                       "Fix: change what the message names") from None
            where = _first_difference(graph, back)
            if where is not None:
                raise node_error(UnsupportedError, where[0], where[1], "a NIR file cannot store this value as it is "
                                 "(it reads back different)", "store NumPy arrays, NumPy or Python numbers, "
                                 "strings and dicts of them")
            try:
                os.replace(tmp, p)
            except OSError as e:
                raise FileFormatError(f"save(): cannot replace {str(p)!r} ({e}); the old file is unchanged. "
                                      "Fix: check the file's permissions") from None
            tmp = None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def _write_nir(path: str, graph: nir.NIRGraph) -> None:
    """Write ``graph`` in exactly the layout ``nir.write`` gives (the same groups, datasets, dtypes
    and gzip compression), in time linear in the size of the graph. (``nir.write`` builds each
    nested graph's dict with ``dataclasses.asdict`` of the whole subtree, then replaces its nodes:
    quadratic in the nesting depth.)"""
    import copy

    import h5py

    def as_dict(node: Any) -> dict:
        if not isinstance(node, nir.NIRGraph):
            return node.to_dict()
        return {"metadata": copy.deepcopy(node.metadata), "nodes": {k: as_dict(n) for k, n in node.nodes.items()},
                "edges": copy.deepcopy(node.edges), "type": "NIRGraph"}

    def put(group: Any, d: dict) -> None:
        for k, v in d.items():
            if k == "metadata":
                if v != {}:
                    put(group.create_group(k), v)
            elif isinstance(v, str):
                group.create_dataset(k, data=v, dtype=h5py.string_dtype())
            elif isinstance(v, np.ndarray):
                group.create_dataset(k, data=v, dtype=v.dtype, compression="gzip")
            elif isinstance(v, dict):
                put(group.create_group(str(k)), v)
            else:
                group.create_dataset(k, data=v)

    with h5py.File(path, "w") as f:
        f.create_dataset("version", data=nir.version, dtype=h5py.string_dtype())
        put(f.create_group("node"), as_dict(graph))


def _graph_depth(g: Graph) -> int:
    depth, level = 0, [g]
    while level:
        level = [n.subgraph for x in level for n in x.nodes.values() if n.subgraph is not None]
        depth += bool(level)
    return depth


def _first_difference(a: Graph, b: Graph, prefix: str = "") -> tuple[str, str | None] | None:
    """(flat node, field) of the first value of ``a`` that ``b`` (read back from a file) does not hold
    as the file format keeps it (Python numbers and 0-d arrays as NumPy scalars, lists as arrays)."""
    if set(a.nodes) != set(b.nodes):
        return (sorted(set(a.nodes) ^ set(b.nodes))[0], "nodes")
    if a.edges != b.edges:
        return (prefix.rstrip(".") or ROOT, "edges")
    if not _values_equal(_stored(a.metadata), b.metadata):
        return (prefix.rstrip(".") or ROOT, "metadata")
    for name, node in a.nodes.items():
        other = b.nodes[name]
        if (node.subgraph is None) != (other.subgraph is None) or node.type != other.type:
            return (prefix + name, "type")
        if not _values_equal(_stored(node.metadata), other.metadata):
            return (prefix + name, "metadata")
        if node.subgraph is not None:
            hit = _first_difference(node.subgraph, other.subgraph, prefix + name + ".")
            if hit is not None:
                return hit
            continue
        for k, v in node.params.items():
            if not _values_equal(_stored(v), other.params.get(k)):
                return (prefix + name, k)
    return None


def _stored(v: Any) -> Any:
    """A value as a NIR file gives it back (what ``nir.write`` then ``nb.load`` make of it)."""
    if isinstance(v, Mapping):
        return {k: _stored(x) for k, x in v.items()}
    if isinstance(v, bool):
        return np.bool_(v)
    if isinstance(v, int):
        return np.int64(v)
    if isinstance(v, float):
        return np.float64(v)
    if isinstance(v, bytes):
        return v.decode("utf8", "replace")
    if isinstance(v, (list, tuple)):
        return np.asarray(v)
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return v[()]
    return v


def _unstorable(v: Any) -> str | None:
    """Why ``nir.write`` cannot store ``v`` (a parameter or a metadata value), or None."""
    if isinstance(v, Mapping):
        for k, x in v.items():
            if not isinstance(k, str) or not _storable_name(k):
                return f"key {k!r:.60} is not a name a NIR file can hold (text without '/')"
            why = _unstorable(x)
            if why is not None:
                return f"{k!r}: {why}"
        return None
    if isinstance(v, (str, bool, int, float, np.generic)) and not isinstance(v, np.void):
        if isinstance(v, str) and not _encodable(v):
            return f"the text {v!r:.60} is not valid Unicode"
        if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**63:
            return f"the integer {v} does not fit in 64 bits"
        if isinstance(v, np.generic) and v.dtype.kind not in "biufcS":
            return f"a NumPy {v.dtype} scalar"
        return None
    if isinstance(v, (list, tuple)):
        try:
            a = np.asarray(v)
        except (ValueError, TypeError):
            return "a ragged or mixed list"
        return None if a.dtype.kind in "biuf" else f"a list that becomes a {a.dtype} array"
    if isinstance(v, np.ndarray):
        return None if v.dtype.kind in "biufcS" else f"an array of dtype {v.dtype}"
    return f"a {type(v).__name__}"


def _encodable(s: str) -> bool:
    try:
        s.encode("utf8")
    except UnicodeEncodeError:
        return False
    return True


def _storable_name(name: str) -> bool:
    """A node or key name HDF5 can hold as a link name and give back unchanged."""
    return bool(name) and "/" not in name and name not in (".", "..") and "\x00" not in name and _encodable(name)


# fields nir.write cannot store as None (it would fail inside h5py), with the key they are stored under
_NOT_NONE_IN_FILE = {"Conv1d": ("input_shape", None), "Conv2d": ("input_shape", None),
                     "Flatten": ("input_type", "input"), "Input": ("input_type", "input"),
                     "Output": ("output_type", "output")}


def _check_writable(graph: Graph, prefix: str) -> None:
    where = prefix.rstrip(".") or ROOT
    why = _unstorable(graph.metadata)
    if why is not None:
        raise node_error(UnsupportedError, where, "metadata", f"a NIR file cannot store this metadata ({why})",
                         "keep metadata to strings, numbers, NumPy arrays and dicts of them")
    for a, b in graph.edges:
        for end in (a, b):
            if not _encodable(end):
                raise node_error(UnsupportedError, prefix + end, "edges", "the edge end is not valid Unicode text",
                                 "rename the node")
    for name, node in graph.nodes.items():
        if not _storable_name(name):
            raise node_error(UnsupportedError, prefix + name, "nodes", f"a NIR file cannot hold the node name "
                             f"{name!r:.60} (HDF5 names are text without '/', not '.' or '..')",
                             "rename the node")
        why = _unstorable(node.metadata)
        if why is not None:
            raise node_error(UnsupportedError, prefix + name, "metadata",
                             f"a NIR file cannot store this metadata ({why})",
                             "keep metadata to strings, numbers, NumPy arrays and dicts of them")
        if node.subgraph is None:
            for k, v in node.params.items():
                if v is None:
                    continue
                why = _unstorable(v)
                if why is not None:
                    raise node_error(UnsupportedError, prefix + name, k, f"a NIR file cannot store {why}",
                                     "give NumPy arrays of numbers")
        if node.subgraph is not None:
            _check_writable(node.subgraph, prefix + name + ".")
            continue
        field, key = _NOT_NONE_IN_FILE.get(node.type, (None, None))
        if field is None:
            continue
        v = node.params.get(field)
        if key is not None and hasattr(v, "get"):
            v = v.get(key)
        if v is None:
            flat = prefix + name
            raise node_error(
                UnsupportedError, flat, field,
                f"nir.write cannot store a {node.type} whose {field} is None (NIR files need the shape)",
                f"set it first, e.g. graph.replace_params({{{flat!r}: {{{field!r}: ...}}}}) with the shape "
                f"the plan found: graph.input_shape({flat!r})",
            )


def read_nir(path: str | os.PathLike, *, max_bytes: int | None = None, timeout: float | None = None,
             _isolate: bool | None = None) -> nir.NIRGraph:
    """The ``nir.NIRGraph`` in a ``.nir`` file, as ``nir.read(path, type_check=False)`` gives it,
    with errors that name the node and the field (see the module docstring). The file is read by
    :func:`nirbridge.h5read.read_tree` (each object once, sizes checked before reading, with a
    deadline); ``max_bytes`` and ``timeout`` are its bounds."""
    p = Path(path)
    tree = read_tree(str(p), p.name, _where, max_bytes=max_bytes, timeout=timeout, field_limits=_FIELD_LIMITS,
                     precheck=_precheck, isolate=_isolate)
    if "node" not in tree.groups:
        raise FileFormatError(f"{p.name}: no 'node' group, so this HDF5 file is not a NIR graph. "
                              "Fix: write it with nir.write or nirbridge.save")
    with deep_recursion(_depth_of(tree)):
        graph = _read_node(_Group(tree, "node"), "", p.name)
    if not isinstance(graph, nir.NIRGraph):
        raise node_error(FileFormatError, ROOT, "type", f"{p.name}: the file holds a single "
                         f"{type(graph).__name__} node, not a graph", "wrap the node in a nir.NIRGraph")
    return graph


# the most elements a field of a node may declare (before it is read): shapes, strides and the like
# hold one number per dimension; the node type holds one string
_FIELD_LIMITS = {"type": 1, "input_shape": 64, "stride": 64, "padding": 64, "dilation": 64, "groups": 1,
                 "kernel_size": 64, "start_dim": 1, "end_dim": 1, "shape": 64, "input_type": 64,
                 "output_type": 64, "version": 1}


def _depth_of(tree: H5Tree) -> int:
    return max((p.count("/") for p in tree.groups), default=0)


class _Group:
    """A group of an :class:`~nirbridge.h5read.H5Tree`, read like an h5py group."""

    __slots__ = ("tree", "path")

    def __init__(self, tree: H5Tree, path: str):
        self.tree, self.path = tree, path

    def keys(self) -> list[str]:
        return self.tree.groups[self.path]

    def __contains__(self, key: str) -> bool:
        return key in self.tree.groups[self.path]

    def __getitem__(self, key: str) -> Any:
        p = f"{self.path}/{key}"
        if p in self.tree.groups:
            return _Group(self.tree, p)
        return _Dataset(p, self.tree.data[p])

    def items(self):
        return [(k, self[k]) for k in self.keys()]


class _Dataset:
    __slots__ = ("path", "value")

    def __init__(self, path: str, value: Any):
        self.path, self.value = path, value


def _precheck(tree: H5Tree) -> None:
    """Shape rules on the declared shapes, before the large datasets are read: a node whose
    parameter shapes do not fit together is refused without decompressing its weights."""
    for gpath in list(tree.groups):
        if not gpath.startswith("node") or f"{gpath}/type" not in tree.data:
            continue
        t = _text(tree.data[f"{gpath}/type"])
        spec = NODE_SPECS.get(t) if isinstance(t, str) else None
        if spec is None or not spec.float_params:
            continue
        params: dict[str, Any] = {}
        for f in spec.fields:
            p = f"{gpath}/{f}"
            if p in tree.data:
                params[f] = tree.data[p]
            elif p in tree.declared and f in spec.float_params:
                shape, dt, _ = tree.declared[p]
                params[f] = np.broadcast_to(np.ones((), dtype=np.dtype(dt)), shape)
            else:
                params[f] = None
        if any(not isinstance(v, (np.ndarray, np.generic)) or v.dtype.kind not in "fiu"
               for k, v in params.items() if k in spec.float_params):
            continue  # the full check, after reading, names what is wrong
        if t == "Flatten" or t in ("Input", "Output"):
            continue
        name, _ = _where(f"{gpath}/x")
        try:
            spec.expected_input(name, params)
        except ShapeError:
            raise
        except Exception:  # the full check, after reading, reports everything else
            pass


def _text(v: Any) -> Any:
    if isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "SO":
        v = v.item()
    if isinstance(v, bytes):
        try:
            return v.decode("utf8")
        except UnicodeDecodeError:
            return v
    return v


def _where(h5path: str) -> tuple[str, str | None]:
    """(flat node name, field) for an HDF5 path like ``node/nodes/sub/nodes/lif/tau``."""
    parts = h5path.split("/")
    if parts[0] != "node":
        return ROOT, parts[-1]
    names, i = [], 1
    while i + 1 < len(parts) and parts[i] == "nodes":
        names.append(parts[i + 1])
        i += 2
    rest = parts[i:]
    return (".".join(names) or ROOT), (rest[0] if rest else None)


#: deepest metadata nesting read (metadata are plain values; deeper trees are refused, not recursed)
MAX_METADATA_DEPTH = 64


def _read_dataset(ds: Any, node: str, field: str, fname: str) -> Any:
    """A dataset's value as nir's hdf2dict reads it (``ds[()]``, bytes decoded to str)."""
    if not isinstance(ds, _Dataset):
        raise node_error(FileFormatError, node, field, f"{fname}: {field!r} is a group, not an array",
                         "re-export the file")
    v = ds.value
    if isinstance(v, bytes):
        try:
            return v.decode("utf8")
        except UnicodeDecodeError:
            raise node_error(FileFormatError, node, field, f"{fname}: {field!r} holds bytes that are not UTF-8 "
                             f"text ({v[:40]!r})", "re-export the file with text names") from None
    return v


def _read_tree(group: _Group, node: str, field: str, fname: str) -> dict:
    """A group of plain values (metadata) as nested dicts, read without recursion."""
    out: dict = {}
    stack = [(group, out, field, 0)]
    while stack:
        g, d, where, depth = stack.pop()
        if depth >= MAX_METADATA_DEPTH:
            raise node_error(FileFormatError, node, field, f"{fname}: {where!r} nests groups {depth} deep "
                             f"(metadata hold at most {MAX_METADATA_DEPTH} levels)", "store flatter metadata")
        for key, item in g.items():
            if isinstance(item, _Group):
                d[key] = {}
                stack.append((item, d[key], f"{where}/{key}", depth + 1))
            else:
                d[key] = _read_dataset(item, node, f"{where}/{key}", fname)
    return out


def _read_node(group: _Group, prefix: str, fname: str) -> nir.NIRNode:
    name = prefix.rstrip(".") or ROOT
    if "type" not in group:
        raise node_error(FileFormatError, name, "type", f"{fname}: the node has no 'type' entry",
                         "re-export the file with a NIR writer")
    t = _read_dataset(group["type"], name, "type", fname)
    if isinstance(t, np.ndarray) and t.ndim == 0 and t.dtype.kind == "O":
        t = t.item()
        t = t.decode("utf8", "replace") if isinstance(t, bytes) else t
    if not isinstance(t, str):
        raise node_error(FileFormatError, name, "type", f"{fname}: the type entry holds {t!r:.80}, not a string",
                         "re-export the file")
    meta = {}
    if "metadata" in group:
        if not isinstance(group["metadata"], _Group):
            raise node_error(FileFormatError, name, "metadata", f"{fname}: metadata is not a group",
                             "re-export the file")
        meta = _read_tree(group["metadata"], name, "metadata", fname)
    if t == SUBGRAPH:
        return _read_graph(group, prefix, name, meta, fname)
    spec = NODE_SPECS.get(t)
    if spec is None:
        raise node_error(FileFormatError, name, "type",
                         f"{fname}: unknown node type {t!r:.80} (NIR 1.0.8 knows {sorted(NODE_SPECS) + [SUBGRAPH]})",
                         "re-export with a NIR 1.0.8 writer, or register the type with nirbridge.register_node")
    names = _FILE_NAME.get(t, {})
    to_field = {names.get(f, f): f for f in spec.fields}
    optional = _OPTIONAL_IN_FILE.get(t, set())
    data: dict[str, Any] = {}
    for key, item in group.items():
        if key in ("type", "metadata"):
            continue
        if key not in to_field:
            raise node_error(FileFormatError, name, key, f"{fname}: a {t} has no field {key!r}",
                             f"re-export the file; a {t} has {list(spec.fields)}")
        data[key] = _read_dataset(item, name, to_field[key], fname)
    for field in spec.fields:
        if names.get(field, field) not in data and field not in optional:
            raise node_error(FileFormatError, name, field, f"{fname}: {t} parameter {field!r} is missing",
                             f"re-export the file; a {t} needs {list(spec.fields)}")
    params = {to_field[k]: v for k, v in data.items()}
    if t == "Input":
        params["input_type"] = {"input": params["input_type"]}
    elif t == "Output":
        params["output_type"] = {"output": params["output_type"]}
    check_params(name, spec, params, missing_ok=optional)  # before nir sees the values
    try:
        obj = nir.dict2NIRNode({"type": t, **data, **({"metadata": meta} if meta else {})})
    except Exception as e:  # nir's constructors assert and raise on values they cannot take
        raise node_error(FileFormatError, name, None, f"{fname}: nir cannot build the {t} node "
                         f"({type(e).__name__}: {e})", "re-export the file") from None
    w_in = data.get("w_in")
    if w_in is not None and np.shape(w_in) == np.shape(data.get("v_leak")):
        obj.w_in = w_in  # nir's constructor broadcasts w_in (changing its dtype): keep the stored array
    return obj


def _read_graph(group: _Group, prefix: str, name: str, meta: dict, fname: str) -> nir.NIRGraph:
    for key in group.keys():
        if key not in ("type", "metadata", "nodes", "edges"):
            raise node_error(FileFormatError, name, key, f"{fname}: a graph has no field {key!r}",
                             "re-export the file; a graph has nodes, edges and metadata")
    for field in ("nodes", "edges"):
        if field not in group:
            raise node_error(FileFormatError, name, field, f"{fname}: the graph has no {field!r} entry",
                             "re-export the file")
    if not isinstance(group["nodes"], _Group):
        raise node_error(FileFormatError, name, "nodes", f"{fname}: 'nodes' is not a group", "re-export the file")
    edges = _read_dataset(group["edges"], name, "edges", fname)
    edges = np.asarray(edges) if not isinstance(edges, str) else np.asarray([edges])
    if edges.size and (edges.ndim != 2 or edges.shape[1] != 2):
        raise node_error(FileFormatError, name, "edges", f"{fname}: edges have shape {edges.shape}, not (n, 2)",
                         "re-export the file")
    pairs = []
    for e in edges.reshape(-1, 2) if edges.size else ():
        ends = []
        for x in e:
            if isinstance(x, bytes):
                try:
                    x = x.decode("utf8")
                except UnicodeDecodeError:
                    raise node_error(FileFormatError, name, "edges", f"{fname}: edge end {x[:40]!r} is not UTF-8 "
                                     "text", "re-export the file with text node names") from None
            if not isinstance(x, str):
                raise node_error(FileFormatError, name, "edges", f"{fname}: edge end {x!r:.80} is not a node name",
                                 "re-export the file")
            ends.append(x)
        pairs.append(tuple(ends))
    nodes = {}
    for key, sub in group["nodes"].items():
        if not isinstance(sub, _Group):
            raise node_error(FileFormatError, prefix + key, None, f"{fname}: the entry is not a node group",
                             "re-export the file")
        nodes[key] = _read_node(sub, prefix + key + ".", fname)
    return nir.NIRGraph(nodes=nodes, edges=pairs, metadata=meta, type_check=False)


def as_graph(obj: Any, caller: str) -> Graph:
    """``obj`` as a :class:`~nirbridge.graph.Graph`: a Graph, a ``nir.NIRGraph`` or the path of a
    ``.nir`` file (what every ``to_*`` function and :func:`nirbridge.simulate` accept)."""
    if isinstance(obj, Graph):
        return obj
    if isinstance(obj, nir.NIRGraph):
        return Graph.from_nir(obj)
    if isinstance(obj, (str, bytes)) or hasattr(obj, "__fspath__"):
        return load(obj)
    check_graph(obj, caller)  # raises, naming the caller
    return obj
