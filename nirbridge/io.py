"""Reading and writing NIR files: ``nir.read`` / ``nir.write`` behind clear errors.

The HDF5 format itself is ``nir``'s; before handing a file to ``nir.read`` nirbridge walks it once
to turn the ways a file can be broken (not HDF5, truncated, links leaving the file, unknown node
types, missing fields) into a :class:`~nirbridge.errors.FileFormatError` that names the node and
the field, instead of a bare traceback from h5py or nir.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nir

from .errors import FileFormatError, NirBridgeError, node_error
from .graph import Graph
from .nodes import NODE_SPECS, SUBGRAPH

__all__ = ["load", "save"]

# fields nir.read tolerates missing (it fills defaults)
_OPTIONAL_IN_FILE = {"input_shape", "input_type", "v_reset", "metadata", "w_in"}
# name of each field as nir.write stores it, where it differs from the constructor field
_FILE_NAME = {"Input": {"input_type": "shape"}, "Output": {"output_type": "shape"}}


def load(path: str | os.PathLike, *, strict: bool = True) -> Graph:
    """Read a ``.nir`` file into a validated :class:`Graph`.

    Raises :class:`~nirbridge.errors.FileFormatError` for a file that is not a readable NIR
    graph, and the graph's own errors (``GraphError``, ``ShapeError``, ...) for a graph that
    reads but is invalid.
    """
    if not strict:
        from .errors import UnsupportedError

        raise UnsupportedError(
            "load(strict=False) (repairing known exporter quirks) is not implemented yet. "
            "Fix: load with the default strict=True, or repair the file with the exporting library"
        )
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"{str(p)!r} is not a file. Fix: check the path")
    _precheck(p)
    try:
        g = nir.read(str(p), type_check=False)
    except NirBridgeError:
        raise
    except Exception as e:  # nir/h5py raise assorted exceptions on broken content
        raise FileFormatError(
            f"{p.name}: nir.read failed: {type(e).__name__}: {e}. Fix: re-export the graph; "
            "the file does not hold a valid NIR 1.0.8 graph"
        ) from e
    return Graph.from_nir(g)


def save(graph: Graph, path: str | os.PathLike) -> None:
    """Write a :class:`Graph` as a ``.nir`` file with ``nir.write``."""
    if not isinstance(graph, Graph):
        raise TypeError(f"save() takes a nirbridge.Graph, got {type(graph).__name__}")
    nir.write(str(path), graph.to_nir())


def _precheck(p: Path) -> None:
    import h5py

    try:
        f = h5py.File(str(p), "r")
    except Exception as e:
        raise FileFormatError(
            f"{p.name}: not a readable HDF5 file ({type(e).__name__}: {e}); it may be truncated or "
            "not a NIR file. Fix: re-export or re-download the file"
        ) from None
    try:
        with f:
            if "node" not in f:
                raise FileFormatError(f"{p.name}: no 'node' group, so this HDF5 file is not a NIR graph. "
                                      "Fix: write it with nir.write or nirbridge.save")
            _check_group(f, f["node"], "", p.name)
    except NirBridgeError:
        raise
    except Exception as e:
        raise FileFormatError(
            f"{p.name}: the HDF5 content is corrupt ({type(e).__name__}: {e}). Fix: re-export the file"
        ) from None


def _check_links(group: Any, where: str, fname: str) -> None:
    import h5py

    for key in group.keys():
        link = group.get(key, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise FileFormatError(
                f"{fname}: {where or 'root'}/{key} is a link to another file ({link.filename}); NIR files "
                "must be self-contained. Fix: re-export the graph into one file"
            )
        if isinstance(link, h5py.SoftLink):
            raise FileFormatError(
                f"{fname}: {where or 'root'}/{key} is a soft link ({link.path}); NIR files hold no links. "
                "Fix: re-export the graph"
            )


def _read_str(ds: Any) -> str:
    v = ds[()]
    return v.decode("utf8") if isinstance(v, bytes) else str(v)


def _check_group(f: Any, group: Any, prefix: str, fname: str) -> None:
    import h5py

    _check_links(group, prefix, fname)
    name = prefix.rstrip(".") or "<root graph>"
    if "type" not in group or not isinstance(group["type"], h5py.Dataset):
        raise node_error(FileFormatError, name, "type", f"{fname}: the node has no 'type' entry",
                         "re-export the file with a NIR writer")
    t = _read_str(group["type"])
    if t == SUBGRAPH:
        for field in ("nodes", "edges"):
            if field not in group:
                raise node_error(FileFormatError, name, field, f"{fname}: the graph has no {field!r} entry",
                                 "re-export the file")
        if not isinstance(group["nodes"], h5py.Group):
            raise node_error(FileFormatError, name, "nodes", f"{fname}: 'nodes' is not a group", "re-export")
        edges = group["edges"][()]
        if getattr(edges, "size", 0) and (getattr(edges, "ndim", 0) != 2 or edges.shape[1] != 2):
            raise node_error(FileFormatError, name, "edges", f"{fname}: edges have shape {edges.shape}, "
                             "not (n, 2)", "re-export the file")
        _check_links(group["nodes"], prefix + "nodes", fname)
        for key, sub in group["nodes"].items():
            if not isinstance(sub, h5py.Group):
                raise node_error(FileFormatError, prefix + key, None, f"{fname}: entry is not a node group",
                                 "re-export the file")
            _check_group(f, sub, prefix + key + ".", fname)
        return
    spec = NODE_SPECS.get(t)
    if spec is None:
        raise node_error(FileFormatError, name, "type",
                         f"{fname}: unknown node type {t!r} (NIR 1.0.8 knows {sorted(NODE_SPECS) + [SUBGRAPH]})",
                         "re-export with a NIR 1.0.8 writer, or register the type with nirbridge.register_node")
    names = _FILE_NAME.get(t, {})
    for field in spec.fields:
        key = names.get(field, field)
        if key not in group and field not in _OPTIONAL_IN_FILE:
            raise node_error(FileFormatError, name, field, f"{fname}: {t} parameter {field!r} is missing",
                             f"re-export the file; a {t} needs {list(spec.fields)}")
        if key in group and not isinstance(group[key], h5py.Dataset):
            raise node_error(FileFormatError, name, field, f"{fname}: {field!r} is a group, not an array",
                             "re-export the file")
