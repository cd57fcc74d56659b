"""The PyTorch backend: a NIR graph as a ``torch.nn.Module``, and torch modules back to NIR.

:func:`to_torch` builds a :class:`NirModule` that runs the discrete updates of
:mod:`nirbridge.kernels` (the same code the NumPy reference runs) with :class:`TorchOps`:

* ``module(x)`` runs a whole time-major sequence ``(T, B, *input_shape)`` (or
  ``{input name: tensor}``) and returns the output sequence (a tensor for one output, a dict
  for several); ``module.run(x, record=...)`` also returns recorded nodes/states and the final
  state; ``module.step(x_t, state)`` advances one step; ``module.init_state(batch)``.
* Per run, the coefficients (``dt/tau``, ``exp(-dt/tau)``) are computed once, outside the time
  loop, and the stateless nodes fed only by graph inputs (``Program.hoistable``, e.g. the input
  projection) run once over all ``T*B`` rows before the loop (``hoist=True``, the default:
  faster or equal on the workloads measured, see :func:`to_torch`).
* Spikes are a ``torch.autograd.Function``: forward ``[v > thr]`` (or ``>=``), backward the
  surrogate of the :class:`~nirbridge.dynamics.Dynamics`, so converted models train.
* State is created on the device and in the dtype of the module (``module.to(...)`` moves it);
  ``torch.compile`` and the ``meta`` device work.

Parameter names. Every floating-point NIR parameter is a ``torch.nn.Parameter`` (``Delay``'s
``delay`` is a buffer: the delay in steps is fixed when the module is built) under the key
``"<flat node name>.<field>"`` of ``state_dict()``: ``"fc1.weight"``, ``"lif1.lif.tau"`` for
node ``lif`` of the nested graph ``lif1``. A name component that is not a valid attribute
(empty, or the name of an attribute of the module such as ``"forward"`` or ``"step"``) gets a
trailing ``"_"``; ``module.param_paths`` maps each flat node name to its prefix.

:func:`from_torch` turns a module back into a :class:`~nirbridge.graph.Graph`: a module built by
:func:`to_torch` exactly (parameters not changed since keep their original arrays and dtypes),
any other module by tracing it with ``torch.fx`` and a module map.

>>> import nir, numpy as np, torch, nirbridge as nb
>>> g = nb.Graph.from_nir(nir.NIRGraph.from_list(
...     nir.Affine(weight=np.full((2, 3), 0.5, np.float32), bias=np.zeros(2, np.float32)),
...     nir.LIF(tau=np.full(2, 1e-3), r=np.ones(2), v_leak=np.zeros(2),
...             v_threshold=np.full(2, 0.2), v_reset=np.zeros(2))))
>>> dyn = nb.Dynamics(dt=1e-4)
>>> m = nb.to_torch(g, dyn)
>>> sorted(m.state_dict())[:3]
['affine.bias', 'affine.weight', 'lif.r']
>>> x = np.ones((4, 1, 3), np.float32)
>>> m(torch.from_numpy(x))[:, 0, 0].tolist()
[0.0, 1.0, 0.0, 1.0]
>>> nb.simulate(g, x, dyn, backend="reference")["output"][:, 0, 0].tolist()
[0.0, 1.0, 0.0, 1.0]
>>> nb.from_torch(m).equals(g)
True
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Mapping
from typing import Any

import nir
import numpy as np

from .._util import progress_bar
from ..dynamics import Dynamics
from ..errors import GraphError, InputError, ShapeError, UnsupportedError, node_error
from ..graph import Graph
from ..kernels import NamespaceOps
from ..nodes import spec_for_nir
from ..program import (
    Program,
    build_program,
    check_graph,
    float_params,
    graph_step,
    init_state,
    normalize_inputs,
    parse_record,
    prepare,
    resolve_dtype,
    run_stateless,
    write_back,
)
from .base import require

torch = require("torch", "torch")
nn = torch.nn
F = torch.nn.functional

__all__ = ["TorchOps", "NirModule", "TorchAdapter", "to_torch", "from_torch", "DEFAULT_MODULE_MAP"]

_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


# ---------------------------------------------------------------------------- spikes
def _fast_sigmoid(d, slope):
    return 1.0 / (1.0 + slope * d.abs()) ** 2


def _sigmoid(d, slope):
    s = torch.sigmoid(slope * d)
    return slope * s * (1 - s)


def _straight_through(d, slope):
    return torch.ones_like(d)


#: surrogate name -> derivative of the spike with respect to ``d = v - threshold``
SURROGATE_GRADS: dict[str, Callable[[Any, float], Any]] = {
    "fast_sigmoid": _fast_sigmoid,
    "sigmoid": _sigmoid,
    "straight_through": _straight_through,
}


class _Spike(torch.autograd.Function):
    """``[v > thr]`` (``>=`` if inclusive) in v's dtype; backward: the surrogate derivative.

    The gradient with respect to ``thr`` is minus the one with respect to ``v`` (the spike depends
    on ``v - thr`` only), summed over the broadcast (batch) dimensions.
    """

    @staticmethod
    def forward(ctx, v, thr, inclusive, surrogate, slope):
        # the old-style forward(ctx, ...): apply() then skips an inspect.signature per call
        ctx.save_for_backward(v, thr)
        ctx.surrogate, ctx.slope = surrogate, slope
        return _compare(v, thr, inclusive)

    @staticmethod
    def backward(ctx, grad):
        v, thr = ctx.saved_tensors
        gv = grad * SURROGATE_GRADS[ctx.surrogate](v - thr, ctx.slope)
        g_thr = (-gv).sum_to_size(thr.shape) if ctx.needs_input_grad[1] else None
        return (gv if ctx.needs_input_grad[0] else None), g_thr, None, None, None


def _compare(v, thr, inclusive):
    z = torch.ge(v, thr) if inclusive else torch.gt(v, thr)
    return z.to(v.dtype)


# ---------------------------------------------------------------------------- ops
class TorchOps(NamespaceOps):
    """The :class:`~nirbridge.kernels.Ops` of the torch backend (tensors on ``device``)."""

    xp = torch
    name = "torch"

    def __init__(self, device: Any = None):
        self.device = torch.device("cpu") if device is None else torch.device(device)

    def const(self, value, like):
        return torch.as_tensor(value, dtype=like.dtype, device=like.device)

    def zeros(self, shape, dtype):
        return torch.zeros(tuple(shape), dtype=dtype, device=self.device)

    def spike(self, v, threshold, inclusive, surrogate, slope):
        if torch.is_grad_enabled() and (v.requires_grad or threshold.requires_grad):
            return _Spike.apply(v, threshold, inclusive, surrogate, slope)
        return _compare(v, threshold, inclusive)  # no gradient wanted: skip the autograd.Function

    def affine(self, x, w, b):
        return F.linear(x, w, b)

    def conv(self, x, w, b, geom, nd):
        pads = geom["padding"]
        if all(lo == hi for lo, hi in pads):
            padding = tuple(lo for lo, _ in pads)
        else:  # F.pad takes (lo, hi) pairs from the last dimension backwards
            x = F.pad(x, [p for lo, hi in reversed(pads) for p in (lo, hi)])
            padding = 0
        conv = F.conv1d if nd == 1 else F.conv2d
        full_bias = b is not None and b.ndim == 1
        y = conv(x, w, b if full_bias else None, stride=geom["stride"], padding=padding,
                 dilation=geom["dilation"], groups=geom["groups"])
        return y if full_bias or b is None else y + b

    def pool(self, x, geom, average):
        (ph, pw), (kh, kw) = geom["padding"], geom["kernel"]
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph))
        # divisor_override=1: the plain window sum (avg_pool2d's divisor is the only division)
        y = F.avg_pool2d(x, geom["kernel"], geom["stride"], 0, ceil_mode=False, divisor_override=1)
        return y / (kh * kw) if average else y  # average: divide by the kernel area, as the reference

    def concat1(self, a, b):
        return torch.cat([a, b], dim=1)


# ---------------------------------------------------------------------------- the module
class _NodeParams(nn.Module):
    """The parameters of one NIR node (``state_dict`` keys ``<node>.<field>``)."""

    def __init__(self, node_type: str):
        super().__init__()
        self.node_type = node_type

    def extra_repr(self) -> str:
        return self.node_type


class _Group(nn.Module):
    """A level of dotted node names: a nested NIR graph, e.g. ``lif1`` in ``lif1.lif``."""


class _Shared:
    """Holds the immutable Program: shared (not copied) by ``copy.deepcopy``, rebuilt on unpickling."""

    def __init__(self, prog: Program):
        self.prog = prog

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        g, d = self.prog.graph, self.prog.dynamics
        return _rebuild_shared, (g.to_nir(), d)


def _rebuild_shared(nir_graph, dynamics):
    return _Shared(build_program(Graph.from_nir(nir_graph), dynamics, "torch"))


class NirModule(nn.Module):
    """A NIR graph as a ``torch.nn.Module`` (build it with :func:`to_torch`).

    Attributes:
        graph: the :class:`~nirbridge.graph.Graph` it was built from.
        dynamics: the :class:`~nirbridge.dynamics.Dynamics`.
        hoist: run stateless nodes fed by graph inputs over all ``T*B`` rows before the time loop.
        param_paths: flat node name -> prefix of its parameters' ``state_dict`` keys.
    """

    def __init__(self, prog: Program, dtype: Any = torch.float32, *, hoist: bool = True, compile_chunk: int = 0):
        super().__init__()
        self._shared = _Shared(prog)
        self._build_dtype = dtype
        self.hoist = bool(hoist)
        self.compile_chunk = int(compile_chunk)
        self._chunks: dict = {}  # chunk functions (compiled or plain) by recorded values
        # holds the module's device and dtype even for graphs without parameters
        self.register_buffer("_anchor", torch.zeros((), dtype=dtype), persistent=False)
        self.param_paths: dict[str, str] = {}
        self._fields: dict[str, tuple[str, ...]] = {}
        groups: dict[tuple[str, ...], nn.Module] = {}
        for s in prog.steps:
            params = float_params(s)
            if not params:
                continue
            leaf = _NodeParams(s.node.type)
            for f, v in params.items():
                t = torch.tensor(np.array(v), dtype=dtype)
                if s.node.type == "Delay":  # the delay in steps is fixed at build time
                    leaf.register_buffer(f, t)
                else:
                    leaf.register_parameter(f, nn.Parameter(t))
            self.param_paths[s.name] = _place(self, groups, s.name, leaf)
            self._fields[s.name] = tuple(params)

    # ------------------------------------------------------------------ accessors
    @property
    def program(self) -> Program:
        """The :class:`~nirbridge.program.Program` the module runs."""
        return self._shared.prog

    @property
    def graph(self) -> Graph:
        """The :class:`~nirbridge.graph.Graph` the module was built from (original parameters)."""
        return self._shared.prog.graph

    @property
    def dynamics(self) -> Dynamics:
        """The :class:`~nirbridge.dynamics.Dynamics` the module runs."""
        return self._shared.prog.dynamics

    def node_params(self) -> dict[str, dict[str, Any]]:
        """``{flat node name: {field: tensor}}``: the live parameters, as the kernels take them."""
        return {n: {f: getattr(self.get_submodule(path), f) for f in self._fields[n]}
                for n, path in self.param_paths.items()}

    def extra_repr(self) -> str:
        plan = self.graph.plan
        return (f"{len(plan.steps)} nodes, inputs={list(plan.inputs)}, outputs={list(plan.outputs)}, "
                f"{self.dynamics!r}")

    # ------------------------------------------------------------------ running
    def _ops(self) -> TorchOps:
        return TorchOps(self._anchor.device)

    def _convert(self, v, dtype):
        if isinstance(v, torch.Tensor):
            return v.to(device=self._anchor.device, dtype=dtype)
        return torch.as_tensor(np.asarray(v), dtype=dtype, device=self._anchor.device)

    def init_state(self, batch: int) -> dict:
        """The zero state for a batch: ``{"nodes": {node: {var: tensor}}, "prev": {node: tensor}}``
        (``prev`` holds the previous-step outputs that recurrent edges carry)."""
        return init_state(self._ops(), self.program, int(batch), self._anchor.dtype)

    def run(self, x: Any, *, state: Mapping | None = None, record: Any = None,
            progress: bool = False) -> tuple[dict, dict]:
        """Run a time-major sequence; return ``(result, final state)``.

        ``result`` maps each output name to its ``(T, B, *shape)`` tensor, plus each recorded node
        (by name) and state variable (by ``(node, var)``), as :func:`nirbridge.simulate` does.
        ``state`` continues from an earlier run (default: zeros).
        """
        prog = self.program
        ops = self._ops()
        inputs, T, B = normalize_inputs(prog, x, self._anchor.dtype, convert=self._convert)
        coeffs = prepare(ops, prog, self.node_params())  # once per run, outside the loop
        state = self.init_state(B) if state is None else state
        skip = prog.hoistable if self.hoist else frozenset()
        full = self._hoisted(ops, coeffs, inputs, T, B) if skip else {}
        seq = {**inputs, **full}
        rec_nodes, rec_states = parse_record(prog, record)
        keys = list(dict.fromkeys([*prog.outputs, *rec_nodes]))
        traced = tuple(k for k in keys if k not in full)
        chunk = self._chunk_fn(traced, tuple(rec_states), skip)
        bar = progress_bar(T, progress, "torch")
        # eager: one chunk of all T steps (or 100 chunks, to move a progress bar); compiled: K steps
        size = self.compile_chunk or (T if bar is None else max(1, T // 100))
        pieces: dict[Any, list] = {k: [] for k in (*traced, *rec_states)}
        for t in range(0, T, size):
            state, ys = chunk(coeffs, state, {n: v[t : t + size] for n, v in seq.items()})
            for k, y in ys.items():
                pieces[k].append(y)
            if bar is not None:
                bar.update(min(size, T - t))
        if bar is not None:
            bar.close()
        result: dict[Any, Any] = {k: full[k] for k in keys if k in full}
        for k, lst in pieces.items():
            result[k] = lst[0] if len(lst) == 1 else torch.cat(lst)
        return result, state

    def __getstate__(self):  # pickle / deepcopy: the chunk functions are rebuilt on demand
        return {**self.__dict__, "_chunks": {}}

    def _chunk_fn(self, traced: tuple, states: tuple, skip: frozenset):
        """``chunk(coeffs, state, xs) -> (state, {key: (K, B, ...)})``: ``K`` steps of the graph;
        compiled with ``torch.compile`` (one program per set of recorded values) when
        ``compile_chunk`` is set."""
        key = (traced, states, skip)
        fn = self._chunks.get(key)
        if fn is None:
            fn = functools.partial(_run_chunk, self._ops(), self.program, traced, states, skip)
            if self.compile_chunk:
                fn = torch.compile(fn, dynamic=False)
            self._chunks[key] = fn
        return fn

    def _hoisted(self, ops, coeffs, inputs, T, B) -> dict:
        """Stateless nodes fed only by graph inputs, over all ``T*B`` rows at once."""
        prog = self.program
        rows = {n: v.reshape((T * B,) + tuple(v.shape[2:])) for n, v in inputs.items()}
        rows = run_stateless(ops, prog, coeffs, rows, prog.hoistable)
        return {n: rows[n].reshape((T, B) + tuple(rows[n].shape[1:])) for n in prog.hoistable}

    def _pick(self, outs: Mapping):
        names = self.program.outputs
        return outs[names[0]] if len(names) == 1 else {n: outs[n] for n in names}

    def forward(self, x: Any):
        """Run a time-major sequence ``(T, B, *shape)`` (or ``{input: tensor}``) from the zero state;
        return the outputs: a ``(T, B, *shape)`` tensor, or ``{output name: tensor}`` for several."""
        result, _ = self.run(x)
        return self._pick(result)

    def step(self, x_t: Any, state: Mapping | None = None) -> tuple[Any, dict]:
        """One time step: ``x_t`` is ``(B, *shape)`` (or ``{input: tensor}``); ``state`` from
        :meth:`init_state` or the previous step (None: zeros). Returns ``(y_t, state)``.

        The coefficients are recomputed at every call (the parameters may change between steps);
        ``module(x)`` over a whole sequence computes them once.
        """
        prog = self.program
        ops = self._ops()
        seq = {k: v[None] for k, v in x_t.items()} if isinstance(x_t, Mapping) else _add_time(x_t)
        inputs, _, B = normalize_inputs(prog, seq, self._anchor.dtype, convert=self._convert)
        coeffs = prepare(ops, prog, self.node_params())
        state = self.init_state(B) if state is None else state
        state, outs = graph_step(ops, prog, coeffs, state, {n: v[0] for n, v in inputs.items()})
        return self._pick(outs), state

    # ------------------------------------------------------------------ back to NIR
    def to_graph(self) -> Graph:
        """The graph with the module's current parameters (see :func:`from_torch`)."""
        values: dict[str, dict[str, Any]] = {}
        for name, params in self.node_params().items():
            for f, p in params.items():
                if p.device.type == "meta":
                    raise node_error(UnsupportedError, name, f, "the parameter is on the meta device and holds no "
                                     "values", "move the module to a real device and load its weights first")
            values[name] = {f: p.detach().cpu() for f, p in params.items()}

        def unchanged(cur, orig: np.ndarray) -> bool:  # what the module was built with, in its current dtype
            return torch.equal(cur, torch.tensor(np.array(orig), dtype=self._build_dtype).to(cur.dtype))

        return write_back(self.program, values, unchanged, _to_numpy)


