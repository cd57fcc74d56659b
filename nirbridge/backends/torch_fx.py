"""torch modules back to NIR: :func:`from_torch` traces a model with ``torch.fx`` and maps each
module to a NIR node (:data:`DEFAULT_MODULE_MAP`, overridable), or converts a :class:`NirModule`
built by :func:`~nirbridge.backends.torch.to_torch` back exactly.

>>> import torch, nirbridge as nb
>>> g = nb.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)))
>>> g.plan.names
('input', '0', '1', 'output')
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping
from typing import Any

import nir
import numpy as np

from ..errors import GraphError, InputError, ShapeError, UnsupportedError
from ..graph import Graph
from ..nodes import spec_for_nir
from .torch import NirModule, torch

nn = torch.nn

__all__ = ["DEFAULT_MODULE_MAP", "from_torch"]


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _map_linear(m) -> nir.NIRNode:
    if m.bias is None:
        return nir.Linear(weight=_np(m.weight))
    return nir.Affine(weight=_np(m.weight), bias=_np(m.bias))


def _conv_map(nd: int):
    def convert(m) -> nir.NIRNode:
        if m.padding_mode != "zeros":
            raise UnsupportedError(f"{type(m).__name__} with padding_mode={m.padding_mode!r} has no NIR "
                                   "equivalent. Fix: use padding_mode='zeros'")
        w = _np(m.weight)
        bias = _np(m.bias) if m.bias is not None else np.zeros(w.shape[0], dtype=w.dtype)
        if nd == 1:
            pad = m.padding if isinstance(m.padding, str) else int(m.padding[0])
            return nir.Conv1d(input_shape=None, weight=w, stride=int(m.stride[0]), padding=pad,
                              dilation=int(m.dilation[0]), groups=int(m.groups), bias=bias)
        pad = m.padding if isinstance(m.padding, str) else np.array(m.padding)
        return nir.Conv2d(input_shape=None, weight=w, stride=np.array(m.stride), padding=pad,
                          dilation=np.array(m.dilation), groups=int(m.groups), bias=bias)

    return convert


def _map_flatten(m) -> nir.NIRNode:
    # torch modules see (B, *shape); NIR dims count from the first non-batch dimension
    if m.start_dim == 0 or m.end_dim == 0:
        raise UnsupportedError(f"nn.Flatten(start_dim={m.start_dim}, end_dim={m.end_dim}) flattens the batch "
                               "dimension. Fix: flatten from dim 1 on")
    shift = lambda d: d - 1 if d > 0 else d  # noqa: E731
    return nir.Flatten(input_type=None, start_dim=shift(m.start_dim), end_dim=shift(m.end_dim))


def _pair(v) -> np.ndarray:
    return np.array(v if isinstance(v, (tuple, list)) else (v, v), dtype=np.int64)


def _map_avgpool(m) -> nir.NIRNode:
    if m.ceil_mode or not m.count_include_pad or m.divisor_override is not None:
        raise UnsupportedError("nn.AvgPool2d with ceil_mode=True, count_include_pad=False or a divisor_override "
                               "has no NIR equivalent. Fix: use the defaults")
    return nir.AvgPool2d(kernel_size=_pair(m.kernel_size), stride=_pair(m.stride or m.kernel_size),
                         padding=_pair(m.padding))


def _map_nir_module(m) -> nir.NIRNode:
    return m.to_graph().to_nir()


#: module type -> callable(module) -> nir node; the defaults of :func:`from_torch`
DEFAULT_MODULE_MAP: dict[type, Callable[[Any], nir.NIRNode]] = {
    nn.Linear: _map_linear,
    nn.Conv1d: _conv_map(1),
    nn.Conv2d: _conv_map(2),
    nn.Flatten: _map_flatten,
    nn.AvgPool2d: _map_avgpool,
    NirModule: _map_nir_module,
}

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_ADDS = {operator.add, operator.iadd, torch.add}


def _lookup(table: Mapping[type, Callable], m) -> Callable | None:
    for cls in type(m).__mro__:
        if cls in table:
            return table[cls]
    return None


def _register_hint(m) -> str:
    cls = type(m).__name__
    return (f"register a conversion for it: nb.from_torch(model, module_map={{{cls}: lambda m: nir.LIF(tau=..., "
            f"r=..., v_leak=..., v_threshold=..., v_reset=...)}}) (any callable(module) -> nir node)")


class _Tracer(torch.fx.Tracer):
    """Mapped modules and childless modules are leaves; containers are traced through."""

    def __init__(self, table: Mapping[type, Callable]):
        super().__init__()
        self.table = table

    def is_leaf_module(self, m, qualname: str) -> bool:
        if _lookup(self.table, m) is not None:
            return True
        if isinstance(m, _CONTAINERS):
            return False
        if next(iter(m.children()), None) is None:
            return True  # an atomic module: mapped, or an error naming it
        return super().is_leaf_module(m, qualname)


def from_torch(module: Any, module_map: Mapping[type, Callable[[Any], nir.NIRNode]] | None = None, *,
               example_input: Any = None) -> Graph:
    """A :class:`~nirbridge.graph.Graph` from a torch module.

    * A :class:`NirModule` (from :func:`to_torch`, also under ``torch.compile``) converts back
      exactly: parameters not changed since it was built keep their original arrays and dtypes
      (bit for bit, e.g. float64 neuron parameters of a module run in float32); changed ones are
      stored cast to the original dtype.
    * Any other module is traced with ``torch.fx``. Every module whose type (or a base class) is
      in ``module_map`` or :data:`DEFAULT_MODULE_MAP` (``nn.Linear`` -> Affine, or Linear without
      bias; ``nn.Conv1d``/``nn.Conv2d``; ``nn.Flatten``; ``nn.AvgPool2d``; a ``NirModule`` -> a
      nested graph) becomes one node, made by ``module_map[type](module)``, which returns a
      ``nir`` node; ``module_map`` takes precedence. Containers are traced through; additions
      (``a + b``) become fan-in edges; ``out, state = lif(x)`` keeps ``out``; ``nn.Identity`` is
      skipped. Any other module or
      operation raises :class:`~nirbridge.errors.UnsupportedError` naming it, e.g. register a
      custom neuron with ``from_torch(model, module_map={MyLIF: lambda m: nir.LIF(...)})``.
      Torch modules are read as acting on ``(B, *shape)``: ``nn.Flatten(start_dim=1)`` is NIR
      ``start_dim=0``. Recurrent connections cannot be traced (build them as NIR graphs).

    Input shapes: ``example_input`` is a sample ``(B, *shape)`` tensor (a tuple or a dict by
    argument name for several inputs) whose ``shape[1:]`` gives the Input node's shape; without
    it, the shape is read from the first layer's parameters (``in_features`` of ``nn.Linear``,
    the parameter shape of a neuron); a first convolution needs ``example_input`` (its spatial
    size is not in its parameters). The shapes of Flatten, Conv and Output nodes are then filled
    in from the graph.
    """
    module = getattr(module, "_orig_mod", module)  # torch.compile's wrapper
    if isinstance(module, NirModule):
        return module.to_graph()
    if not isinstance(module, nn.Module):
        raise UnsupportedError(f"from_torch() takes a torch.nn.Module, got {type(module).__name__}. "
                               "Fix: pass the model (an nn.Module), or nb.Graph.from_nir for a nir graph")
    table = {**DEFAULT_MODULE_MAP, **dict(module_map or {})}
    nodes, edges = _trace(module, table)
    _set_input_shapes(nodes, edges, example_input)
    graph = Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    return _fill_shapes(graph, nodes, edges)


def _trace(module, table) -> tuple[dict, list]:
    mapped = _lookup(table, module)
    if mapped is not None:  # the module itself is one node, named after its type as nir.NIRGraph.from_list does
        node = _convert(mapped, type(module).__name__, module)
        name = type(node).__name__.lower()
        return ({"input": nir.Input(input_type=None), name: node, "output": nir.Output(output_type=None)},
                [("input", name), (name, "output")])
    tracer = _Tracer(table)
    try:
        fx_graph = tracer.trace(module)
    except Exception as e:  # noqa: BLE001 - fx raises many kinds; the message says what to do
        raise UnsupportedError(
            f"torch.fx could not trace {type(module).__name__} ({type(e).__name__}: {e}). Fix: make the modules "
            "with data-dependent control flow leaves by mapping them in module_map"
        ) from e
    placeholders = [n for n in fx_graph.nodes if n.op == "placeholder" and n.users]
    if not placeholders:
        raise GraphError(f"{type(module).__name__}.forward uses none of its arguments: the graph has no input. "
                         "Fix: compute the output from forward's input")
    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    srcs: dict[Any, list[str]] = {}  # fx node -> the NIR nodes whose sum it carries

    def unique(name: str) -> str:
        base, k = name, 1
        while name in nodes or name in ("input", "output"):
            name, k = f"{base}_{k}", k + 1
        return name

    def where(n) -> str:
        stack = n.meta.get("nn_module_stack") or {}
        owner = next(reversed(stack.values()), None) if stack else None
        return f" (inside {owner[0]!r})" if isinstance(owner, tuple) and owner[0] else ""

    for n in fx_graph.nodes:
        if n.op == "placeholder":
            if n.users:
                name = "input" if len(placeholders) == 1 else unique(str(n.target))
                nodes[name] = nir.Input(input_type=None)
                srcs[n] = [name]
        elif n.op == "call_module":
            sub = module.get_submodule(n.target)
            fn = _lookup(table, sub)
            if fn is None and isinstance(sub, nn.Identity):
                srcs[n] = [s for a in n.all_input_nodes for s in srcs.get(a, [])]
                continue
            if fn is None:
                raise UnsupportedError(f"module {n.target!r} of type {type(sub).__module__}.{type(sub).__qualname__} "
                                       f"has no NIR conversion. Fix: {_register_hint(sub)}")
            name = unique(str(n.target))
            nodes[name] = _convert(fn, n.target, sub)
            for a in n.all_input_nodes:
                edges.extend((s, name) for s in srcs.get(a, []))
            srcs[n] = [name]
        elif n.op in ("call_function", "call_method"):
            target = n.target
            if target in _ADDS or target in ("add", "add_", "__add__"):
                args = [a for a in n.args if isinstance(a, torch.fx.Node)]
                if len(args) != len(n.args) or n.kwargs:
                    raise UnsupportedError(f"operation {n.format_node()}{where(n)} adds a constant, which NIR "
                                           "cannot express here. Fix: use a module with a bias (nn.Linear)")
                srcs[n] = [s for a in args for s in srcs.get(a, [])]
            elif target is operator.getitem and n.args[0].op == "call_module" and n.args[1] == 0:
                srcs[n] = srcs[n.args[0]]  # (output, state) = module(x): the output is the signal
            elif not n.users:
                srcs[n] = []  # a result nothing uses (a state returned alongside the output)
            else:
                op = getattr(target, "__name__", str(target))
                raise UnsupportedError(
                    f"operation {op!r} ({n.format_node()}){where(n)} has no NIR equivalent. Fix: use modules "
                    "(nn.Flatten instead of x.flatten(), ...) or wrap it in a module and register it in module_map"
                )
        elif n.op == "output":
            outs = _flatten_output(n.args[0])
            for i, (key, o) in enumerate(outs):
                name = "output" if len(outs) == 1 else unique(f"output_{key if key is not None else i}")
                nodes[name] = nir.Output(output_type=None)
                edges.extend((s, name) for s in srcs.get(o, []))
        else:  # get_attr: a parameter or buffer used outside a module
            raise UnsupportedError(f"{n.op} {n.target!r}{where(n)}: a tensor used outside a module has no NIR "
                                   "equivalent. Fix: keep parameters inside modules")
    return nodes, edges


def _flatten_output(arg) -> list[tuple[Any, Any]]:
    if isinstance(arg, Mapping):
        return [(str(k), v) for k, v in arg.items()]
    if isinstance(arg, (tuple, list)):
        return [(None, v) for v in arg]
    return [(None, arg)]


def _convert(fn: Callable, qualname: str, m) -> Any:
    try:
        node = fn(m)
    except UnsupportedError as e:
        raise UnsupportedError(f"module {qualname!r} ({type(m).__name__}): {e}") from None
    if not isinstance(node, nir.NIRNode):
        raise UnsupportedError(f"the module_map entry for {type(m).__name__} (module {qualname!r}) returned "
                               f"{type(node).__name__}, not a nir node. Fix: return e.g. nir.LIF(...)")
    return node


def _expected(name: str, node: Any) -> tuple[int, ...] | None:
    if isinstance(node, nir.NIRGraph):
        ins = [v for v in node.nodes.values() if isinstance(v, nir.Input)]
        shape = ins[0].input_type.get("input") if len(ins) == 1 else None
        return None if shape is None else tuple(int(d) for d in np.asarray(shape).reshape(-1))
    spec = spec_for_nir(node, name)
    return spec.expected_input(name, {f: getattr(node, f) for f in spec.fields})


def _example_shapes(example_input: Any, names: list[str]) -> dict[str, tuple[int, ...]]:
    if isinstance(example_input, Mapping):
        by_key = dict(example_input)
        if len(names) == 1 and len(by_key) == 1:
            by_key = {names[0]: next(iter(by_key.values()))}
    elif isinstance(example_input, (tuple, list)):
        if len(example_input) != len(names):
            raise InputError(f"example_input has {len(example_input)} entries for {len(names)} inputs {names}. "
                             "Fix: give one sample per input, in forward's argument order, or a dict by name")
        by_key = dict(zip(names, example_input))
    else:
        by_key = {names[0]: example_input} if len(names) == 1 else {}
    shapes = {}
    for n in names:
        if n not in by_key:
            raise InputError(f"example_input gives no sample for input {n!r}. Fix: pass {{name: tensor}} for "
                             f"the inputs {names}")
        shape = tuple(int(d) for d in getattr(by_key[n], "shape", np.shape(by_key[n])))
        if len(shape) < 2:
            raise InputError(f"example_input for {n!r} has shape {shape}; expected (B, *shape) with a batch axis. "
                             "Fix: add the batch axis, e.g. x[None]")
        shapes[n] = shape[1:]
    return shapes


def _set_input_shapes(nodes: dict, edges: list, example_input: Any) -> None:
    names = [k for k, v in nodes.items() if isinstance(v, nir.Input)]
    given = _example_shapes(example_input, names) if example_input is not None else {}
    for n in names:
        shape = given.get(n)
        if shape is None:
            for a, b in edges:
                if a == n and (shape := _expected(b, nodes[b])) is not None:
                    break
        if shape is None:
            first = [b for a, b in edges if a == n]
            raise ShapeError(f"cannot infer the shape of input {n!r} from the module(s) it feeds {first}. Fix: "
                             "pass example_input=torch.zeros(1, *shape) (a sample with a batch axis)")
        nodes[n] = nir.Input(input_type={"input": np.array(shape, dtype=np.int64)})


def _fill_shapes(graph: Graph, nodes: dict, edges: list) -> Graph:
    """Give Flatten, Conv and Output nodes the shapes NIR readers expect (from the plan)."""
    plan = graph.plan
    changed = False
    for name, node in list(nodes.items()):
        if name not in plan:
            continue
        shape = plan[name].input_shape
        if isinstance(node, nir.Output) and node.output_type.get("output") is None:
            nodes[name] = nir.Output(output_type={"output": np.array(shape, dtype=np.int64)})
        elif isinstance(node, nir.Flatten) and node.input_type.get("input") is None:
            nodes[name] = dataclasses.replace(node, input_type={"input": np.array(shape, dtype=np.int64)})
        elif isinstance(node, nir.Conv2d) and node.input_shape is None:
            nodes[name] = dataclasses.replace(node, input_shape=np.array(shape[1:], dtype=np.int64))
        elif isinstance(node, nir.Conv1d) and node.input_shape is None:
            nodes[name] = dataclasses.replace(node, input_shape=int(shape[1]))
        else:
            continue
        changed = True
    if not changed:
        return graph
    return Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))

