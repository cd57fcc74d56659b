"""The PyTorch backend: a NIR graph as a ``torch.nn.Module``.

:func:`to_torch` builds a :class:`NirModule` that runs the kernels of :mod:`nirbridge.kernels`
(the same code the NumPy reference runs) with :class:`TorchOps`, through the one time loop of
:func:`nirbridge.program.run_loop`:

* ``module(x)`` runs a whole time-major sequence ``(T, B, *input_shape)`` (or
  ``{input name: tensor}``) and returns the output sequence (a tensor for one output, a dict
  for several); ``module.run(x, state=None, record=None) -> (outputs, state)`` also returns
  recorded nodes/states and the final state; ``module.step(state, x_t) -> (state, outputs_t)``
  advances one step; ``module.init_state(batch)``: the protocol every backend's model follows.
* Per run, the coefficients (``dt/tau``, ``exp(-dt/tau)``) are computed once, outside the time
  loop, and the stateless nodes fed only by graph inputs (``Program.hoistable``, e.g. the input
  projection) run once over all ``T*B`` rows before the loop (``hoist=True``, the default). The
  loop takes the steps of a sequence with one ``unbind``, so training is linear in T.
* Spikes are a ``torch.autograd.Function``: forward ``[v > thr]`` (or ``>=``), backward the
  surrogate of :func:`nirbridge.kernels.surrogate_derivative`, so converted models train.
* State is created on the device and in the dtype of the module (``module.to(...)`` moves it);
  ``torch.compile`` and the ``meta`` device work.

Parameter names. Every trainable floating-point NIR parameter is a ``torch.nn.Parameter`` (a
structural one, :data:`nirbridge.nodes.PARAM_KINDS` ``"structure"`` such as a Delay's ``delay``,
is a buffer: it was fixed when the module was built) under the key ``"<flat node name>.<field>"``
of ``state_dict()``: ``"fc1.weight"``, ``"lif1.lif.tau"`` for node ``lif`` of the nested graph
``lif1``. A name component that is not a valid attribute (empty, or the name of an attribute of
the module such as ``"forward"`` or ``"step"``) gets a trailing ``"_"``; ``module.param_paths``
maps each flat node name to its prefix.

:func:`nirbridge.from_torch` (:mod:`nirbridge.backends.torch_fx`) turns a module back into a graph.

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

import collections
import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._util import progress_bar
from ..dynamics import Dynamics
from ..errors import InputError, ParameterError, UnsupportedError, node_error
from ..graph import Graph
from ..io import as_graph
from ..kernels import NamespaceOps, surrogate_derivative
from ..program import (
    Program,
    build_program,
    check_kinds,
    export_state,
    float_params,
    graph_step,
    import_state,
    init_carry,
    normalize_inputs,
    param_kinds,
    parse_record,
    prepare,
    python_loop,
    resolve_dtype,
    run_loop,
    structure_key,
    write_back,
)
from . import require

torch = require("torch", "torch")
nn = torch.nn
F = torch.nn.functional

__all__ = ["NirModule", "TorchBackend", "TorchOps", "to_torch"]

_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


# ---------------------------------------------------------------------------- spikes
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
        gv = grad * surrogate_derivative(ctx.surrogate, v - thr, ctx.slope, torch)
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


#: How many programs ``compile=True`` modules share (by structure, Dynamics and dtype), least recently
#: used out; each keeps its compiled chunks (one per loop body, chunk length and input shape).
COMPILE_CACHE_SIZE = 32
_RUN_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_OPS: dict = {}  # device -> TorchOps


def _chunk(body, coeffs, carry, xs):
    """``K`` steps of ``body`` (the length of the arrays in ``xs``): what ``compile=True`` compiles."""
    return python_loop(torch.stack)(body, coeffs, carry, xs, next(iter(xs.values())).shape[0])


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
        self._run_key = None  # (structure, Dynamics, dtype) once needed: compiled programs are shared by it
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
                if s.node.spec.param_kinds[f] == "structure":  # fixed when the kernel was built
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

    @property
    def kinds(self) -> dict[str, dict[str, str]]:
        """``{node: {field: kind}}`` of every float parameter (:data:`nirbridge.nodes.PARAM_KINDS`)."""
        return param_kinds(self.program)

    def named_parameters_of_kind(self, kinds: Any = "weight"):
        """``(state_dict key, parameter)`` of the parameters of these kinds (default: the weights and
        biases of Affine, Linear, Conv and Scale nodes)."""
        kinds = check_kinds(kinds)
        for node, fields in self.kinds.items():
            for f, k in fields.items():
                if k in kinds and k != "structure":
                    yield f"{self.param_paths[node]}.{f}", getattr(self.get_submodule(self.param_paths[node]), f)

    def parameters_of_kind(self, kinds: Any = "weight"):
        """The parameters of these kinds: ``torch.optim.Adam(module.parameters_of_kind())`` trains the
        weights only. (Trained time constants are checked at every run under autograd: a time constant
        that reached 0 or below raises a ParameterError naming it.)"""
        return [p for _, p in self.named_parameters_of_kind(kinds)]

    def _check_trained(self, params: Mapping) -> None:
        """Under autograd, the time constants an optimizer may have moved must still be > 0 (one
        small reduction per trained time constant, once per run, outside the loop)."""
        if not torch.is_grad_enabled() or torch.compiler.is_compiling():  # (a check is a graph break)
            return
        for node, fields in self.kinds.items():
            for f, k in fields.items():
                t = params[node][f]
                if k == "time_constant" and t.requires_grad and t.device.type != "meta" and bool((t <= 0).any()):
                    low = float(t.detach().min())
                    raise node_error(ParameterError, node, f, f"a trained time constant reached {low:.3g} "
                                     "(<= 0), which no update can run with",
                                     "train the weights only (module.parameters_of_kind('weight')), lower the "
                                     "learning rate, or clamp the time constant after each optimizer step")

    def extra_repr(self) -> str:
        plan = self.graph.plan
        return (f"{len(plan.steps)} nodes, inputs={list(plan.inputs)}, outputs={list(plan.outputs)}, "
                f"{self.dynamics!r}")

    # ------------------------------------------------------------------ running
    def _ops(self) -> TorchOps:
        dev = self._anchor.device
        ops = _OPS.get(dev)
        if ops is None:  # one per device: the loop body (and what compile=True compiles) is cached per ops
            ops = _OPS[dev] = TorchOps(dev)
        return ops

    def _run_program(self) -> Program:
        """The program ``run`` executes. With ``compile=True``, the one every module of the same
        structure, Dynamics and dtype shares (so its compiled chunks are compiled once for all of
        them, parameters being arguments); else the module's own."""
        if not self.compile_chunk:
            return self.program
        if self._run_key is None:
            self._run_key = (structure_key(self.graph), self.dynamics, self._build_dtype)
        prog = _RUN_PROGRAMS.get(self._run_key)
        if prog is None:
            prog = _RUN_PROGRAMS[self._run_key] = self.program
            while len(_RUN_PROGRAMS) > COMPILE_CACHE_SIZE:
                _RUN_PROGRAMS.popitem(last=False)
        _RUN_PROGRAMS.move_to_end(self._run_key)
        return prog

    def _convert(self, v, dtype):
        if isinstance(v, torch.Tensor):
            return v.to(device=self._anchor.device, dtype=dtype)
        return torch.as_tensor(np.asarray(v), dtype=dtype, device=self._anchor.device)

    def _carry(self, ops, coeffs, state, batch):
        if state is None:
            return init_carry(ops, self.program, coeffs, batch, self._anchor.dtype)
        return import_state(self.program, state)

    def init_state(self, batch: int) -> dict:
        """The state at step 0 for a batch: ``{"nodes": {node: {var: tensor}}, "prev": {node: tensor}}``
        (``prev`` holds the previous-step outputs that recurrent edges carry)."""
        ops = self._ops()
        return export_state(self._carry(ops, prepare(ops, self.program, self.node_params()), None, int(batch)))

    def run(self, x: Any, state: Mapping | None = None, record: Any = None, *,
            progress: bool = False) -> tuple[dict, dict]:
        """Run a time-major sequence; return ``(result, final state)``.

        ``result`` maps each output name to its ``(T, B, *shape)`` tensor, plus each recorded node
        (by name) and state variable (by ``(node, var)``), as :func:`nirbridge.simulate` does.
        ``state`` continues from an earlier run (default: the initial state).
        """
        prog = self._run_program()
        ops = self._ops()
        inputs, T, B = normalize_inputs(prog, x, self._anchor.dtype, convert=self._convert)
        params = self.node_params()
        self._check_trained(params)
        coeffs = prepare(ops, prog, params)  # once per run, outside the loop
        carry = self._carry(ops, coeffs, state, B)
        rec = parse_record(prog, record)
        bar = progress_bar(T, progress, "torch")
        iterate = self._chunked(bar) if self.compile_chunk else python_loop(torch.stack, bar)
        try:
            result, carry = run_loop(ops, prog, coeffs, carry, inputs, iterate=iterate, record=rec,
                                     hoisted=prog.hoistable if self.hoist else frozenset())
        finally:
            if bar is not None:
                bar.close()
        return result, export_state(carry)

    def _chunked(self, bar):
        """``iterate`` of ``compile=True``: the loop in ``torch.compile``-d chunks of ``compile_chunk`` steps
        (one compiled program per loop body, chunk length and input shapes)."""

        prog = self._run_program()

        def iterate(body, coeffs, carry, xs, T):
            key = ("torch.compile", body)  # kept with the program's loop bodies, and dropped with it
            fn = prog._bodies.get(key)
            if fn is None:
                fn = prog._bodies[key] = torch.compile(functools.partial(_chunk, body), dynamic=False)
            K, parts = self.compile_chunk, []
            for t in range(0, T, K):
                carry, ys = fn(coeffs, carry, {n: v[t : t + K] for n, v in xs.items()})
                parts.append(ys)
                if bar is not None:
                    bar.update(min(K, T - t))
            return carry, tuple(p[0] if len(parts) == 1 else torch.cat(p) for p in zip(*parts))

        return iterate

    def __getstate__(self):  # pickle / deepcopy: the shared compiled programs are found again by key
        return {**self.__dict__, "_run_key": None}

    def _pick(self, outs: Mapping):
        names = self.program.outputs
        return outs[names[0]] if len(names) == 1 else {n: outs[n] for n in names}

    def forward(self, x: Any):
        """Run a time-major sequence ``(T, B, *shape)`` (or ``{input: tensor}``) from the initial state;
        return the outputs: a ``(T, B, *shape)`` tensor, or ``{output name: tensor}`` for several."""
        result, _ = self.run(x)
        return self._pick(result)

    def step(self, state: Mapping | None, x_t: Any) -> tuple[dict, dict]:
        """One time step: ``x_t`` is ``(B, *shape)`` (or ``{input: tensor}``); ``state`` from
        :meth:`init_state` or the previous step (None: the initial state). Returns
        ``(state, {output name: (B, *shape)})``.

        The coefficients are recomputed at every call (the parameters may change between steps);
        ``module.run(x)`` over a whole sequence computes them once.
        """
        prog = self.program
        ops = self._ops()
        seq = {k: v[None] for k, v in x_t.items()} if isinstance(x_t, Mapping) else _add_time(x_t)
        inputs, _, B = normalize_inputs(prog, seq, self._anchor.dtype, convert=self._convert)
        coeffs = prepare(ops, prog, self.node_params())
        carry, outs = graph_step(ops, prog, coeffs, self._carry(ops, coeffs, state, B),
                                 {n: v[0] for n, v in inputs.items()})
        return export_state(carry), {o: outs[o] for o in prog.outputs}

    # ------------------------------------------------------------------ back to NIR
    def to_graph(self) -> Graph:
        """The graph with the module's current parameters (see :func:`nirbridge.from_torch`)."""
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