def _run_chunk(ops, prog: Program, traced: tuple, states: tuple, skip: frozenset, coeffs, state, xs):
    """Run ``K`` steps (the length of the arrays in ``xs``); stack the traced outputs and states."""
    ys: dict[Any, list] = {k: [] for k in (*traced, *states)}
    for t in range(next(iter(xs.values())).shape[0]):
        state, outs = graph_step(ops, prog, coeffs, state, {n: v[t] for n, v in xs.items()}, skip)
        for k in traced:
            ys[k].append(outs[k])
        for n, var in states:
            ys[(n, var)].append(state["nodes"][n][var])
    return state, {k: torch.stack(v) for k, v in ys.items()}


def _add_time(x_t):
    if not hasattr(x_t, "shape"):
        x_t = np.asarray(x_t)
    return x_t[None]


def _to_numpy(t) -> np.ndarray:
    return (t.double() if t.dtype == torch.bfloat16 else t).numpy()  # NumPy has no bfloat16


def _valid_key(owner: nn.Module, key: str) -> bool:
    return bool(key) and "." not in key and not hasattr(owner, key)


def _place(root: nn.Module, groups: dict, flat: str, leaf: nn.Module) -> str:
    """Register ``leaf`` under ``root`` at the dotted path ``flat``; return the path used."""
    parts = flat.split(".")
    owner, path = root, []
    for i, part in enumerate(parts):
        prefix = tuple(parts[: i + 1])
        last = i == len(parts) - 1
        if not last and prefix in groups:
            owner, key = groups[prefix]
            path.append(key)
            continue
        key = part
        while not _valid_key(owner, key):
            key += "_"
        child = leaf if last else _Group()
        owner.add_module(key, child)
        path.append(key)
        if not last:
            groups[prefix] = (child, key)
        owner = child
    return ".".join(path)


