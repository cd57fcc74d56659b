"""The framework-neutral Graph: NIR in and out, validated, with an execution plan.

A :class:`Graph` holds the nodes of a NIR graph (type, NumPy parameters kept bit for bit, metadata)
and its edges, exactly as NIR nests them, so ``Graph.from_nir(g).to_nir()`` gives ``g`` back. Its
:attr:`Graph.plan` flattens nested subgraphs into one execution order that every backend runs:

* names of nodes inside a subgraph ``s`` become ``"s.<name>"``;
* the order is a topological order of the forward edges, never the file's (alphabetical) order;
* an edge that closes a cycle is *recurrent*: it carries the source's output of the previous time
  step (zeros at the first step). Recurrent edges are the back edges of a depth-first search from
  the inputs, taken in name order, so the choice is deterministic;
* several edges into one node are summed.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import nir
import numpy as np

from ._util import text_table
from .errors import GraphError, NotFoundError, ParameterError, ShapeError, node_error
from .limits import MAX_NESTING, check_shape, deep_recursion
from .nodes import SUBGRAPH, NodeSpec, check_params, get_spec, spec_for_nir

__all__ = ["Graph", "Node", "Plan", "Step", "check_graph"]

Shape = tuple[int, ...]
#: how errors about a graph as a whole (not one node) name it
ROOT = "<root graph>"


class _FrozenList(tuple):
    """A read-only stand-in for a list parameter; :func:`_thaw` turns it back into a list."""

    __slots__ = ()


def _is_tensor(value: Any) -> bool:
    """A PyTorch (or similar) tensor, recognised without importing torch."""
    return not isinstance(value, np.ndarray) and all(hasattr(value, a) for a in ("detach", "cpu", "numpy", "dtype"))


def _tensor_to_numpy(value: Any, where: str = "?", field: str = "?") -> np.ndarray:
    try:
        return np.array(value.detach().cpu().numpy(), copy=True)
    except (TypeError, RuntimeError, ValueError) as e:  # e.g. bfloat16, which NumPy has no dtype for
        raise node_error(ParameterError, where, field, f"the tensor of dtype {value.dtype} has no NumPy "
                         f"equivalent ({e})", "convert it first, e.g. tensor.float()") from None


def _as_array(where: str, field: str, v: Any) -> Any:
    """A float parameter as a NumPy array, without loss: tensors keep their dtype; lists, tuples and
    Python numbers become ``np.asarray(v)``. Anything else is returned for check_params to name."""
    if _is_tensor(v):
        return _tensor_to_numpy(v, where, field)
    if isinstance(v, (list, tuple)) or (isinstance(v, (int, float)) and not isinstance(v, bool)):
        try:
            a = np.asarray(v)
        except (ValueError, TypeError, OverflowError) as e:
            raise node_error(ParameterError, where, field, f"{v!r:.60} is not an array of numbers ({e})",
                             f"pass np.asarray(...) for {field}") from None
        return a if a.dtype.kind in "biuf" else v
    return v


def _freeze(value: Any) -> Any:
    """A private, read-only copy of a parameter value (arrays keep their dtype bit for bit)."""
    if _is_tensor(value):
        value = _tensor_to_numpy(value)
    if isinstance(value, np.ndarray):
        a = np.array(value, copy=True)
        a.flags.writeable = False
        return a
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return _FrozenList(_freeze(v) for v in value)
    if type(value) is tuple:
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """A fresh, writeable copy for handing to ``nir`` (which may change what it is given);
    containers come back as the types they were given as (list, tuple, dict)."""
    if isinstance(value, np.ndarray):
        return np.array(value, copy=True)
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, _FrozenList):
        return [_thaw(v) for v in value]
    if type(value) is tuple:
        return tuple(_thaw(v) for v in value)
    return value


@dataclass(frozen=True, eq=False)
class Node:
    """One node of a :class:`Graph`: its NIR type, parameters and metadata.

    ``params`` maps each field of the NIR class to its value, unchanged (arrays read-only).
    For a nested graph ``type`` is ``"NIRGraph"`` and ``subgraph`` holds it.
    """

    name: str
    type: str
    params: Mapping[str, Any]
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    subgraph: Graph | None = None

    @property
    def spec(self) -> NodeSpec:
        """The node type's :class:`~nirbridge.nodes.NodeSpec`."""
        return get_spec(self.type, self.name)

    def to_nir(self) -> nir.NIRNode:
        """A fresh ``nir`` node (or ``nir.NIRGraph``) with this node's parameters and metadata."""
        meta = _thaw(self.metadata)
        if self.subgraph is not None:
            g = self.subgraph._to_nir()
            g.metadata = meta
            return g
        kwargs = {k: _thaw(v) for k, v in self.params.items()}
        obj = self.spec.nir_class(**kwargs, metadata=meta)
        if "w_in" in kwargs and np.shape(kwargs["w_in"]) == np.shape(getattr(obj, "w_in", None)):
            obj.w_in = kwargs["w_in"]  # nir's CubaLI/CubaLIF broadcast w_in, changing its dtype: keep ours
        return obj

    def equals(self, other: Node) -> bool:
        """Bit-exact equality: type, every parameter (value and dtype) and metadata."""
        if self.type != other.type or self.name != other.name:
            return False
        if self.subgraph is not None or other.subgraph is not None:
            return (
                self.subgraph is not None
                and other.subgraph is not None
                and self.subgraph._equals(other.subgraph)
                and _values_equal(self.metadata, other.metadata)
            )
        return _values_equal(self.params, other.params) and _values_equal(self.metadata, other.metadata)