def to_torch(graph: Any, dynamics: Dynamics, *, dtype: Any = torch.float32, hoist: Any = "auto",
             compile: bool | int = False) -> NirModule:
    """Build a :class:`NirModule` running ``graph`` with ``dynamics``.

    Args:
        graph: a :class:`~nirbridge.graph.Graph`, a ``nir.NIRGraph`` or the path of a ``.nir`` file.
        dynamics: the :class:`~nirbridge.dynamics.Dynamics` (dt, method, reset, ...).
        dtype: ``torch.float32`` (default) or ``torch.float64``; parameters are cast to it
            (``from_torch`` gives the original arrays back).
        hoist: ``"auto"`` (default) or ``True``: run the stateless nodes fed only by graph inputs
            (e.g. the input projection) over all ``T*B`` rows before the time loop (one large
            product instead of T small ones; it holds their ``(T, B, ...)`` outputs in memory);
            ``False``: every node inside the loop. Measured on a shared 2-core CPU, torch 2.13,
            float32, binary inputs, no_grad, one intra-op thread, best of 15 interleaved runs:
            700->256 LIF->20 LI at B=64, T=500: 0.19 s hoisted vs 0.20 s per step; the Braille
            graph at B=256, T=256: 0.048 s vs 0.047 s. Outputs are identical.
        compile: run the time loop as ``torch.compile``-d chunks of 8 steps (an int sets the chunk
            length): each chunk becomes one fused program, which removes most of the per-step
            overhead of eager torch. Compiling takes seconds, once per loop body (record set),
            chunk length and input shape; later runs reuse it, also in other modules of a graph
            with the same structure, Dynamics and dtype (:data:`COMPILE_CACHE_SIZE` kept).
            (``torch.compile(module)`` also works, but it unrolls the whole time loop into one
            program, which compiles slowly.)

    The node updates are those of :mod:`nirbridge.kernels`; a kernel registered for torch only
    with ``nirbridge.register_kernel(type, factory, backend="torch")`` replaces the shared
    one in modules built afterwards.
    """
    graph = as_graph(graph, "to_torch")
    if not (hoist == "auto" or hoist is True or hoist is False):
        raise InputError(f"hoist={hoist!r} is not one of 'auto', True, False. Fix: pick one of them")
    if isinstance(compile, bool) or compile is None:
        chunk = 8 if compile else 0
    elif isinstance(compile, int) and compile > 0:
        chunk = compile
    else:
        raise InputError(f"compile={compile!r} is not True, False or a positive chunk length. Fix: e.g. compile=True")
    return NirModule(build_program(graph, dynamics, "torch"), _torch_dtype(dtype), hoist=hoist is not False,
                     compile_chunk=chunk)


class TorchBackend:
    """The torch backend of :func:`nirbridge.simulate` (``torch.no_grad()``, NumPy arrays out)."""

    name = "torch"

    def simulate(self, graph, dynamics, x, *, record=None, dtype=None, progress=False) -> dict:
        module = NirModule(build_program(graph, dynamics, "torch"), _torch_dtype(dtype))
        with torch.no_grad():
            result, _ = module.run(x, record=record, progress=progress)
        return {k: v.cpu().numpy() for k, v in result.items()}