def _torch_dtype(dtype: Any):
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix("torch.")
    return _TORCH_DTYPES[resolve_dtype(dtype)]


def to_torch(graph: Graph | nir.NIRGraph, dynamics: Dynamics, *, dtype: Any = torch.float32,
             hoist: bool = True, compile: bool | int = False) -> NirModule:
    """Build a :class:`NirModule` running ``graph`` with ``dynamics``.

    Args:
        graph: a :class:`~nirbridge.graph.Graph` (or a ``nir.NIRGraph``).
        dynamics: the :class:`~nirbridge.dynamics.Dynamics` (dt, method, reset, ...).
        dtype: ``torch.float32`` (default) or ``torch.float64``; parameters are cast to it
            (``from_torch`` gives the original arrays back).
        hoist: run the stateless nodes fed only by graph inputs (e.g. the input projection) over
            all ``T*B`` rows before the time loop (one large product instead of T small ones;
            it holds their ``(T, B, ...)`` outputs in memory). Measured on a shared 2-core CPU,
            torch 2.13, float32, binary inputs, no_grad, one intra-op thread, process CPU time,
            best of 15 interleaved runs: 700->256 LIF->20 LI at B=64, T=500: 0.19 s hoisted vs
            0.20 s per step; the Braille graph at B=256, T=256: 0.048 s vs 0.047 s (no
            measurable difference: its projection is 12->38). Outputs are identical.
        compile: run the time loop as ``torch.compile``-d chunks of 8 steps (an int sets the chunk
            length): each chunk becomes one fused program, which removes most of the per-step
            overhead of eager torch. Compiling takes seconds, once per input shape and set of
            recorded values. (``torch.compile(module)`` also works, but it unrolls the whole
            time loop into one program, which compiles slowly for long sequences.)

    The node updates are those of :mod:`nirbridge.kernels`; a kernel registered for torch only
    with ``nirbridge.kernels.register_kernel(type, kernel, backend="torch")`` replaces the shared
    one in modules built afterwards.
    """
    if isinstance(graph, nir.NIRGraph):
        graph = Graph.from_nir(graph)
    check_graph(graph, "to_torch")
    chunk = (8 if compile is True else int(compile)) if compile else 0
    if chunk < 0:
        raise ValueError(f"compile={compile!r}: give True or a positive chunk length")
    return NirModule(build_program(graph, dynamics, "torch"), _torch_dtype(dtype), hoist=hoist,
                     compile_chunk=chunk)


class TorchAdapter:
    """The torch backend of :func:`nirbridge.simulate` (``torch.no_grad()``, NumPy arrays out)."""

    name = "torch"

    def simulate(self, prog: Program, x, *, record=None, dtype=None, progress=False) -> dict:
        module = NirModule(prog, _torch_dtype(dtype))
        with torch.no_grad():
            result, _ = module.run(x, record=record, progress=progress)
        return {k: v.cpu().numpy() for k, v in result.items()}


# ---------------------------------------------------------------------------- from torch
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

