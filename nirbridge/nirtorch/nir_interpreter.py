"""``nir_to_torch``: NIR graph -> one stateful torch module, with NIRTorch 2.x call shapes.

The returned :class:`NIRTorchGraph` is called as ``module(x, state=None) -> (y, state)``. ``state``
is a plain dict keyed by (sanitized) node name; a node whose ``forward`` takes ``state`` receives
``state[name]`` and returns ``(output, new state)``. Nodes on a cycle also leave their output in
``state["<node>_prev_output"]``; an edge coming back around a cycle reads that entry, i.e. the
previous step's value (zeros at the first step, in the dtype and on the device of the input).
"""

from __future__ import annotations

import inspect
import keyword
import pathlib
import typing

import nir
import numpy as np
import torch

from ..errors import GraphError, UnknownNodeError
from .utils import CallError

__all__ = ["nir_to_torch", "NIRTorchGraph", "DEFAULT_MAP", "NodeMapType"]

NodeMapType = dict[type, typing.Callable[[nir.NIRNode], torch.nn.Module] | None]


class UnmappedNodeError(UnknownNodeError, ValueError):
    """A NIR node type that neither ``node_map`` nor ``default_map`` maps (a ``ValueError`` too)."""


def _tensor(a, dtype=None) -> torch.Tensor:
    t = torch.as_tensor(np.array(a, copy=True))
    return t if dtype is None else t.to(dtype)


def _tuple_or_int(v):
    a = np.asarray(v)
    return int(a) if a.ndim == 0 else tuple(int(i) for i in a.reshape(-1))


def _affine(node: nir.Affine) -> torch.nn.Linear:
    w = np.asarray(node.weight)
    m = torch.nn.Linear(w.shape[-1], w.shape[-2], bias=True)
    m.weight.data = _tensor(w)
    m.bias.data = _tensor(node.bias)  # NIRTorch 2.6 set ``weight.bias`` here, leaving the bias random
    return m


def _linear(node: nir.Linear) -> torch.nn.Linear:
    w = np.asarray(node.weight)
    m = torch.nn.Linear(w.shape[-1], w.shape[-2], bias=False)
    m.weight.data = _tensor(w)
    return m


def _conv(cls, node):
    w = np.asarray(node.weight)
    m = cls(w.shape[0], w.shape[1] * int(node.groups), tuple(w.shape[2:]), stride=_tuple_or_int(node.stride),
            padding=_tuple_or_int(node.padding) if not isinstance(node.padding, str) else node.padding,
            dilation=_tuple_or_int(node.dilation), groups=int(node.groups), bias=True)
    m.weight.data = _tensor(w)
    m.bias.data = _tensor(np.broadcast_to(np.asarray(node.bias), (w.shape[0],)))
    return m


def _avgpool2d(node: nir.AvgPool2d) -> torch.nn.AvgPool2d:
    return torch.nn.AvgPool2d(_tuple_or_int(node.kernel_size), stride=_tuple_or_int(node.stride),
                              padding=_tuple_or_int(node.padding))


def _sumpool2d(node: nir.SumPool2d) -> torch.nn.Module:
    # LPPool2d with p=1 is a sum pool (NIRTorch's mapping; it has no padding argument)
    return torch.nn.LPPool2d(1, _tuple_or_int(node.kernel_size), stride=_tuple_or_int(node.stride))


DEFAULT_MAP: NodeMapType = {
    nir.Input: lambda node: torch.nn.Identity(),
    nir.Output: lambda node: torch.nn.Identity(),
    nir.Affine: _affine,
    nir.Linear: _linear,
    nir.Conv1d: lambda node: _conv(torch.nn.Conv1d, node),
    nir.Conv2d: lambda node: _conv(torch.nn.Conv2d, node),
    nir.Flatten: lambda node: torch.nn.Flatten(start_dim=node.start_dim, end_dim=node.end_dim),
    nir.AvgPool2d: _avgpool2d,
    nir.SumPool2d: _sumpool2d,
}


