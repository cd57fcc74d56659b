"""``load``: the legacy NIR -> torch route through :class:`~.graph_executor.GraphExecutor`."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import nir
import torch
import torch.nn as nn

from .graph import TorchGraph
from .graph_executor import GraphExecutor
from .utils import sanitize_name

__all__ = ["load", "GraphExecutor"]


def _switch_default_models(node: nir.NIRNode) -> torch.nn.Module | None:
    if isinstance(node, (nir.Input, nir.Output)):
        m = torch.nn.Identity()
        m.node_type = "input" if isinstance(node, nir.Input) else "output"
        return m
    return None


def _map_graph_to_torch(graph: nir.NIRGraph, model_map: Callable, return_state: bool = True) -> GraphExecutor:
    modules = {}
    for name, node in graph.nodes.items():
        m = model_map(node)
        if m is None:
            m = (_map_graph_to_torch(node, model_map, return_state) if isinstance(node, nir.NIRGraph)
                 else _switch_default_models(node))
        modules[sanitize_name(name)] = m
    edges = [(sanitize_name(a), sanitize_name(b)) for a, b in graph.edges]
    return GraphExecutor(TorchGraph.from_torch_modules(modules, edges), return_state=return_state)


def load(nir_graph: nir.NIRNode | str, model_map: Callable[[nir.NIRNode], nn.Module],
         return_state: bool = True) -> nn.Module:
    """Legacy: build a :class:`GraphExecutor` from a NIR graph (or path) with ``model_map(node) -> module``
    (``None``: recurse into a subgraph / identity for Input and Output). Prefer :func:`nir_to_torch`.

    Warns ``DeprecationWarning`` as NIRTorch does."""
    warnings.warn("nirtorch.load is deprecated in favour of nirtorch.nir_to_torch", DeprecationWarning,
                  stacklevel=2)
    if isinstance(nir_graph, str):
        nir_graph = nir.read(nir_graph)
    return _map_graph_to_torch(nir_graph, model_map, return_state=return_state)
