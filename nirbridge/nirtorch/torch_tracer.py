"""``torch_to_nir``: trace a torch module with ``torch.fx`` and map its leaf modules to NIR nodes.

Node names are those of the traced ``torch.fx`` nodes (as NIRTorch 2.x names them). Additions
between modules become fan-in edges; ``getitem`` on the ``(output, state)`` tuple of a module in
``stateful_modules`` follows the output (index 0) and drops the state.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import nir
import numpy as np
import torch

from ..errors import UnsupportedError

__all__ = ["torch_to_nir", "NIRTorchTracer", "DEFAULT_MAP"]


class UnmappedModuleError(UnsupportedError, ValueError):
    """A traced leaf module with no entry in ``module_map`` (a ``ValueError`` too)."""


def _map_linear(module: torch.nn.Linear) -> nir.NIRNode:
    w = module.weight.detach().cpu().numpy()
    if module.bias is None:
        return nir.Linear(w)
    return nir.Affine(w, module.bias.detach().cpu().numpy())


DEFAULT_MAP: dict[type, Callable[[torch.nn.Module], nir.NIRNode]] = {torch.nn.Linear: _map_linear}


class NIRTorchTracer(torch.fx.Tracer):
    """A ``torch.fx.Tracer`` that keeps the given module types (and modules with a true
    ``_is_leaf_module`` attribute) as leaves instead of tracing into them."""

    def __init__(self, custom_leaf_modules=None, **kwargs):
        super().__init__(**kwargs)
        self.custom_leaf_modules = tuple(custom_leaf_modules) if custom_leaf_modules is not None else None

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        if self.custom_leaf_modules and isinstance(m, self.custom_leaf_modules):
            return True
        if getattr(m, "_is_leaf_module", False):
            return True
        return super().is_leaf_module(m, module_qualified_name)


class UntraceableError(UnsupportedError, ValueError):
    """A traced operation with no NIR counterpart (a ``ValueError`` too)."""


def _unsupported(what: str, node) -> UnsupportedError:
    return UntraceableError(f"traced {what} {node.target!r} (fx node {node.name!r}) has no NIR counterpart; "
                            "only additions between modules are supported. "
                            "Fix: move it into a module that module_map maps")


def torch_to_nir(module: torch.nn.Module, module_map: dict[type, Callable | None] | None = None,
                 default_dict: dict[type, Callable] | None = DEFAULT_MAP, type_check: bool = True,
                 stateful_modules: set[type[torch.nn.Module]] | None = None,
                 concrete_args: dict[str, Any] | None = None) -> nir.NIRNode:
    """Trace ``module`` and return its NIR graph (or the NIR node of a single mapped leaf module).

    Args:
        module_map: ``{module type: function(module) -> nir node}``; it overrides ``default_dict``
            (:data:`DEFAULT_MAP`: ``torch.nn.Linear`` -> ``Linear``/``Affine``). An entry of ``None``
            bypasses modules of that type (their inputs pass through to their users).
        type_check: passed to ``nir.NIRGraph``.
        stateful_modules: module types returning ``(output, state)``; ``out[0]`` is followed, the state dropped.
        concrete_args: passed to ``torch.fx`` (e.g. ``{"state": None}``).

    Raises:
        ValueError: a leaf module type missing from the maps (naming the module), or a traced
            operation other than addition.
    """
    full = dict(default_dict or {})
    full.update(module_map or {})
    if type(module) in full and full[type(module)] is not None:
        return full[type(module)](module)
    tracer = NIRTorchTracer(full.keys())
    traced = tracer.trace(module, concrete_args=concrete_args)
    if len(traced.nodes) == 2 and not list(module.children()):
        raise UnmappedModuleError(
            f"the module is a leaf of type {type(module).__name__} with no entry in module_map. "
            f"Fix: add {{{type(module).__name__}: <function returning a nir node>}} to module_map")
    gm = torch.fx.GraphModule(tracer.root, traced)

    nodes: dict[str, nir.NIRNode] = {}
    through: set[torch.fx.Node] = set()  # replaced by their inputs
    dropped: set[torch.fx.Node] = set()
    first_placeholder = True
    for n in traced.nodes:
        if n.op == "placeholder":
            if n.target == "input" or first_placeholder:
                nodes[n.name] = nir.Input(input_type=None)
            else:
                dropped.add(n)
            first_placeholder = False
        elif n.op == "output":
            nodes[n.name] = nir.Output(output_type=None)
        elif n.op == "call_function":
            if n.target in (operator.add, torch.add):
                through.add(n)
            elif getattr(n.target, "__name__", "") == "_assert_is_none":
                dropped.add(n)
            elif n.target == operator.getitem:
                src = n.args[0]
                if (stateful_modules and isinstance(src, torch.fx.Node) and src.op == "call_module"
                        and type(gm.get_submodule(src.target)) in stateful_modules):
                    (through if n.args[1] == 0 else dropped).add(n)
                else:
                    raise UntraceableError(
                        f"getitem (fx node {n.name!r}) is only followed on the (output, state) result of a module "
                        "type listed in stateful_modules. Fix: add that module type to stateful_modules")
            else:
                raise _unsupported("function", n)
        elif n.op == "call_method":
            if n.target == "add":
                through.add(n)
            else:
                raise _unsupported("method", n)
        elif n.op == "call_module":
            sub = gm.get_submodule(n.target)
            if type(sub) not in full:
                raise UnmappedModuleError(
                    f"module {n.target!r} of type {type(sub).__name__} has no entry in module_map. Fix: add "
                    f"{{{type(sub).__name__}: <function returning a nir node>}} to module_map, or None to bypass it")
            fn = full[type(sub)]
            mapped = None if fn is None else fn(sub)
            if mapped is None:  # bypassed: its inputs go straight to its users
                through.add(n)
            else:
                nodes[n.name] = mapped
        elif n.op == "get_attr":
            through.add(n)
        else:
            raise _unsupported(n.op, n)

    def sources(n):
        out = []
        for i in n.all_input_nodes:
            if i in dropped:
                continue
            out.extend(sources(i) if i in through else [i])
        return out

    edges = []
    for n in traced.nodes:
        if n.name in nodes:
            for s in sources(n):
                if s.name in nodes and (s.name, n.name) not in edges:
                    edges.append((s.name, n.name))

    for name, node in nodes.items():
        if isinstance(node, nir.Input):
            types = [nodes[b].input_type for a, b in edges if a == name]
            if types:
                first = types[0]
                for t in types[1:]:
                    same = all(np.array_equal(x, y) for x, y in zip(first.values(), t.values()))
                    if len(t) != len(first) or not same:
                        raise UnsupportedError(f"the users of input {name!r} expect different input types "
                                               f"({first} and {t}). Fix: give them inputs of one shape")
                node.input_type = dict(first)
                node.output_type = dict(first)
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=type_check)