def _sanitize_name(name: str) -> str:
    """NIRTorch's child names: dots become underscores, Python keywords get a ``nir_node_`` prefix."""
    name = str(name).replace(".", "_")
    return "nir_node_" + name if keyword.iskeyword(name) else name


def _map_nir_node_to_torch(node: nir.NIRNode, node_map: NodeMapType, name: str | None = None):
    """Map one node; ``None`` from a map entry (or an entry of ``None``) means: bypass the node."""
    fn = node_map.get(type(node), _MISSING)
    if fn is _MISSING:
        where = f"node {name!r} " if name is not None else ""
        raise UnmappedNodeError(
            f"{where}of type {type(node).__name__} has no entry in node_map or default_map. "
            f"Fix: add {{nir.{type(node).__name__}: <function returning a torch.nn.Module>}} to node_map "
            "(or None to bypass the node)")
    return None if fn is None else fn(node)


_MISSING = object()


def _can_reach(start: str, end: str, edges) -> bool:
    seen, todo = set(), [start]
    while todo:
        cur = todo.pop()
        if cur == end:
            return True
        if cur in seen:
            continue
        seen.add(cur)
        todo.extend(b for a, b in edges if a == cur)
    return False


def _find_recursive_inputs(node: str, edges) -> set:
    """The sources of ``node`` that ``node`` itself reaches (they close a cycle through it)."""
    return {a for a, b in edges if b == node and _can_reach(node, a, edges)}


def _is_stateful(module: torch.nn.Module) -> bool:
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return "state" in params or isinstance(module, (torch.nn.RNNBase, NIRTorchGraph))


def _to(module, device, dtype, explicit=True):
    """Move ``module`` to ``device``/``dtype``; with an explicit ``dtype`` also the floating-point
    tensors it holds as plain attributes (which ``Module.to`` leaves alone)."""
    if module is None:
        return None
    module = module.to(device=device, dtype=dtype)
    if explicit:
        for m in module.modules():
            for k, v in list(vars(m).items()):
                if isinstance(v, torch.Tensor) and not k.startswith("_"):
                    setattr(m, k, v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype))
    return module


class _Bypass(torch.nn.Module):
    """Marks a node whose map entry is ``None``: its inputs pass through unchanged."""


