"""The legacy graph executor: runs a :class:`~.graph.TorchGraph` of modules one step per call.

Norse, Sinabs and Rockpool import through it (``nirtorch.load``); Rockpool reads its ``graph``
(``node_list``, ``find_source_nodes_of``), ``execution_order`` and submodules by node name.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from typing import Any

import torch
from torch import nn

from ..errors import GraphError
from .graph import Node, TorchGraph
from .graph_utils import trace_execution
from .utils import sanitize_name

__all__ = ["GraphExecutor", "GraphExecutorState"]


@dataclasses.dataclass
class GraphExecutorState:
    """``state``: each stateful module's state; ``cache``: each node's latest output (read by
    recurrent edges in the next step)."""

    state: dict[str, Any] = dataclasses.field(default_factory=dict)
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)


def _snntorch_kind(module) -> str | None:
    cls = type(module)
    if cls.__module__.startswith("snntorch") and cls.__name__ in ("Synaptic", "RSynaptic", "Leaky", "RLeaky"):
        return cls.__name__
    return None


class GraphExecutor(nn.Module):
    """Runs ``graph`` depth-first from its (first) input: ``forward(x, state=None) -> (y, state)``
    (``y`` alone with ``return_state=False``). Several inputs to a node are summed; an input not
    yet computed in this step is taken from the previous step's cache."""

    def __init__(self, graph: TorchGraph, return_state: bool = True) -> None:
        super().__init__()
        self.graph = graph
        self.stateful_modules = set()
        self.return_state = return_state
        self.instantiate_modules()
        self.execution_order = self.get_execution_order()
        if not self.execution_order:
            raise GraphError("Graph is empty")

    def _is_module_stateful(self, module: nn.Module) -> bool:
        if _snntorch_kind(module):  # snnTorch neurons carry their state inside unless init_hidden is off
            return not module.init_hidden
        params = inspect.signature(module.forward).parameters
        return "state" in params and len(params) > 1

    def instantiate_modules(self) -> None:
        for mod, name in self.graph.module_names.items():
            if mod is not None:
                self.add_module(sanitize_name(name), mod)
                if self._is_module_stateful(mod):
                    self.stateful_modules.add(sanitize_name(name))

    def get_execution_order(self) -> list[Node]:
        names = set(self.graph.module_names.values())
        inputs = []
        for n in self.graph.inputs:
            if n.name in names:
                inputs.append(n)
            else:
                logging.warning(f"Input node {n.name} not found in module names. Skipping.")
        if not inputs:
            raise GraphError("No input nodes found, we require at least one.")
        if len(inputs) > 1:
            logging.warning("Multiple input nodes found. Using the first node as the input.")
        return trace_execution(inputs[0], lambda n: n.outgoing_nodes.keys())

    def get_input_nodes(self) -> list[Node]:
        return self.graph.get_root()

    def _apply_module(self, node: Node, input_nodes: list[Node], new_state: GraphExecutorState,
                      old_state: GraphExecutorState, data: torch.Tensor | None = None):
        args = []
        if node.name in self.stateful_modules and node.name in old_state.state:
            args.extend(old_state.state[node.name])
        xs = [] if data is None else [data]
        for i in input_nodes:
            if i.name in new_state.cache:
                xs.append(new_state.cache[i.name])
            elif i.name in old_state.cache:
                xs.append(old_state.cache[i.name])
        if not xs:
            raise GraphError(f"No inputs found for node {node.name}")
        args.insert(0, xs[0] if len(xs) == 1 else torch.stack(xs).sum(0))
        out = node.elem(*args)
        if _snntorch_kind(node.elem) == "RSynaptic" and not node.elem.init_hidden:
            new_state.state[node.name] = out  # snnTorch's RSynaptic wants its output inside its state
            out = out[0]
        elif node.name in self.stateful_modules:
            new_state.state[node.name] = out[1:]
            out = out[0]
        return out, new_state

    def forward(self, data: torch.Tensor, state: GraphExecutorState | None = None):
        state = GraphExecutorState() if state is None else state
        new = GraphExecutorState()
        first = True
        node = None
        for node in self.execution_order:
            if node.elem is None:
                continue
            out, new = self._apply_module(node, self.graph.find_source_nodes_of(node), new, state,
                                          data if first else None)
            new.cache[node.name] = out
            first = False
        if node.name not in new.cache:  # a dummy output node: the one before it
            node = self.execution_order[-2]
        y = new.cache[node.name]
        return (y, new) if self.return_state else y
