"""The legacy module graph: which module's output feeds which module, recorded by running the model.

``extract_torch_graph(model, sample_data)`` runs ``model`` once with every ``Module.__call__``
observed, links the tensors each module consumes and produces, and then drops the tensors, leaving
module -> module edges (:class:`TorchGraph` of :class:`Node`). Sinabs reads this graph;
``extract_nir_graph`` and the graph executor build on it.
"""

from __future__ import annotations

import warnings
from numbers import Number
from typing import Any

import torch
import torch.nn as nn

from ..errors import GraphError
from .utils import CallError, sanitize_name

__all__ = ["Node", "TorchGraph", "Graph", "GraphTracer", "extract_torch_graph", "named_modules_map",
           "module_forward_wrapper"]


def named_modules_map(model: nn.Module, model_name: str | None = "model") -> dict[nn.Module, str]:
    """``{module: dotted name}`` of ``model``'s modules, without ``nn.Sequential`` containers;
    ``model`` itself is named ``model_name`` (left out when ``None``)."""
    out = {m: n for n, m in model.named_modules() if not isinstance(m, nn.Sequential)}
    if model_name is None:
        out.pop(model, None)
    else:
        out[model] = model_name
    return out


class Node:
    """A graph vertex holding ``elem`` (a module or a tensor); equal when ``elem`` is the same object."""

    def __init__(self, elem: Any, name: str, outgoing_nodes: dict[Node, Any] | None = None) -> None:
        self.elem = elem
        self.name = name
        self.outgoing_nodes = dict(outgoing_nodes) if outgoing_nodes else {}

    def add_outgoing(self, node: Node, shape=None) -> None:
        self.outgoing_nodes[node] = shape

    def __repr__(self) -> str:
        return f"Node: {self.name} ({type(self.elem)}), Out: {len(self.outgoing_nodes)}"

    __str__ = __repr__

    def __eq__(self, other: Any) -> bool:
        return self.elem is getattr(other, "elem", object())

    def __hash__(self) -> int:
        return hash(self.elem)


class TorchGraph:
    """Nodes (``node_list``, in the order first seen) with their outgoing edges."""

    def __init__(self, module_names: dict[nn.Module, str], inputs=None, module_output_types=None) -> None:
        self.module_names = module_names
        self.node_list: list[Node] = []
        self.module_output_types = {} if module_output_types is None else module_output_types
        self.inputs = inputs
        self._tensor_count = -1

    # -- building
    @staticmethod
    def from_torch_modules(nodes: dict[str, nn.Module], edges) -> TorchGraph:
        g = TorchGraph({m: sanitize_name(n) for n, m in nodes.items()}, inputs=set())
        g._discover_inputs(edges)
        return g

    def _discover_inputs(self, edges) -> None:
        by_name = {n: m for m, n in self.module_names.items()}
        for a, b in edges:
            if a not in by_name and f"{a}.output" in by_name:
                a = f"{a}.output"
            if b not in by_name and f"{b}.input" in by_name:
                b = f"{b}.input"
            self.add_edge(by_name[a], by_name[b])
        if not self.node_list:
            raise GraphError("Cannot find the input of an empty graph")
        if len(self.node_list) == 1:
            self.inputs = set(self.node_list)
        else:
            targets = {t for n in self.node_list for t in n.outgoing_nodes}
            self.inputs = {n for n in self.node_list if n not in targets}

    def __contains__(self, elem: Any) -> bool:
        return any(n.elem is elem for n in self.node_list)

    def find_node(self, elem: Any) -> Node:
        for n in self.node_list:
            if n.elem is elem:
                return n
        raise GraphError("elem not found")

    def add_elem(self, elem: Any, name: str) -> Node:
        if elem in self:
            warnings.warn(f"{name}: Node already exists for this element ", stacklevel=2)
            return self.find_node(elem)
        node = Node(elem, name)
        self.node_list.append(node)
        return node

    def get_unique_tensor_id(self) -> str:
        self._tensor_count += 1
        return str(self._tensor_count)

    def add_or_get_node_for_elem(self, elem: Any) -> Node:
        if elem in self:
            return self.find_node(elem)
        if elem in self.module_names:
            name = self.module_names[elem]
        else:
            if isinstance(elem, Number):
                elem = torch.as_tensor(elem)
            if not isinstance(elem, torch.Tensor):
                raise GraphError(f"Unknown element type {type(elem)}")
            name = f"Tensor_{self.get_unique_tensor_id()}{tuple(elem.shape)}"
        return self.add_elem(elem, name)

    def _unknown_module(self, elem) -> bool:
        return isinstance(elem, nn.Module) and elem not in self.module_names

    def add_edge(self, source: Any, destination: Any, shape=None):
        if self._unknown_module(source) or self._unknown_module(destination):
            return None
        if source is None or destination is None:
            return None
        s = self.add_or_get_node_for_elem(source)
        d = self.add_or_get_node_for_elem(destination)
        s.add_outgoing(d, shape)
        return s, d

    def populate_from(self, other: TorchGraph) -> None:
        self.module_output_types.update(other.module_output_types)
        for n in other.node_list:
            for o, shape in n.outgoing_nodes.items():
                self.add_edge(n.elem, o.elem, shape)

    # -- queries and filters
    def num_edges(self) -> int:
        return sum(len(n.outgoing_nodes) for n in self.node_list)

    def get_edges(self):
        return [(n.name, o.name) for n in self.node_list for o in n.outgoing_nodes]

    def get_root(self):
        return self.inputs

    def find_source_nodes_of(self, node: Node) -> list[Node]:
        return [s for s in self.node_list for o in s.outgoing_nodes if o == node]

    def get_leaf_modules(self) -> dict[nn.Module, str]:
        return {m: n for m, n in self.module_names.items()
                if not any(c in self for _, c in m.named_children())}

    def leaf_only(self) -> TorchGraph:
        g = TorchGraph(self.get_leaf_modules(), inputs=self.inputs)
        g.populate_from(self)
        return g

    def ignore_submodules_of(self, classes: list[type]) -> TorchGraph:
        skip = set()
        for m in self.module_names:
            if m.__class__ in classes:
                skip.update(id(s) for s in m.modules() if s is not m)
        g = TorchGraph({m: n for m, n in self.module_names.items() if id(m) not in skip},
                       inputs=self.inputs, module_output_types=self.module_output_types)
        g.populate_from(self)
        return g

    def ignore_tensors(self) -> TorchGraph:
        return self.ignore_nodes(torch.Tensor)

    def ignore_nodes(self, class_type: type) -> TorchGraph:
        g = TorchGraph({m: n for m, n in self.module_names.items() if not isinstance(m, class_type)},
                       inputs=self.inputs, module_output_types=self.module_output_types)
        for n in self.node_list:
            if isinstance(n.elem, class_type):
                for s in self.find_source_nodes_of(n):
                    for o, shape in n.outgoing_nodes.items():
                        g.add_edge(s.elem, o.elem, shape)
            else:
                for o, shape in n.outgoing_nodes.items():
                    if not isinstance(o.elem, class_type):
                        g.add_edge(n.elem, o.elem, shape)
        return g

    # -- printing
    def debug_str(self) -> str:
        lines = []
        for n in self.node_list:
            lines.append(f"{n.name} ({n.elem.__class__.__name__})")
            lines += [f"\t-> {o.name} ({o.elem.__class__.__name__})" for o in n.outgoing_nodes]
        return "\n".join(lines)

    def to_md(self) -> str:
        body = "".join(
            "".join(f"{n.name} --> {o.name};\n" for o in n.outgoing_nodes) if n.outgoing_nodes else f"{n.name};\n"
            for n in self.node_list)
        return "```mermaid\ngraph TD;\n" + body + "\n```\n"

    __str__ = to_md