def _values_equal(a: Any, b: Any) -> bool:
    """Bit-exact equality: same types, same dtypes and shapes, same bytes (NaN equals the same NaN).
    Mappings compare as mappings (key order aside: HDF5 stores groups sorted by name)."""
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)) or set(a) != set(b):
            return False
        return all(_values_equal(a[k], b[k]) for k in a)
    if type(a) is not type(b):
        return False
    if isinstance(a, (np.ndarray, np.generic)):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.dtype.hasobject:  # bytes of an object array are pointers: compare the objects
            return all(_values_equal(x, y) for x, y in zip(np.ravel(a).tolist(), np.ravel(b).tolist()))
        return a.tobytes() == b.tobytes()
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return np.float64(a).tobytes() == np.float64(b).tobytes()
    return bool(a == b)


@dataclass(frozen=True)
class Step:
    """One node in execution order: its flat name, the node and where its input comes from.

    ``sources`` lists ``(flat source name, recurrent)``; the node's input is their sum, a recurrent
    source contributing its previous-step output.
    """

    name: str
    node: Node
    sources: tuple[tuple[str, bool], ...]
    input_shape: Shape
    output_shape: Shape
    role: str  # "input" | "output" | "identity" (a nested graph's Input/Output) | "compute"


@dataclass(frozen=True)
class Plan:
    """The flattened execution plan of a graph."""

    steps: tuple[Step, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    recurrent: tuple[tuple[str, str], ...]

    def __post_init__(self):
        object.__setattr__(self, "_index", {s.name: s for s in self.steps})

    def __getitem__(self, name: str) -> Step:
        try:
            return self._index[name]  # type: ignore[attr-defined]
        except KeyError:
            raise NotFoundError(f"no node {name!r} in the plan; nodes: {list(self._index)}") from None  # type: ignore[attr-defined]

    def __contains__(self, name: object) -> bool:
        return name in self._index  # type: ignore[attr-defined]

    @property
    def names(self) -> tuple[str, ...]:
        """The flat node names in execution order."""
        return tuple(s.name for s in self.steps)


class Graph:
    """An immutable, validated NIR graph with an execution plan.

    Build it with :meth:`from_nir` or :func:`nirbridge.load`; :meth:`to_nir` gives a
    ``nir.NIRGraph`` back, parameters bit for bit.

    >>> import nir, numpy as np, nirbridge as nb
    >>> g = nb.Graph.from_nir(nir.NIRGraph.from_list(
    ...     nir.Affine(weight=np.ones((2, 3), np.float32), bias=np.zeros(2, np.float32)),
    ...     nir.LIF(tau=np.full(2, 0.01), r=np.ones(2), v_leak=np.zeros(2),
    ...             v_threshold=np.ones(2), v_reset=np.zeros(2))))
    >>> g.inputs, g.outputs
    (['input'], ['output'])
    >>> g.plan.names
    ('input', 'affine', 'lif', 'output')
    """

    def __init__(
        self,
        nodes: Mapping[str, Node],
        edges: Iterable[tuple[str, str]],
        metadata: Mapping[str, Any] | None = None,
        *,
        _nested: bool = False,
        _prefix: str = "",
    ):
        self._nodes = MappingProxyType(dict(nodes))
        self._edges = tuple((str(a), str(b)) for a, b in edges)
        self._metadata = _freeze(dict(metadata or {}))
        self._prefix = _prefix  # "sub." for a nested graph: errors name nodes by their flat names
        self._check_structure()
        if _nested:
            self._plan = None
        else:
            with deep_recursion():
                self._plan = _build_plan(self)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_nir(cls, graph: nir.NIRGraph, *, _nested: bool = False, _prefix: str = "", _depth: int = 0) -> Graph:
        """Build a Graph from a ``nir.NIRGraph`` (which is not changed).

        Parameters are kept bit for bit. Float parameters given as PyTorch tensors, lists or
        Python numbers become NumPy arrays without loss (a tensor keeps its dtype, a list or a
        Python float becomes what ``np.asarray`` makes of it: float64, int64)."""
        if not _nested:
            with deep_recursion():
                return cls._from_nir(graph, _nested, _prefix, 0)
        return cls._from_nir(graph, _nested, _prefix, _depth)

    @classmethod
    def _from_nir(cls, graph: nir.NIRGraph, _nested: bool, _prefix: str, _depth: int) -> Graph:
        where = _prefix.rstrip(".") or ROOT
        if _depth > MAX_NESTING:
            raise node_error(GraphError, where, "nodes", f"nested graphs go deeper than {MAX_NESTING} levels",
                             "flatten the graph")
        if not isinstance(graph, nir.NIRGraph):
            raise node_error(GraphError, where, None, f"expected a nir.NIRGraph, got {type(graph).__name__}",
                             "wrap single nodes with nir.NIRGraph.from_list(...)")
        if not isinstance(graph.nodes, Mapping):
            raise node_error(GraphError, where, "nodes", f"nodes is a {type(graph.nodes).__name__}, not a dict",
                             "give nodes as {name: nir node}")
        nodes = {}
        for name, obj in graph.nodes.items():
            if not isinstance(name, str) or not name:
                raise node_error(GraphError, f"{_prefix}{name!r}", "nodes",
                                 f"node name {name!r} is not a non-empty string", "name nodes by strings")
            nodes[name] = _node_from_nir(name, obj, _prefix, _depth)
        edges = []
        for e in graph.edges:
            if not isinstance(e, (tuple, list, np.ndarray)) or len(e) != 2:
                raise node_error(GraphError, where, "edges", f"edge {e!r} does not have two ends",
                                 "edges are (source, target) pairs of node names")
            edges.append((_as_str(e[0], where), _as_str(e[1], where)))
        meta = graph.metadata if isinstance(graph.metadata, Mapping) else {}
        return cls(nodes, edges, meta, _nested=_nested, _prefix=_prefix)

    def to_nir(self) -> nir.NIRGraph:
        """A fresh ``nir.NIRGraph`` with this graph's nodes, edges and metadata."""
        with deep_recursion():
            return self._to_nir()

    def _to_nir(self) -> nir.NIRGraph:
        nodes = {name: node.to_nir() for name, node in self._nodes.items()}
        return nir.NIRGraph(
            nodes=nodes, edges=[tuple(e) for e in self._edges], metadata=_thaw(self._metadata),
            type_check=False,
        )

    # ------------------------------------------------------------------ accessors
    @property
    def nodes(self) -> Mapping[str, Node]:
        """Top-level nodes by name (a nested graph is one node with ``.subgraph``)."""
        return self._nodes

    @property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """Top-level edges ``(source, target)`` as NIR stores them (an end may name a nested graph)."""
        return self._edges

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The graph's NIR metadata (read-only)."""
        return self._metadata

    @property
    def inputs(self) -> list[str]:
        """Names of the top-level Input nodes, in the graph's node order."""
        return [n for n, node in self._nodes.items() if node.type == "Input"]

    @property
    def outputs(self) -> list[str]:
        """Names of the top-level Output nodes, in the graph's node order."""
        return [n for n, node in self._nodes.items() if node.type == "Output"]

    @property
    def plan(self) -> Plan:
        """The flattened execution plan (see the module docstring)."""
        if self._plan is None:
            with deep_recursion():
                self._plan = _build_plan(self)
        return self._plan

    def node(self, name: str) -> Node:
        """A node by flat name, e.g. ``"sub.lif"`` for node ``lif`` of nested graph ``sub``."""
        return self.plan[name].node

    def input_shape(self, name: str) -> Shape:
        """The input shape of a node by flat name, without batch or time dimensions."""
        return self.plan[name].input_shape

    def output_shape(self, name: str) -> Shape:
        """The output shape of a node by flat name, without batch or time dimensions."""
        return self.plan[name].output_shape

    def equals(self, other: Graph) -> bool:
        """Bit-exact equality of nodes (parameters with dtypes), edges and metadata.

        Nodes compare by name, not by their order in the mapping: a NIR file keeps nodes sorted by
        name, so ``nb.load(path)`` after ``nb.save(g, path)`` equals ``g``. Edges compare in order."""
        with deep_recursion():
            return self._equals(other)

    def _equals(self, other: Graph) -> bool:
        return (
            isinstance(other, Graph)
            and set(self._nodes) == set(other._nodes)
            and all(self._nodes[k].equals(other._nodes[k]) for k in self._nodes)  # noqa: SIM110
            and self._edges == other._edges
            and _values_equal(self._metadata, other._metadata)
        )

    def replace_params(self, params: Mapping[str, Mapping[str, Any]]) -> Graph:
        """A new graph with some parameters replaced: ``{flat node name: {field: value}}``
        (this graph itself when ``params`` is empty: a Graph never changes)."""
        if not params:
            return self
        with deep_recursion():
            return _replace(self, dict(params), prefix="")

    # ------------------------------------------------------------------ display
    def summary(self) -> str:
        """A table of nodes in execution order: type, shapes, parameter count, state, sources."""
        plan = self.plan
        rows = [("node", "type", "input", "output", "params", "state", "from")]
        total = 0
        for s in plan.steps:
            n = sum(int(np.size(v)) for k, v in s.node.params.items()
                    if k in s.node.spec.float_params and v is not None)
            total += n
            src = ", ".join(f"{a} (recurrent)" if rec else a for a, rec in s.sources)
            rows.append((s.name, s.node.type, _fmt(s.input_shape), _fmt(s.output_shape),
                         str(n), ",".join(s.node.spec.state) or "-", src or "-"))
        lines = text_table(rows)
        rec = ", ".join(f"{a} -> {b}" for a, b in plan.recurrent) or "none"
        lines.append(f"{len(plan.steps)} nodes, {total} parameters; inputs: {', '.join(plan.inputs)}; "
                     f"outputs: {', '.join(plan.outputs)}; recurrent edges: {rec}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"Graph({len(self._nodes)} nodes, inputs={self.inputs}, outputs={self.outputs})"

    # ------------------------------------------------------------------ validation
    def _check_structure(self) -> None:
        pre = self._prefix
        where = pre.rstrip(".") or ROOT
        if not self._nodes:
            raise node_error(GraphError, where, "nodes", "the graph has no nodes",
                             "add at least an Input, a node and an Output")
        for name, node in self._nodes.items():
            if not isinstance(name, str) or not name:
                raise node_error(GraphError, f"{pre}{name!r}", "nodes", f"node name {name!r} is not a non-empty "
                                 "string", "name nodes by strings")
            if not isinstance(node, Node) or node.name != name:
                raise node_error(GraphError, pre + name, "nodes", f"{node!r} is not a Node named {name!r}",
                                 "build graphs with Graph.from_nir")
            if node.subgraph is None:
                check_params(pre + name, node.spec, node.params)
        seen = set()
        for a, b in self._edges:
            for end, role in ((a, "source"), (b, "target")):
                if not _resolvable(self._nodes, end):
                    raise node_error(
                        GraphError, pre + end, "edges",
                        f"edge ({a!r}, {b!r}) names {role} {end!r}, which is not a node of the graph "
                        f"(nodes: {list(self._nodes)})",
                        "add the node or remove the edge",
                    )
            if (a, b) in seen:
                raise node_error(GraphError, pre + b, "edges", f"edge ({a!r}, {b!r}) appears twice",
                                 "remove the duplicate edge")
            seen.add((a, b))
            if a in self._nodes and self._nodes[a].type == "Output":
                raise node_error(GraphError, pre + a, "edges", f"edge ({a!r}, {b!r}) leaves an Output node",
                                 "Output nodes end the graph: connect from the node feeding it")
            if b in self._nodes and self._nodes[b].type == "Input":
                raise node_error(GraphError, pre + b, "edges", f"edge ({a!r}, {b!r}) enters an Input node",
                                 "Input nodes start the graph: connect to the node it feeds")
        if not self.inputs:
            targets = {b for _, b in self._edges}
            heads = [n for n in self._nodes if n not in targets]
            raise node_error(GraphError, where, "nodes",
                             f"the graph has no Input node (nodes without incoming edges: {heads})",
                             f"add nir.Input(input_type=...) and an edge from it to {heads[0] if heads else 'a node'}")
        if not self.outputs:
            sources = {a for a, _ in self._edges}
            tails = [n for n in self._nodes if n not in sources]
            tail = tails[0] if tails else "a node"
            raise node_error(GraphError, where, "nodes",
                             f"the graph has no Output node (nodes without outgoing edges: {tails})",
                             f"add nir.Output(output_type=...) and an edge to it from {tail}")


def check_graph(graph: Any, caller: str) -> None:
    """Raise :class:`~nirbridge.errors.GraphError` unless ``graph`` is a :class:`Graph`; ``caller``
    is the public function the message names (``"simulate"``)."""
    if not isinstance(graph, Graph):
        raise GraphError(f"{caller}() takes a nirbridge.Graph, got {type(graph).__name__}. "
                         "Fix: nb.load(path) or nb.Graph.from_nir(nir_graph)")


def _as_str(x: Any, where: str) -> str:
    if isinstance(x, bytes):
        return x.decode("utf8")
    if not isinstance(x, str):
        raise node_error(GraphError, where, "edges", f"edge end {x!r} is not a node name (a string)",
                         "name edge ends by node names")
    return str(x)


def _fmt(shape: Shape | None) -> str:
    return "?" if shape is None else "x".join(str(d) for d in shape) or "()"


def _node_from_nir(name: str, obj: Any, prefix: str = "", depth: int = 0) -> Node:
    if isinstance(obj, nir.NIRGraph):
        sub = Graph.from_nir(obj, _nested=True, _prefix=prefix + name + ".", _depth=depth + 1)
        meta = obj.metadata if isinstance(obj.metadata, Mapping) else {}
        return Node(name, SUBGRAPH, MappingProxyType({}), _freeze(dict(meta)), sub)
    spec = spec_for_nir(obj, prefix + name)
    params = {}
    for f in spec.fields:
        v = getattr(obj, f)
        if f in spec.float_params:
            v = _as_array(prefix + name, f, v)
        params[f] = _freeze(v)
    meta = getattr(obj, "metadata", None)
    meta = meta if isinstance(meta, Mapping) else {}
    return Node(name, spec.type, MappingProxyType(params), _freeze(dict(meta)))


def _nested_candidates(nodes: Mapping[str, Node], end: str) -> list[str]:
    """Nested graphs whose name is a dotted prefix of ``end``, longest name first (found by trying
    each dot of ``end``: time linear in the length of the name, not in the number of nodes)."""
    out = []
    i = end.rfind(".")
    while i > 0:
        s = end[:i]
        node = nodes.get(s)
        if node is not None and node.subgraph is not None:
            out.append(s)
        i = end.rfind(".", 0, i)
    return out


def _resolvable(nodes: Mapping[str, Node], end: str) -> bool:
    if end in nodes:
        return True
    return any(_resolvable(nodes[s].subgraph.nodes, end[len(s) + 1 :]) for s in _nested_candidates(nodes, end))


def _replace(g: Graph, params: dict, prefix: str, names: Mapping[int, str] | None = None) -> Graph:
    if names is None:  # each leaf node's flat name, as the plan gives it (e.g. "[sub.lif]" beside "sub.lif")
        names = {id(s.node): s.name for s in g.plan.steps}
    nodes = {}
    for name, node in g.nodes.items():
        flat = names.get(id(node), prefix + name)
        if node.subgraph is not None:
            sub = _replace(node.subgraph, params, prefix + name + ".", names)
            nodes[name] = Node(name, node.type, node.params, node.metadata, sub)
        elif flat in params:
            new = dict(node.params)
            for k, v in params.pop(flat).items():
                if k not in new:
                    raise node_error(ParameterError, flat, k, f"{node.type} has no parameter {k!r}",
                                     f"use one of {list(new)}")
                new[k] = _freeze(v if isinstance(v, (np.ndarray, np.generic, Mapping, str)) or v is None
                                 else np.asarray(v))
            nodes[name] = Node(name, node.type, MappingProxyType(new), node.metadata)
        else:
            nodes[name] = node
    if not prefix and params:
        raise node_error(GraphError, sorted(params)[0], None, f"no nodes named {sorted(params)} in the graph",
                         "use flat names from graph.plan.names")
    return Graph(nodes, g.edges, g.metadata, _nested=bool(prefix), _prefix=prefix)


# ---------------------------------------------------------------------- the execution plan
def _flatten(g: Graph, flat: dict, edges: list) -> None:
    """Every leaf node of ``g`` and its nested graphs under its flat name, and every edge between
    flat names. A nested node ``lif`` of ``sub`` is ``sub.lif``; a node whose own name holds dots
    and clashes with such a name (a node named ``sub.lif`` beside a nested ``sub`` holding ``lif``,
    legal in NIR) is written in brackets, ``[sub.lif]``, so both stay addressable."""
    leaves: list[tuple[Any, str, str, Node, str]] = []  # (graph key, local name, flat name, node, role)
    raw_edges: list[tuple[Graph, str, str, str]] = []
    stack = [(g, "", True, iter(g.nodes.items()))]  # pre-order, as a recursive walk would go
    while stack:
        sub, prefix, top, it = stack[-1]
        item = next(it, None)
        if item is None:
            stack.pop()
            raw_edges.extend((sub, prefix, a, b) for a, b in sub.edges)
            continue
        name, node = item
        if node.subgraph is not None:
            stack.append((node.subgraph, prefix + name + ".", False, iter(node.subgraph.nodes.items())))
            continue
        role = "compute"
        if node.type in ("Input", "Output"):
            role = ("input" if node.type == "Input" else "output") if top else "identity"
        leaves.append((id(sub.nodes), name, prefix + name, node, role))
    counts: dict[str, int] = {}
    for _, _, fname, _, _ in leaves:
        counts[fname] = counts.get(fname, 0) + 1
    key_to_flat: dict[tuple[int, str], str] = {}
    for key, name, fname, node, role in leaves:
        if counts[fname] > 1 and "." in name:
            fname = fname[: len(fname) - len(name)] + f"[{name}]"
        if fname in flat:
            raise node_error(GraphError, fname, "nodes",
                             f"two nodes have the flat name {fname!r} (a dotted name clashes with a nested node)",
                             "rename one of them")
        flat[fname] = (node, role)
        key_to_flat[(key, name)] = fname
    for sub, prefix, a, b in raw_edges:
        edges.append((key_to_flat[_resolve(sub.nodes, prefix, a, "source")],
                      key_to_flat[_resolve(sub.nodes, prefix, b, "target")]))


def _resolve(nodes: Mapping[str, Node], prefix: str, end: str, role: str) -> tuple[int, str]:
    """The leaf node an edge end names: ``(id of its graph's node mapping, its local name)``."""
    while True:
        if end in nodes:
            node = nodes[end]
            if node.subgraph is None:
                return (id(nodes), end)
            cands = node.subgraph.inputs if role == "target" else node.subgraph.outputs
            kind = "Input" if role == "target" else "Output"
            if len(cands) != 1:
                raise node_error(GraphError, prefix + end, "edges",
                                 f"an edge uses nested graph {end!r} as {role} but it has {len(cands)} {kind} "
                                 f"nodes {cands}", f"name one in the edge, e.g. '{end}.{cands[0] if cands else kind}'")
            nodes, prefix, end = node.subgraph.nodes, prefix + end + ".", cands[0]
            continue
        for s in _nested_candidates(nodes, end):
            if _resolvable(nodes[s].subgraph.nodes, end[len(s) + 1 :]):
                nodes, prefix, end = nodes[s].subgraph.nodes, prefix + s + ".", end[len(s) + 1 :]
                break
        else:
            raise node_error(GraphError, prefix + end, "edges", "edge end does not name a node", "fix the edge")


def _build_plan(g: Graph) -> Plan:
    flat: dict[str, tuple[Node, str]] = {}
    edges: list[tuple[str, str]] = []
    _flatten(g, flat, edges)
    seen: set[tuple[str, str]] = set()
    for a, b in edges:  # e.g. ("a", "sub") and ("a", "sub.input"): one edge, summed twice
        if (a, b) not in seen:
            seen.add((a, b))
            continue
        raise node_error(GraphError, b, "edges", f"two edges resolve to the same edge {a!r} -> {b!r} (one names "
                         "a nested graph, the other its Input or Output)", "remove one of them")
    succ: dict[str, list[str]] = {n: [] for n in flat}
    pred: dict[str, list[str]] = {n: [] for n in flat}
    for a, b in edges:
        succ[a].append(b)
        pred[b].append(a)
    inputs = [n for n, (_, r) in flat.items() if r == "input"]
    outputs = [n for n, (_, r) in flat.items() if r == "output"]

    # depth-first search from the inputs (name order): back edges are the recurrent ones
    order_index: dict[str, int] = {}
    recurrent: set[tuple[str, str]] = set()
    state = {}  # 1 = on stack, 2 = done
    for root in sorted(inputs):
        if root in state:
            continue
        stack = [(root, iter(sorted(succ[root])))]
        state[root] = 1
        order_index[root] = len(order_index)
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                continue
            st = state.get(nxt)
            if st == 1:
                recurrent.add((node, nxt))
            elif st is None:
                state[nxt] = 1
                order_index[nxt] = len(order_index)
                stack.append((nxt, iter(sorted(succ[nxt]))))
    unreachable = [n for n in flat if n not in state]
    if unreachable:
        n = unreachable[0]
        raise node_error(GraphError, n, "edges",
                         f"no path from any Input reaches it ({len(unreachable)} such nodes: {unreachable[:5]})",
                         "connect it to an Input or remove it")
    _check_cycles(flat, edges)

    # Kahn's algorithm over forward edges, ties broken by discovery order
    fwd_in = {n: 0 for n in flat}
    for a, b in edges:
        if (a, b) not in recurrent:
            fwd_in[b] += 1
    ready = [(order_index[n], n) for n in flat if fwd_in[n] == 0]
    heapq.heapify(ready)
    topo: list[str] = []
    while ready:
        _, n = heapq.heappop(ready)
        topo.append(n)
        for m in succ[n]:
            if (n, m) in recurrent:
                continue
            fwd_in[m] -= 1
            if fwd_in[m] == 0:
                heapq.heappush(ready, (order_index[m], m))

    # shapes, in execution order
    out_shape: dict[str, Shape] = {}
    steps = []
    for n in topo:
        node, role = flat[n]
        spec = node.spec
        sources = tuple((a, (a, n) in recurrent) for a in pred[n])
        if role == "input":
            shp = spec.expected_input(n, node.params)
            if shp is None:
                raise node_error(ShapeError, n, "input_type", "the Input node has no shape",
                                 "give the Input a shape, e.g. nir.Input(input_type=np.array([N]))")
            steps.append(Step(n, node, (), shp, shp, role))
            out_shape[n] = shp
            continue
        fwd = {a: out_shape[a] for a, rec in sources if not rec}
        shapes = set(fwd.values())
        if len(shapes) != 1:
            raise node_error(ShapeError, n, "input", f"its incoming edges carry different shapes {fwd}",
                             "edges summed into one node must carry the same shape")
        in_shape = shapes.pop()
        expected = spec.expected_input(n, node.params)
        if expected is not None and tuple(expected) != in_shape:
            src = ", ".join(f"{a} {_fmt(s)}" for a, s in fwd.items())
            raise node_error(ShapeError, n, _shape_field(spec, tuple(expected), in_shape),
                             f"{node.type} expects input shape {_fmt(expected)} but receives {_fmt(in_shape)} "
                             f"from {src}", "make the parameter shapes match the incoming shape")
        o = check_shape(n, "output", spec.output_shape(n, node.params, in_shape))
        out_shape[n] = tuple(o)
        steps.append(Step(n, node, sources, in_shape, tuple(o), role))
    in_shape_of = {s.name: s.input_shape for s in steps}
    for a, b in sorted(recurrent):
        if out_shape[a] != in_shape_of[b]:
            raise node_error(ShapeError, b, "input",
                             f"recurrent edge from {a!r} carries shape {_fmt(out_shape[a])}, the node takes "
                             f"{_fmt(in_shape_of[b])}", "make the recurrent weights map back to the node's shape")
    return Plan(tuple(steps), tuple(inputs), tuple(outputs), tuple(sorted(recurrent)))


def _shape_field(spec: NodeSpec, expected: Shape, got: Shape) -> str:
    """The field that fixes the input shape a node expects, for an error message."""
    if spec.type in ("Input", "Output", "Flatten"):
        return "output_type" if spec.type == "Output" else "input_type"
    if spec.type in ("Conv1d", "Conv2d"):  # channels come from the weight, sizes from input_shape
        return "weight" if len(expected) != len(got) or expected[0] != got[0] else "input_shape"
    return spec.float_params[0] if spec.float_params else "input"


def _check_cycles(flat: Mapping[str, tuple[Node, str]], edges: Sequence[tuple[str, str]]) -> None:
    """Every cycle must pass through a node with state; a cycle of stateless nodes has no meaning.

    So the graph restricted to the stateless nodes must be acyclic (checking strongly connected
    components of the whole graph is not enough: a neuron in one loop would hide a stateless loop
    beside it)."""
    stateless = {n for n, (node, _) in flat.items() if not node.spec.stateful}
    flat = {n: v for n, v in flat.items() if n in stateless}
    succ: dict[str, list[str]] = {n: [] for n in flat}
    for a, b in edges:
        if a in stateless and b in stateless:
            succ[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    counter = [0]
    for root in flat:  # iterative Tarjan
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter[0]
                counter[0] += 1
                stack.append(v)
                on.add(v)
            recurse = False
            for j in range(i, len(succ[v])):
                w = succ[v][j]
                if w not in index:
                    work.append((v, j + 1))
                    work.append((w, 0))
                    recurse = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if recurse:
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in succ[v]:
                    raise node_error(GraphError, sorted(comp)[0], "edges",
                                     f"the cycle through {sorted(comp)} has no node with state, so it has no "
                                     "defined value", "put a neuron or a Delay inside the loop")
            if work:
                u = work[-1][0]
                low[u] = min(low[u], low[v])