class NIRTorchGraph(torch.nn.Module):
    """A NIR graph of torch modules, run one time step per call: ``module(*x, state=None) -> (y, state)``.

    Children are the mapped nodes under NIRTorch's names (``some.name`` -> ``some_name``, ``if`` ->
    ``nir_node_if``); a nested graph is a child :class:`NIRTorchGraph`. Several ``Input`` nodes:
    pass one tensor each, in the graph's order (or by keyword). Several ``Output`` nodes: ``y`` is a
    tuple in the graph's order. :meth:`run` steps a whole time-major sequence.
    """

    def __init__(self, modules: dict, nir_graph: nir.NIRGraph):
        super().__init__()
        names = {n: _sanitize_name(n) for n in nir_graph.nodes}
        edges = [(names[a], names[b]) for a, b in nir_graph.edges]
        self._inputs = [names[n] for n, v in nir_graph.nodes.items() if isinstance(v, nir.Input)]
        self._outputs = [names[n] for n, v in nir_graph.nodes.items() if isinstance(v, nir.Output)]
        if not self._inputs or not self._outputs:
            missing = " and ".join(k for k, v in (("Input", self._inputs), ("Output", self._outputs)) if not v)
            raise GraphError(f"the graph has no {missing} node. Fix: add nir.{missing.split()[0]} node(s) "
                             "and edges to/from them")
        self._bypass = set()
        for n, m in modules.items():
            s = names[n]
            if isinstance(m, _Bypass):
                self._bypass.add(s)
            elif m is not None and s not in self._inputs + self._outputs:
                self.add_module(s, m)
        self._shapes = {}
        for n, v in nir_graph.nodes.items():
            t = getattr(v, "output_type", None) or {}
            shp = next(iter(t.values()), None) if isinstance(t, dict) and len(t) == 1 else None
            self._shapes[names[n]] = tuple(int(i) for i in np.asarray(shp).reshape(-1)) if (
                shp is not None and np.asarray(shp).size and np.all(np.asarray(shp) > 0)) else ()
        self._plan = self._make_plan(list(names.values()), edges)

    def _make_plan(self, order, edges):
        sources = {n: [a for a, b in edges if b == n] for n in order}
        recursive = {n: _find_recursive_inputs(n, edges) for n in order}
        done, plan, todo = set(self._inputs), [], [n for n in order if n not in self._inputs]
        cyclic = {n for n in order if recursive[n]}

        def ready(n, relaxed):
            # NIRTorch's order: a node reads a cycle's previous value in place of a source not yet
            # computed only when it has other sources too; otherwise it waits for that source
            return all(s in done or (s in recursive[n] and (relaxed or len(sources[n]) > 1)) for s in sources[n])

        while todo:
            n = next((n for n in todo if ready(n, False)), None)
            if n is None:
                n = next((n for n in todo if ready(n, True)), None)
            if n is None:
                raise GraphError(f"nodes {todo} cannot be ordered: their inputs {[sources[n] for n in todo]} "
                                 "are never computed. Fix: connect them to an Input node")
            todo.remove(n)
            # (source, reads the previous step's value)
            ins = tuple((s, s not in done) for s in sources[n])
            child = n if n in self._modules else None
            plan.append((n, child, ins, child is not None and _is_stateful(self._modules[n]), n in cyclic))
            done.add(n)
        return tuple(plan)

    def initial_state(self) -> dict:
        """The state before the first step (``None`` per stateful child, NIRTorch's layout)."""
        return {k: (m.initial_state() if isinstance(m, NIRTorchGraph) else None) for k, m in self._modules.items()}

    def forward(self, *args, state: dict | None = None, **kwargs):
        if len(args) == len(self._inputs) + 1 and state is None and (args[-1] is None or isinstance(args[-1], dict)):
            *args, state = args  # NIRTorch's positional ``module(x, state)``
        values = dict(zip(self._inputs, args))
        for k in list(kwargs):
            if k in self._inputs:
                values[k] = kwargs.pop(k)
        if kwargs or len(values) != len(self._inputs):
            raise CallError(f"expected inputs {self._inputs} (positional or by name) and state=; got "
                            f"{len(args)} positional and {sorted(kwargs)}")
        if state is None:
            state = self.initial_state()
        like = next(iter(values.values()))
        for n, child, ins, stateful, cyclic in self._plan:
            xs = []
            for s, prev in ins:
                if prev:
                    v = state.get(f"{s}_prev_output")
                    if v is None:
                        v = torch.zeros(self._shapes.get(s, ()) or (1,), dtype=like.dtype, device=like.device)
                    xs.append(v)
                else:
                    xs.append(values[s])
            x = xs[0]
            for v in xs[1:]:
                x = x + v
            if child is None:
                y = x
            elif stateful:
                y, state[n] = self._modules[n](x, state=state.get(n))
            else:
                y = self._modules[n](x)
            values[n] = y
            if cyclic:
                state[f"{n}_prev_output"] = y
        outs = tuple(values[o] for o in self._outputs)
        return (outs[0] if len(outs) == 1 else outs), state

    def run(self, *x_seq: torch.Tensor, state: dict | None = None):
        """Step time-major sequences ``(T, ...)`` (one per input); return ``(stacked outputs, final state)``."""
        ys = []
        for t in range(x_seq[0].shape[0]):
            y, state = self(*(x[t] for x in x_seq), state=state)
            ys.append(y)
        if ys and isinstance(ys[0], tuple):
            return tuple(torch.stack(list(c)) for c in zip(*ys)), state
        return torch.stack(ys), state