Graph = TorchGraph  # the name older releases used


def module_forward_wrapper(model_graph: TorchGraph, output_types: dict, call=None):
    """A replacement for ``nn.Module.__call__`` that calls the module (with ``call``, default the
    current ``nn.Module.__call__``) and records, in ``model_graph``, an edge from each positional
    input to the module and from the module to its output (the first element of a tuple), and the
    output's shape in ``output_types``."""
    original = nn.Module.__call__ if call is None else call

    def wrapped(mod, *args, **kwargs):
        out = original(mod, *args, **kwargs)
        first = out[0] if isinstance(out, tuple) else out
        if not isinstance(first, torch.Tensor):
            raise CallError(f"module {type(mod).__name__} returned {type(out).__name__}; expected a tensor "
                            "or a tuple starting with one")
        output_types[mod] = first.shape
        for a in args:
            model_graph.add_edge(a, mod, a.shape if isinstance(a, torch.Tensor) else None)
        model_graph.add_edge(mod, first, first.shape)
        return out

    return wrapped


class GraphTracer:
    """Context manager recording module -> tensor -> module links while a model runs."""

    def __init__(self, module_map: dict[nn.Module, str]) -> None:
        self.output_types: dict[nn.Module, Any] = {}
        self.graph = TorchGraph(module_map, module_output_types=self.output_types)
        self._saved = None

    def _wrapped(self):
        return module_forward_wrapper(self.graph, self.output_types, self._saved)

    def __enter__(self) -> GraphTracer:
        self._saved = nn.Module.__call__
        nn.Module.__call__ = self._wrapped()
        return self

    def __exit__(self, *exc) -> None:
        nn.Module.__call__ = self._saved
        pruned = self.graph.ignore_tensors()
        if not pruned.node_list and len(self.graph.node_list) == 3:  # one module between two tensors
            module, name = next(iter(self.graph.module_names.items()))
            pruned = TorchGraph(self.graph.module_names, [name])
            pruned.node_list.append(Node(module, name))
        self.graph = pruned
        self.graph._discover_inputs(self.graph.get_edges())


def extract_torch_graph(model: nn.Module, sample_data: Any, model_name: str | None = "model",
                        model_args=()) -> TorchGraph:
    """Run ``model(sample_data, *model_args)`` once (no grad) and return its module graph.

    Only computation inside modules is seen; ``model_name=None`` leaves the top module out."""
    with GraphTracer(named_modules_map(model, model_name=model_name)) as tracer, torch.no_grad():
        model(sample_data, *model_args)
    tracer.graph.module_output_types = tracer.output_types
    return tracer.graph
