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

import os
from pathlib import Path
from typing import Any

import nir
import numpy as np

from .errors import FileFormatError, NirBridgeError, UnsupportedError, node_error
from .graph import ROOT, Graph, check_graph
from .nodes import NODE_SPECS, SUBGRAPH, check_params

__all__ = ["as_graph", "load", "save"]

# fields nir's readers fill in when a file leaves them out (older NIR files have no v_reset / w_in)
_OPTIONAL_IN_FILE = {
    "Conv1d": {"input_shape"}, "Conv2d": {"input_shape"}, "Flatten": {"input_type"},
    "IF": {"v_reset"}, "LIF": {"v_reset"}, "CubaLIF": {"v_reset", "w_in"}, "CubaLI": {"w_in"},
}
# name of each field as nir.write stores it, where it differs from the constructor field
_FILE_NAME = {"Input": {"input_type": "shape"}, "Output": {"output_type": "shape"}}


def load(path: str | os.PathLike, *, strict: bool = True) -> Graph:
    """Read a ``.nir`` file into a validated :class:`Graph`.

    Raises :class:`~nirbridge.errors.FileFormatError` for a file that is not a readable NIR
    graph, and the graph's own errors (``GraphError``, ``ShapeError``, ``ParameterError``, ...)
    for a graph that reads but is invalid; every message names the node and the field.

    >>> import nirbridge as nb
    >>> from nirbridge import examples
    >>> nb.load(examples.path("lif_norse")).plan.names
    ('input', '0', '1', 'output')
    """
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"{str(p)!r} is not a file. Fix: check the path")
    raw = read_nir(p)  # walks and checks the whole file first, so errors name the node and the field
    if not any(isinstance(n, nir.NIRGraph) for n in raw.nodes.values()):
        # the file is valid: take the graph from nir.read itself. Graphs with nested graphs keep the
        # walk's result: nir.read type-checks nested graphs even with type_check=False, rejects the
        # dotted edges nb.save writes for them, and may insert Input nodes into them
        raw = nir.read(str(p), type_check=False)
    if not strict:  # repair known exporter quirks, one RepairWarning each (nirbridge.repair)
        import warnings

        from .repair import RepairWarning, repair_nir

        raw, repairs = repair_nir(raw)
        for r in repairs:
            warnings.warn(RepairWarning(f"{p.name}: repaired {r}"), stacklevel=2)
        return Graph.from_nir(raw)
    try:
        return Graph.from_nir(raw)
    except NirBridgeError as e:
        from .repair import find_repairs

        repairs = find_repairs(raw)
        if not repairs:
            raise
        raise type(e)(f"{e}. This is a known exporter quirk: nb.load(path, strict=False) repairs it "
                      f"({'; '.join(map(str, repairs))}) and warns") from None


def save(graph: Graph, path: str | os.PathLike) -> None:
    """Write a :class:`Graph` as a ``.nir`` file with ``nir.write``.

    ``nb.load(path)`` gives an equal graph (:meth:`Graph.equals`, bit for bit, dtypes included)
    for the values the HDF5 format keeps: NumPy arrays (1-d and up) and scalars, strings, nested
    dicts of them. NIR's format turns a Python ``int``/``float`` or a 0-d array into a NumPy
    scalar, and stores nodes sorted by name (so ``g.inputs`` may come back in another order).

    Raises :class:`~nirbridge.errors.UnsupportedError`, naming node and field, for a shape field
    left None that ``nir.write`` cannot store (a Conv's ``input_shape``, a Flatten's
    ``input_type``, an Output's ``output_type``).
    """
    check_graph(graph, "save")
    _check_writable(graph, "")
    nir.write(str(path), graph.to_nir())


# fields nir.write cannot store as None (it would fail inside h5py), with the key they are stored under
_NOT_NONE_IN_FILE = {"Conv1d": ("input_shape", None), "Conv2d": ("input_shape", None),
                     "Flatten": ("input_type", "input"), "Input": ("input_type", "input"),
                     "Output": ("output_type", "output")}


def _check_writable(graph: Graph, prefix: str) -> None:
    for name, node in graph.nodes.items():
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


def read_nir(path: str | os.PathLike) -> nir.NIRGraph:
    """The ``nir.NIRGraph`` in a ``.nir`` file, as ``nir.read(path, type_check=False)`` gives it,
    with errors that name the node and the field (see the module docstring)."""
    import h5py

    p = Path(path)
    try:
        f = h5py.File(str(p), "r")
    except Exception as e:
        raise FileFormatError(
            f"{p.name}: not a readable HDF5 file ({type(e).__name__}: {e}); it may be truncated or "
            "not a NIR file. Fix: re-export or re-download the file"
        ) from None
    try:
        with f:
            _check_links(f, p.name)
            if not isinstance(f.get("node"), h5py.Group):
                raise FileFormatError(f"{p.name}: no 'node' group, so this HDF5 file is not a NIR graph. "
                                      "Fix: write it with nir.write or nirbridge.save")
            graph = _read_node(f["node"], "", p.name)
    except NirBridgeError:
        raise
    except Exception as e:  # h5py raises assorted errors on a damaged file
        raise FileFormatError(
            f"{p.name}: the HDF5 content is corrupt ({type(e).__name__}: {e}). Fix: re-export the file"
        ) from None
    if not isinstance(graph, nir.NIRGraph):
        raise node_error(FileFormatError, ROOT, "type", f"{p.name}: the file holds a single "
                         f"{type(graph).__name__} node, not a graph", "wrap the node in a nir.NIRGraph")
    return graph