class _NirbridgeNode(torch.nn.Module):
    """One NIR node run by nirbridge's own torch kernels, stepping as a NIRTorch stateful module."""

    def __init__(self, node: nir.NIRNode, dynamics, dtype):
        super().__init__()
        from ..backends.torch import to_torch

        t = node.input_type if isinstance(node.input_type, dict) else {}
        g = nir.NIRGraph(nodes={"input": nir.Input(next(iter(t.values()))), "node": node,
                                "output": nir.Output(next(iter(node.output_type.values())))},
                         edges=[("input", "node"), ("node", "output")], type_check=False)
        self.inner = to_torch(g, dynamics, dtype=dtype)

    def forward(self, x, state=None):
        state, outs = self.inner.step(state, x)
        return outs["output"], state


def _build(graph: nir.NIRGraph, node_map: NodeMapType, dynamics, dtype, device, explicit):
    modules = {}
    for name, node in graph.nodes.items():
        if type(node) in node_map:
            m = _map_nir_node_to_torch(node, node_map, name)
            modules[name] = _Bypass() if m is None else _to(m, device, dtype, explicit)
        elif isinstance(node, nir.NIRGraph):
            modules[name] = _build(node, node_map, dynamics, dtype, device, explicit)
        elif dynamics is not None and not isinstance(node, (nir.Input, nir.Output)):
            modules[name] = _to(_NirbridgeNode(node, dynamics, dtype), device, dtype, explicit)
        else:
            modules[name] = _to(_map_nir_node_to_torch(node, node_map, name), device, dtype, explicit)
    return NIRTorchGraph(modules, graph)


def nir_to_torch(nir_node: str | pathlib.Path | nir.NIRNode, node_map: NodeMapType | None = None,
                 default_map: NodeMapType = DEFAULT_MAP, device: typing.Any = "cpu",
                 dtype: torch.dtype | None = None, *, dynamics=None) -> torch.nn.Module:
    """Map a NIR graph (or a path, or a single node) to torch modules wired into one stateful module.

    Args:
        nir_node: a ``nir.NIRGraph``, a single NIR node (its mapped module is returned alone), or
            the path of a ``.nir`` file.
        node_map: ``{nir node type: function(node) -> torch.nn.Module}``; it overrides ``default_map``.
            An entry of ``None`` bypasses nodes of that type. ``nir.NIRGraph`` as a key maps a
            nested graph as one module. ``None``: nothing beyond the defaults.
        default_map: the mappings of the plain torch layers (:data:`DEFAULT_MAP`).
        device, dtype: every mapped module is moved to them (a single node too). ``dtype=None``
            (default): NIRTorch's float32 for the parameters and buffers of a graph's modules, a
            single node left as mapped. An explicit ``dtype`` also converts the floating-point
            tensors that modules hold as plain attributes.
        dynamics: a :class:`nirbridge.Dynamics`; node types that neither map covers are then run
            by nirbridge's own torch kernels with these settings (a library maps only its neurons).

    Raises:
        ValueError (UnmappedNodeError): a node type no map covers, naming the node and the fix.
    """
    if isinstance(nir_node, (str, pathlib.Path)):
        nir_node = nir.read(str(nir_node))
    full = dict(default_map or {})
    full.update(node_map or {})
    explicit = dtype is not None
    if not isinstance(nir_node, nir.NIRGraph):
        if type(nir_node) not in full and dynamics is not None:
            return _to(_NirbridgeNode(nir_node, dynamics, dtype or torch.float32), device, dtype, explicit)
        return _to(_map_nir_node_to_torch(nir_node, full), device, dtype, explicit)
    return _build(nir_node, full, dynamics, dtype or torch.float32, device, explicit)

