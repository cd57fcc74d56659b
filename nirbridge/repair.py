"""Repairs of known exporter quirks, for ``nb.load(path, strict=False)``.

Some libraries write files that ``nir.read`` (and a strict :func:`nirbridge.load`) rejects,
although the model in them is clear. ``load(path, strict=False)`` repairs the quirks listed
here, and only these, announcing each repair with one :class:`RepairWarning` that names the node
and what changed. Nothing is repaired silently; anything else still raises.

* A batch or time dimension leaked into an Input or Output shape: Norse's ``to_nir`` traced with
  a batched sample writes ``Input [B, N]`` before a layer of N; Sinabs' ``to_nir`` with a
  ``(B, T, N)`` sample writes ``Input [T, N]``; Rockpool writes ``Input [1, N]``. The leading
  dimensions are dropped when the node the Input feeds expects exactly the trailing ones
  (Outputs: when the node feeding it produces exactly the trailing ones).

SpikingJelly names its Input node ``input_1``: that is a valid name and needs no repair.
"""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from .errors import NirBridgeError, NirBridgeWarning
from .nodes import spec_for_nir

__all__ = ["NirBridgeWarning", "Repair", "RepairWarning", "find_repairs", "repair_nir"]


class RepairWarning(NirBridgeWarning):
    """``load(strict=False)`` repaired an exporter quirk (the message names the node and the change)."""


@dataclass(frozen=True)
class Repair:
    """One repair: the node (flat name) and field changed, the shape before and after, and why."""

    node: str  # flat name
    field: str
    old: tuple[int, ...]
    new: tuple[int, ...]
    why: str

    def __str__(self) -> str:
        return (f"node {self.node!r}, field {self.field!r}: shape {list(self.old)} -> {list(self.new)} "
                f"({self.why})")


_LEAK = "a batch or time dimension of the exporter's sample leaked into the exported shape"


def _io_shape(obj) -> tuple[str, str, tuple[int, ...]] | None:
    """(field, key, shape) of an Input/Output node with one typed port."""
    fld = "input_type" if isinstance(obj, nir.Input) else "output_type"
    types = getattr(obj, fld, None)
    if not isinstance(types, dict) or len(types) != 1:
        return None
    key, shape = next(iter(types.items()))
    if shape is None:
        return None
    try:
        return fld, key, tuple(int(d) for d in np.asarray(shape).ravel())
    except (TypeError, ValueError):
        return None


def _expected_input(obj, name: str) -> tuple[int, ...] | None:
    if isinstance(obj, (nir.NIRGraph, nir.Input, nir.Output)):
        return None
    try:
        spec = spec_for_nir(obj, name)
        exp = spec.expected_input(name, {f: getattr(obj, f, None) for f in spec.fields})
    except (NirBridgeError, AttributeError, TypeError, ValueError, KeyError):
        return None
    return None if exp is None else tuple(int(d) for d in exp)


def _trailing(shape: tuple[int, ...], want: tuple[int, ...]) -> bool:
    return len(shape) > len(want) and shape[len(shape) - len(want):] == want


def _with_shape(obj, fld: str, key: str, shape: tuple[int, ...]):
    types = {key: np.array(shape)}
    cls = nir.Input if isinstance(obj, nir.Input) else nir.Output
    return cls(**{fld: types}, metadata=getattr(obj, "metadata", {}) or {})


def _fix_inputs(g: nir.NIRGraph, prefix: str, found: list[Repair]) -> nir.NIRGraph:
    nodes = {}
    for k, v in g.nodes.items():
        nodes[k] = _fix_inputs(v, prefix + k + ".", found) if isinstance(v, nir.NIRGraph) else v
    for k, v in list(nodes.items()):
        if not isinstance(v, nir.Input):
            continue
        io = _io_shape(v)
        if io is None:
            continue
        fld, key, shape = io
        wants = {_expected_input(nodes[b], prefix + b) for a, b in g.edges if a == k and b in nodes}
        if len(wants) == 1:
            want = wants.pop()
            if want is not None and _trailing(shape, want):
                nodes[k] = _with_shape(v, fld, key, want)
                found.append(Repair(prefix + k, fld, shape, want, _LEAK))
    return nir.NIRGraph(nodes=nodes, edges=[tuple(e) for e in g.edges], metadata=g.metadata, type_check=False)


def _fix_outputs(g: nir.NIRGraph, found: list[Repair]) -> nir.NIRGraph:
    """Top-level Outputs: compare with the shape the graph computes (Outputs left untyped)."""
    from .graph import Graph

    outs = {k: _io_shape(v) for k, v in g.nodes.items() if isinstance(v, nir.Output)}
    outs = {k: io for k, io in outs.items() if io is not None}
    if not outs:
        return g
    probe_nodes = dict(g.nodes)
    for k in outs:
        probe_nodes[k] = nir.Output(output_type={"output": None})
    try:
        plan = Graph.from_nir(nir.NIRGraph(nodes=probe_nodes, edges=[tuple(e) for e in g.edges],
                                           metadata=g.metadata, type_check=False)).plan
    except NirBridgeError:
        return g  # something else is wrong: the strict error will say what
    nodes = dict(g.nodes)
    for k, (fld, key, shape) in outs.items():
        got = tuple(plan[k].input_shape)
        if shape != got and _trailing(shape, got):
            nodes[k] = _with_shape(g.nodes[k], fld, key, got)
            found.append(Repair(k, fld, shape, got, _LEAK))
    return nir.NIRGraph(nodes=nodes, edges=[tuple(e) for e in g.edges], metadata=g.metadata, type_check=False)


def repair_nir(graph: nir.NIRGraph) -> tuple[nir.NIRGraph, list[Repair]]:
    """The graph with every known quirk repaired (a new object) and the list of repairs made."""
    found: list[Repair] = []
    g = _fix_inputs(graph, "", found)
    g = _fix_outputs(g, found)
    return g, found


def find_repairs(graph: nir.NIRGraph) -> list[Repair]:
    """The repairs :func:`repair_nir` would make (``graph`` is not changed)."""
    return repair_nir(graph)[1]
