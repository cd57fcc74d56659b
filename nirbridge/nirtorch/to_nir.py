"""``extract_nir_graph``: the legacy torch -> NIR route (snnTorch, Norse, Sinabs, Rockpool export with it).

The model runs once on ``sample_data``; each module of the recorded graph is mapped with
``model_map(module)``; a mapped ``NIRGraph`` is inlined (its nodes named ``<module>.<node>``, its
Input/Output nodes removed and their edges joined through).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import nir
import numpy as np
import torch.nn as nn

from ..errors import UnsupportedError
from .graph import extract_torch_graph

__all__ = ["extract_nir_graph"]


def _drop(shape, dims):
    return np.delete(np.asarray(shape), dims) if dims else np.asarray(shape)


def extract_nir_graph(model: nn.Module, model_map: Callable[[nn.Module], nir.NIRNode], sample_data: Any,
                      model_name: str | None = "model", ignore_submodules_of=None, model_fwd_args=(),
                      ignore_dims: Sequence[int] | None = None) -> nir.NIRNode:
    """Legacy: the NIR graph of ``model`` (run once on ``sample_data``); ``ignore_dims`` (e.g. batch
    and time) are left out of the Input/Output shapes. Prefer :func:`torch_to_nir`.

    Warns ``DeprecationWarning`` as NIRTorch does."""
    warnings.warn("nirtorch.extract_nir_graph is deprecated in favour of nirtorch.torch_to_nir",
                  DeprecationWarning, stacklevel=2)
    if list(model.children()):
        model_name = None
    tg = extract_torch_graph(model, sample_data=sample_data, model_name=model_name, model_args=model_fwd_args)
    if ignore_submodules_of is not None:
        tg = tg.ignore_submodules_of(ignore_submodules_of)

    nodes = {"input": nir.Input(_drop(sample_data.shape, ignore_dims))}
    edges = []
    sub_keys, sub_io = [], []
    for i, node in enumerate(tg.node_list):
        mapped = model_map(node.elem)
        if isinstance(mapped, nir.NIRGraph):
            sub_keys.append(node.name)
            for k, v in mapped.nodes.items():
                if isinstance(v, nir.NIRGraph):
                    raise UnsupportedError(f"module {node.name!r} maps to a graph holding a graph {k!r}; "
                                              "only one level of nesting is supported")
                key = f"{node.name}.{k}"
                if isinstance(v, (nir.Input, nir.Output)):
                    sub_io.append(key)
                nodes[key] = v
            edges += [(f"{node.name}.{a}", f"{node.name}.{b}") for a, b in mapped.edges]
        else:
            nodes[node.name] = mapped
        if i == 0:  # the input feeds the first recorded node (NIRTorch chains the keys seen so far)
            keys = list(nodes)
            edges += list(zip(keys[:-1], keys[1:]))

    for node in tg.node_list:
        edges += [(node.name, d.name) for d in node.outgoing_nodes]
        if not node.outgoing_nodes:
            nodes["output"] = nir.Output(_drop(tg.module_output_types[node.elem], ignore_dims))
            edges.append((node.name, "output"))

    edges = list(set(edges))
    edges = [((f"{a}.output" if a in sub_keys else a), (f"{b}.input" if b in sub_keys else b)) for a, b in edges]
    for key in sub_io:
        ins = [a for a, b in edges if b == key]
        outs = [b for a, b in edges if a == key]
        edges = [e for e in edges if key not in e] + [(a, b) for a in ins for b in outs]
        nodes.pop(key)
    loops = [e for e in edges if e[0] == e[1]]
    for e in loops:
        logging.warning(f"removing self-connection {e}")
    edges = [e for e in edges if e[0] != e[1]]
    return nir.NIRGraph(nodes, edges, type_check=False)