def _check_links(f: Any, fname: str) -> None:
    """Reject soft and external links anywhere in the file (a NIR file holds none), before reading."""
    import h5py

    def visit(name: str, link: Any) -> Any:
        return (name, link) if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)) else None

    if hasattr(f, "visititems_links"):  # h5py >= 3.11: one pass in C, never following a link
        hit = f.visititems_links(visit)
    else:
        hit = _walk_links(f, "", visit)
    if hit is None:
        return
    name, link = hit
    node, field = _where(name)
    if isinstance(link, h5py.ExternalLink):
        raise node_error(FileFormatError, node, field,
                         f"{fname}: /{name} is an external link to {link.filename}:{link.path}; "
                         "NIR files must be self-contained", "re-export the graph into one file")
    raise node_error(FileFormatError, node, field,
                     f"{fname}: /{name} is a soft link to {link.path}; NIR files hold no links", "re-export the graph")


def _walk_links(group: Any, where: str, visit: Any) -> Any:
    import h5py

    for key in group.keys():
        link = group.get(key, getlink=True)
        if (hit := visit(where + key, link)) is not None:
            return hit
        if isinstance(link, h5py.HardLink) and isinstance(group.get(key), h5py.Group):
            if (hit := _walk_links(group[key], f"{where}{key}/", visit)) is not None:
                return hit
    return None


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


# a dataset bigger than _BIG must be backed by at least 1/_MAX_EXPANSION of its size in the file
# (gzip, what nir.write uses, compresses at most about 1032:1)
_BIG = 1 << 26
_MAX_EXPANSION = 1100


def _read_dataset(ds: Any, node: str, field: str, fname: str) -> Any:
    """A dataset's value as nir's hdf2dict reads it (``ds[()]``, bytes decoded to str)."""
    import h5py

    if not isinstance(ds, h5py.Dataset):
        raise node_error(FileFormatError, node, field, f"{fname}: {field!r} is a {type(ds).__name__}, "
                         "not an array", "re-export the file")
    if ds.is_virtual or ds.external:
        raise node_error(FileFormatError, node, field, f"{fname}: the data of {field!r} is stored outside "
                         "the file (virtual or external dataset)", "re-export the graph into one file")
    stored = ds.id.get_storage_size()
    if ds.nbytes > _BIG and ds.nbytes > _MAX_EXPANSION * max(stored, 1):
        # unwritten chunks take no space: a tiny file can declare terabytes; do not try to read them
        raise node_error(FileFormatError, node, field, f"{fname}: {field!r} declares shape {ds.shape} "
                         f"({ds.nbytes} bytes) but the file stores {stored} bytes of it; the file is corrupt",
                         "re-export the file")
    try:
        v = ds[()]
    except Exception as e:
        raise node_error(FileFormatError, node, field, f"{fname}: cannot read {field!r} "
                         f"({type(e).__name__}: {e}); the file is corrupt or truncated",
                         "re-export or re-download the file") from None
    return v.decode("utf8") if isinstance(v, bytes) else v


def _read_tree(group: Any, node: str, field: str, fname: str) -> dict:
    """A group of plain values (metadata) as nested dicts."""
    import h5py

    out = {}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out[key] = _read_tree(item, node, f"{field}/{key}", fname)
        else:
            out[key] = _read_dataset(item, node, f"{field}/{key}", fname)
    return out


def _read_node(group: Any, prefix: str, fname: str) -> nir.NIRNode:
    import h5py

    name = prefix.rstrip(".") or ROOT
    if "type" not in group:
        raise node_error(FileFormatError, name, "type", f"{fname}: the node has no 'type' entry",
                         "re-export the file with a NIR writer")
    t = _read_dataset(group["type"], name, "type", fname)
    if not isinstance(t, str):
        raise node_error(FileFormatError, name, "type", f"{fname}: the type entry holds {t!r}, not a string",
                         "re-export the file")
    meta = {}
    if "metadata" in group:
        if not isinstance(group["metadata"], h5py.Group):
            raise node_error(FileFormatError, name, "metadata", f"{fname}: metadata is not a group",
                             "re-export the file")
        meta = _read_tree(group["metadata"], name, "metadata", fname)
    if t == SUBGRAPH:
        return _read_graph(group, prefix, name, meta, fname)
    spec = NODE_SPECS.get(t)
    if spec is None:
        raise node_error(FileFormatError, name, "type",
                         f"{fname}: unknown node type {t!r} (NIR 1.0.8 knows {sorted(NODE_SPECS) + [SUBGRAPH]})",
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
        return nir.dict2NIRNode({"type": t, **data, **({"metadata": meta} if meta else {})})
    except Exception as e:  # nir's constructors assert and raise on values they cannot take
        raise node_error(FileFormatError, name, None, f"{fname}: nir cannot build the {t} node "
                         f"({type(e).__name__}: {e})", "re-export the file") from None


def _read_graph(group: Any, prefix: str, name: str, meta: dict, fname: str) -> nir.NIRGraph:
    import h5py

    for key in group.keys():
        if key not in ("type", "metadata", "nodes", "edges"):
            raise node_error(FileFormatError, name, key, f"{fname}: a graph has no field {key!r}",
                             "re-export the file; a graph has nodes, edges and metadata")
    for field in ("nodes", "edges"):
        if field not in group:
            raise node_error(FileFormatError, name, field, f"{fname}: the graph has no {field!r} entry",
                             "re-export the file")
    if not isinstance(group["nodes"], h5py.Group):
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
                x = x.decode("utf8")
            if not isinstance(x, str):
                raise node_error(FileFormatError, name, "edges", f"{fname}: edge end {x!r} is not a node name",
                                 "re-export the file")
            ends.append(x)
        pairs.append(tuple(ends))
    nodes = {}
    for key, sub in group["nodes"].items():
        if not isinstance(sub, h5py.Group):
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
