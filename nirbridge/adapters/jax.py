r"""The JAX backend: a graph as a pure, jit-compiled ``lax.scan`` over time.

:func:`to_jax` turns a :class:`~nirbridge.graph.Graph` and its :class:`~nirbridge.dynamics.Dynamics`
into a :class:`JaxModel`: a params pytree ``{flat node name: {field: array}}`` holding every NIR
floating-point parameter, and pure functions over it:

* ``model.step(params, state, x_t) -> (state, outputs_t)``: one time step of the whole graph;
* ``model.run(params, x, state=None, record=None) -> (outputs, state)``: the whole sequence, one
  ``lax.scan`` over time inside one ``jax.jit`` (traced and compiled once per input shape).

Both are ``jax.jit``-, ``jax.grad``- and ``jax.vmap``-able. The node updates are the shared kernels
of :mod:`nirbridge.kernels` (the equations are in :mod:`nirbridge.dynamics`); this module only
provides their array operations (:class:`JaxOps`) and the time loop.

Gradients: a spike ``z = [v > v_threshold]`` (``>=`` with ``Dynamics(threshold=">=")``) keeps its
exact 0/1 forward value, and its derivative is replaced by a surrogate chosen by
``Dynamics.surrogate``. The default is ``"fast_sigmoid"`` with ``surrogate_slope=25``:
``dz/dv = 1 / (1 + 25 |v - v_threshold|)^2``; ``"sigmoid"`` gives ``slope s (1 - s)`` with
``s = sigmoid(slope (v - v_threshold))``, ``"straight_through"`` gives 1. The derivative with
respect to the threshold is minus the one with respect to ``v``.

Hoisting: a stateless node fed only by the graph's inputs (``Program.hoistable``, e.g. the first
Affine or Conv) can run on all ``T*B`` rows at once before the scan, as one large product, instead
of ``T`` small ones inside it. On CPU that pays only for small batches: ``hoist="auto"`` (the
default) hoists dense products when ``B <= 32`` and nothing otherwise; see :data:`HOIST_AUTO_TYPES`
for the measurements behind the rule.

Channels-last regions: XLA:CPU runs an NCHW convolution inside a loop body (the scan) about 15x
slower than a channels-last one (jax-ml/jax#12868). So ``run`` keeps the images of a convolutional
region as ``(B, H, W, C)`` for the whole scan: the graph input is transposed once, outside the
scan; the region's convolution weights (OIHW -> HWIO) and neuron coefficients ((C, H, W) ->
(H, W, C)) are moved once per run, also outside it; the only transposes left inside the scan are
where a region ends (before a Flatten, or any other node outside the region). The rule that picks
the region is :func:`channels_last_nodes`; ``layout="NCHW"`` turns it off. Every public value
keeps NIR's ``(C, H, W)`` layout: outputs, recorded values, and the state ``run`` takes and
returns (the same layout as ``init_state`` and ``step``; a state moves across the boundary of
``run``, once per call, outside the scan). ``step`` always runs the plain NCHW program.

>>> import nir, numpy as np, nirbridge as nb
>>> g = nb.Graph.from_nir(nir.NIRGraph.from_list(
...     nir.LIF(tau=np.array([1e-3]), r=np.array([1.0]), v_leak=np.array([0.0]),
...             v_threshold=np.array([0.25]), v_reset=np.array([0.0]))))
>>> model = nb.to_jax(g, nb.Dynamics(dt=1e-4))
>>> out, state = model.run(model.params, np.ones((4, 1, 1), np.float32), record=[("lif", "v")])
>>> np.asarray(out["output"])[:, 0, 0].tolist()
[0.0, 0.0, 1.0, 0.0]
>>> nb.from_jax(model, model.params).equals(g)
True
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..errors import InputError, ParameterError, node_error
from ..graph import Graph
from ..kernels import KERNELS, Kernel, NamespaceOps
from ..program import (
    Program,
    build_program,
    check_graph,
    graph_step,
    init_state,
    normalize_inputs,
    parse_record,
    prepare,
    resolve_dtype,
    run_stateless,
    write_back,
)
from ..reference import cast_params

__all__ = ["JaxOps", "JaxOpsNHWC", "JaxModel", "JaxAdapter", "Outputs", "to_jax", "from_jax", "spike",
           "channels_last_nodes", "CHANNELS_LAST_TYPES"]

#: ``hoist="auto"``: hoist dense products (these node types, and the stateless nodes feeding them)
#: when the batch has at most :data:`HOIST_AUTO_MAX_BATCH` rows; otherwise keep every node in the
#: scan. Measured on a 2-core CPU shared with other jobs (jax 0.10.2, float32, the whole jitted
#: ``run`` after warm-up, fastest of 7, hoisted vs in the scan):
#: 700->256 LIF->20 LI, T=500 (first Affine): B=1 0.005 vs 0.045 s, B=4 0.009 vs 0.027 s,
#: B=16 0.038 vs 0.053 s, B=32 0.068 vs 0.085 s, B=64 0.174 vs 0.148 s, B=256 0.72 vs 0.54 s.
#: Braille, T=256 (Affine 12->38): B=1 0.0012 vs 0.0012 s, B=32 0.0043 vs 0.0037 s, B=256 0.0136
#: vs 0.0118 s. CNN ``cnn_sinabs.nir``, T=100 (first Conv2d): B=1 0.013 vs 0.014 s, B=8 0.089 vs
#: 0.064 s, B=32 0.34 vs 0.27 s. A B-row product runs efficiently from about 32 rows on; beyond
#: that, hoisting only adds a round trip of its (T, B, out) result through memory. Convolutions
#: never gained, so they stay in the scan; re-measured with channels-last regions (the CNN, T=100,
#: median of 15): B=1 9.4 vs 10.1 ms, B=8 47 vs 52 ms, B=32 185 vs 155 ms: still no clear gain.
HOIST_AUTO_TYPES = frozenset({"Affine", "Linear"})
HOIST_AUTO_MAX_BATCH = 32


# ---------------------------------------------------------------------------- spikes
@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def spike(v, threshold, inclusive: bool = False, surrogate: str = "fast_sigmoid", slope: float = 25.0):
    """``(v > threshold)`` (``>=`` if ``inclusive``) as 0/1 in v's dtype, with a surrogate derivative.

    The derivative w.r.t. ``v`` is ``surrogate``'s (``"fast_sigmoid"``: ``1/(1 + slope|v - thr|)^2``,
    the default, slope 25; ``"sigmoid"``: ``slope s (1 - s)``, ``s = sigmoid(slope (v - thr))``;
    ``"straight_through"``: 1); the one w.r.t. ``threshold`` is its negative.

    >>> import jax, jax.numpy as jnp
    >>> float(spike(jnp.float32(0.3), jnp.float32(0.2)))
    1.0
    >>> round(float(jax.grad(spike)(jnp.float32(0.2), jnp.float32(0.2))), 4)
    1.0
    """
    z = v >= threshold if inclusive else v > threshold
    return z.astype(v.dtype)


@spike.defjvp
def _spike_jvp(inclusive, surrogate, slope, primals, tangents):
    v, threshold = primals
    dv, dthr = tangents
    z = spike(v, threshold, inclusive, surrogate, slope)
    d = v - threshold
    if surrogate == "fast_sigmoid":
        g = 1 / (1 + slope * jnp.abs(d)) ** 2
    elif surrogate == "sigmoid":
        s = jax.nn.sigmoid(slope * d)
        g = slope * s * (1 - s)
    else:  # straight_through
        g = jnp.ones_like(d)
    return z, g * (dv - dthr)


# ---------------------------------------------------------------------------- array operations
class JaxOps(NamespaceOps):
    """The kernels' array operations in ``jax.numpy`` / ``lax`` (PyTorch layouts NC[H[W]], OI[H[W]])."""

    xp = jnp
    name = "jax"

    def const(self, value, like):
        return jnp.asarray(value, dtype=like.dtype)

    def zeros(self, shape, dtype):
        return jnp.zeros(shape, dtype=dtype)

    def spike(self, v, threshold, inclusive, surrogate, slope):
        return spike(v, threshold, inclusive, surrogate, slope)

    def affine(self, x, w, b):
        if x.ndim > 2:  # one 2-D matmul: XLA picks a much slower kernel for the 3-D einsum on CPU
            y = (x.reshape(-1, x.shape[-1]) @ w.T).reshape(x.shape[:-1] + (w.shape[0],))
        else:
            y = x @ w.T
        return y if b is None else y + b

    def conv(self, x, w, b, geom, nd):
        # channels-last inside: XLA:CPU runs an NCHW convolution inside a loop body (our scan) about
        # 15x slower than a channels-last one (jax-ml/jax#12868); the transposes cost far less
        last = (0,) + tuple(range(2, nd + 2)) + (1,)  # N C S... -> N S... C
        y = lax.conv_general_dilated(
            jnp.transpose(x, last), jnp.transpose(w, tuple(range(2, nd + 2)) + (1, 0)),
            window_strides=tuple(geom["stride"]), padding=[tuple(p) for p in geom["padding"]],
            rhs_dilation=tuple(geom["dilation"]), feature_group_count=geom["groups"],
            dimension_numbers=("NWC", "WIO", "NWC") if nd == 1 else ("NHWC", "HWIO", "NHWC"),
        )
        y = jnp.transpose(y, (0, nd + 1) + tuple(range(1, nd + 1)))
        return y if b is None else y + b.reshape((1, -1) + (1,) * nd)

    def pool(self, x, geom, average):
        (ph, pw), (kh, kw), (sh, sw) = geom["padding"], geom["kernel"], geom["stride"]
        # the init value must be a concrete 0 (a NumPy one): a traced jnp.zeros inside jit makes this
        # a generic reduce_window, which JAX cannot differentiate (a window sum it can)
        y = lax.reduce_window(x, np.zeros((), x.dtype), lax.add, (1, 1, kh, kw), (1, 1, sh, sw),
                              ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        if average:  # PyTorch's default count_include_pad=True: divide by the kernel area
            y = y / jnp.asarray(kh * kw, dtype=x.dtype)
        return y

    def concat1(self, a, b):
        return jnp.concatenate([a, b], axis=1)


class JaxOpsNHWC(JaxOps):
    """:class:`JaxOps` for images kept channels-last: ``conv`` and ``pool`` take ``x`` as (N, H, W, C)
    and return (N, H', W', C'); ``conv``'s weight is HWIO (``OIHW.transpose(2, 3, 1, 0)``, moved
    once per run) and its bias (O,). Only 2-D images: Conv1d never runs channels-last."""

    name = "jax-nhwc"

    def conv(self, x, w, b, geom, nd):
        y = lax.conv_general_dilated(
            x, w, window_strides=tuple(geom["stride"]), padding=[tuple(p) for p in geom["padding"]],
            rhs_dilation=tuple(geom["dilation"]), feature_group_count=geom["groups"],
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y if b is None else y + b

    def pool(self, x, geom, average):
        (ph, pw), (kh, kw), (sh, sw) = geom["padding"], geom["kernel"], geom["stride"]
        y = lax.reduce_window(x, np.zeros((), x.dtype), lax.add, (1, kh, kw, 1), (1, sh, sw, 1),  # concrete 0
                              ((0, 0), (ph, ph), (pw, pw), (0, 0)))
        if average:  # PyTorch's default count_include_pad=True: divide by the kernel area
            y = y / jnp.asarray(kh * kw, dtype=x.dtype)
        return y


OPS = JaxOps()
OPS_NHWC = JaxOpsNHWC()


# ---------------------------------------------------------------------------- channels-last regions
#: Node types whose arrays may stay channels-last, ``(B, H, W, C)``, inside the scan: the 2-D
#: convolution and pools, and the element-wise nodes (their per-element parameters have the node's
#: (C, H, W) shape). Graph inputs, graph outputs and the Input/Output nodes of nested graphs
#: (identities) join a region too. See :func:`channels_last_nodes` for the rule.
CHANNELS_LAST_TYPES = frozenset({"Conv2d", "SumPool2d", "AvgPool2d", "I", "IF", "LI", "LIF", "CubaLI", "CubaLIF",
                                 "Scale", "Threshold"})


def channels_last_nodes(prog: Program) -> tuple[frozenset, str]:
    """The nodes :meth:`JaxModel.run` keeps channels-last, and why (a sentence).

    The rule, per graph:

    1. *Candidates*: nodes of :data:`CHANNELS_LAST_TYPES` whose input and output are (C, H, W)
       images and that run the shared kernel (not a backend override), plus Input, Output and
       nested-graph identity nodes carrying (C, H, W) images.
    2. *Regions*: the groups of candidates connected through forward edges. A region with a Conv2d
       runs channels-last; one without (pools and neurons only) gains nothing and stays NCHW.
    3. *Fallback*: the whole graph runs NCHW (today's plain program) when a region
       (a) has an edge carrying the previous step's output into or out of it (a recurrent edge, or
       a delayed edge of ``Dynamics(output_delay=1)``),
       (b) has a node fed from outside it (e.g. a Delay between two convolutions), or
       (c) feeds a node that also sums sources from outside it (fan-in mixing the layouts).

    A region ends where its values flow into a node outside it (a Flatten, a Delay, ...): that
    node's input is transposed back to (C, H, W) in each step.

    >>> import nirbridge as nb
    >>> from nirbridge.program import build_program
    >>> g = nb.load(nb.examples.path("cnn_sinabs"))
    >>> last, why = channels_last_nodes(build_program(g, nb.Dynamics(dt=1.0), "jax"))
    >>> sorted(last)
    ['0', '1', '2', '3', '4', '5', '6', '7', 'input']
    """
    steps = prog.steps
    consumers: dict[str, list[str]] = {s.name: [] for s in steps}
    for s in steps:
        for src, _ in s.sources:
            consumers[src].append(s.name)

    def image(shape) -> bool:
        return len(tuple(shape)) == 3

    def candidate(s) -> bool:
        if s.role == "input":
            return image(s.output_shape)
        if s.role in ("output", "identity"):
            return image(s.input_shape) and image(s.output_shape)
        return (s.node.type in CHANNELS_LAST_TYPES and image(s.input_shape) and image(s.output_shape)
                and prog.kernels[s.name] is KERNELS.get(s.node.type))

    cand = {s.name for s in steps if candidate(s)}
    # regions: connected components of the candidates through forward edges (either direction)
    region: dict[str, int] = {}
    for start in (s.name for s in steps if s.name in cand):
        if start in region:
            continue
        region[start], todo = len(region), [start]
        rid = region[start]
        while todo:
            n = todo.pop()
            links = [src for src, back in prog.feeds[n] if not back] + [
                c for c in consumers[n] if not dict(prog.feeds[c])[n]]
            for m in links:
                if m in cand and m not in region:
                    region[m] = rid
                    todo.append(m)
    with_conv = {region[s.name] for s in steps if s.name in cand and s.node.type == "Conv2d"}
    last = frozenset(n for n, r in region.items() if r in with_conv)
    if not last:
        return last, "NCHW: no Conv2d on (C, H, W) images"
    for s in steps:
        feeds = prog.feeds[s.name]
        for src, back in feeds:
            if back and (src in last or s.name in last):
                return frozenset(), (f"NCHW: the edge {src!r} -> {s.name!r} carries the previous step's output "
                                     "into or out of a channels-last region")
        inside = [src in last for src, _ in feeds]
        if s.name in last and not all(inside):
            return frozenset(), f"NCHW: {s.name!r} is in a channels-last region but is fed from outside it"
        if s.name not in last and any(inside) and not all(inside):
            return frozenset(), f"NCHW: {s.name!r} sums sources from inside and outside a channels-last region"
    return last, "channels-last: " + ", ".join(sorted(last))


def _to_last(a):
    """(..., C, H, W) -> (..., H, W, C)."""
    return jnp.moveaxis(a, -3, -1)


def _to_first(a):
    """(..., H, W, C) -> (..., C, H, W)."""
    return jnp.moveaxis(a, -1, -3)


def _coeff_to_last(a):
    """A per-element coefficient that broadcasts against (C, H, W), moved to broadcast against (H, W, C)."""
    a = jnp.asarray(a)
    if a.ndim > 3:  # no kernel makes one; keep it rather than guess
        return a
    return _to_last(jnp.reshape(a, (1,) * (3 - a.ndim) + a.shape))


def _layout_kernels(prog: Program, last: frozenset) -> Program:
    """``prog`` with the kernels of the channels-last nodes wrapped: they run with
    :class:`JaxOpsNHWC` on coefficients moved to channels-last by their ``prepare``; a node outside
    the regions that reads from one gets its input moved back to (C, H, W) (all its sources are
    inside the region, :func:`channels_last_nodes` checks). Input and Output roles are not wrapped
    (graph_step copies inputs; an Output is an identity)."""
    kernels = dict(prog.kernels)
    for s in prog.steps:
        k = prog.kernels[s.name]
        if s.name in last and s.role == "compute":
            conv = s.node.type == "Conv2d"

            def prepare(ops, p, st, dyn, k=k, conv=conv):
                c = k.prepare(ops, p, st, dyn)
                if conv:  # OIHW -> HWIO, once per run; the bias (O,) broadcasts on the last axis already
                    return {f: (jnp.transpose(v, (2, 3, 1, 0)) if f == "weight" else v) for f, v in c.items()}
                return {f: _coeff_to_last(v) for f, v in c.items()}

            def step(ops, c, st, state, x, k=k):
                return k.step(OPS_NHWC, c, st, state, x)

            kernels[s.name] = Kernel(k.static, prepare, k.init, step)
        elif s.name not in last and s.role != "input" and any(src in last for src, _ in s.sources):

            def step(ops, c, st, state, x, k=k):
                return k.step(ops, c, st, state, _to_first(x))

            kernels[s.name] = Kernel(k.static, k.prepare, k.init, step)
    return dataclasses.replace(prog, kernels=kernels)


# ---------------------------------------------------------------------------- outputs pytree
class Outputs(dict):
    """The dict ``run`` returns: output names, recorded node names and ``(node, var)`` keys.

    A pytree that keeps insertion order (a plain dict cannot mix string and tuple keys in JAX).
    """


def _outputs_flatten_with_keys(o):
    return [(jax.tree_util.DictKey(k), v) for k, v in o.items()], tuple(o)


jax.tree_util.register_pytree_with_keys(
    Outputs, _outputs_flatten_with_keys, lambda keys, values: Outputs(zip(keys, values)),
    lambda o: (list(o.values()), tuple(o)),
)


# ---------------------------------------------------------------------------- the model
def _check_dtype(dtype: np.dtype) -> None:
    if dtype == np.float64 and not jax.config.read("jax_enable_x64"):
        raise InputError("dtype float64 needs JAX's 64-bit mode, which is off. Fix: call "
                         "jax.config.update('jax_enable_x64', True) at start-up, or use dtype='float32'")


class JaxModel:
    """A graph compiled for JAX: ``params`` and pure ``init_state`` / ``step`` / ``run``.

    Build it with :func:`to_jax`. Attributes: ``params`` (``{node: {field: array}}`` in the compute
    dtype, every NIR float parameter), ``graph``, ``dynamics``, ``dtype``, ``program``,
    ``channels_last`` (the nodes ``run`` keeps as (B, H, W, C) inside the scan, see
    :func:`channels_last_nodes`) with ``layout_reason``, and ``traces`` (how many times ``run``
    was traced: once per input shape and record choice).
    """

    def __init__(self, program: Program, *, dtype: Any = "float32", hoist: Any = "auto", checkpoint: bool = False,
                 layout: str = "auto"):
        self.dtype = resolve_dtype(dtype)
        _check_dtype(self.dtype)
        if not (hoist == "auto" or hoist is True or hoist is False):
            raise InputError(f"hoist={hoist!r} is not one of 'auto', True, False. Fix: pick one of them")
        if not (isinstance(layout, str) and layout in ("auto", "NCHW")):
            raise InputError(f"layout={layout!r} is not one of 'auto', 'NCHW'. Fix: pick one of them")
        self.program = program
        self.hoist = hoist
        self.checkpoint = bool(checkpoint)
        self.layout = layout
        if layout == "auto":
            self.channels_last, self.layout_reason = channels_last_nodes(program)
        else:
            self.channels_last, self.layout_reason = frozenset(), "NCHW: layout='NCHW'"
        # the program run() scans: the channels-last nodes' kernels wrapped (the plain one if none)
        self._scan_program = _layout_kernels(program, self.channels_last) if self.channels_last else program
        self.params = {n: {f: jnp.asarray(v) for f, v in fields.items()}
                       for n, fields in cast_params(program, self.dtype).items() if fields}
        self.traces = 0
        self._compiled: dict[tuple, Any] = {}

    @property
    def graph(self) -> Graph:
        """The :class:`~nirbridge.graph.Graph` the model was built from (original parameters)."""
        return self.program.graph

    @property
    def dynamics(self):
        """The :class:`~nirbridge.dynamics.Dynamics` the model runs."""
        return self.program.dynamics

    def __repr__(self) -> str:
        return (f"JaxModel({self.graph!r}, {self.dynamics!r}, dtype={self.dtype.name}, hoist={self.hoist!r}, "
                f"checkpoint={self.checkpoint}, layout={self.layout!r})")

    # -------------------------------------------------------------- pure functions
    def init_state(self, batch: int) -> dict:
        """The initial state for a batch (zeros unless the Dynamics say otherwise, e.g. ``v_init``):
        ``{"nodes": {node: {var: array}}, "prev": {recurrent source: array}}``."""
        return init_state(OPS, self.program, int(batch), self.dtype)

    def step(self, params: Mapping, state: Mapping, x_t: Any) -> tuple[dict, dict]:
        """One time step: ``x_t`` is ``(B, *shape)`` or ``{input name: array}``; returns
        ``(state, {output name: (B, *shape)})``. Pure; ``run`` is the fast way over a sequence."""
        _check_dtype(self.dtype)
        params = self._cast_params(params)
        x = {k: v[None] for k, v in x_t.items()} if isinstance(x_t, Mapping) else jnp.asarray(x_t)[None]
        inputs, _, _ = normalize_inputs(self.program, x, self.dtype, convert=_convert)
        coeffs = prepare(OPS, self.program, params)
        state, outs = graph_step(OPS, self.program, coeffs, state, {n: v[0] for n, v in inputs.items()})
        return state, {o: outs[o] for o in self.program.outputs}

    def run(self, params: Mapping, x: Any, state: Mapping | None = None, record: Any = None):
        """Run a whole sequence: ``x`` is ``(T, B, *shape)`` or ``{input name: array}``.

        Returns ``(outputs, final state)``; ``outputs`` maps output names, recorded node names and
        recorded ``(node, var)`` pairs to ``(T, B, ...)`` arrays (see :func:`nirbridge.simulate`).
        One ``lax.scan`` inside one ``jax.jit``, compiled once per input shape and ``record``.
        ``state`` and the final state have the layout of :meth:`init_state` (NIR's (C, H, W) per
        image, also for the nodes kept channels-last inside the scan).
        """
        _check_dtype(self.dtype)
        inputs, _, batch = normalize_inputs(self.program, x, self.dtype, convert=_convert)
        nodes, states = parse_record(self.program, record)
        keys = tuple(dict.fromkeys([*self.program.outputs, *nodes]))
        params = self._cast_params(params)
        if state is None:
            state = self.init_state(batch)
        fn = self._compiled.get((keys, tuple(states)))
        if fn is None:
            fn = jax.jit(functools.partial(self._scan, keys=keys, states=tuple(states)))
            self._compiled[(keys, tuple(states))] = fn
        return fn(params, inputs, state)

    # -------------------------------------------------------------- internals
    def _cast_params(self, params: Mapping) -> dict:
        """Check ``params`` has this model's nodes, fields and shapes; cast to the compute dtype."""
        if not isinstance(params, Mapping):
            raise InputError(f"params must be a dict {{node: {{field: array}}}}, got {type(params).__name__}. "
                             "Fix: start from model.params")
        extra = sorted(set(params) - set(self.params))
        if extra:
            raise node_error(ParameterError, extra[0], None, "params has a node the model has no parameters for",
                             f"use the nodes of model.params: {sorted(self.params)}")
        out = {}
        for node, fields in self.params.items():
            given = params.get(node)
            if not isinstance(given, Mapping) or set(given) != set(fields):
                have = sorted(given) if isinstance(given, Mapping) else None
                raise node_error(ParameterError, node, None, f"params has fields {have}, expected {sorted(fields)}",
                                 "pass every field of model.params[node]")
            out[node] = {}
            for f, ref in fields.items():
                a = given[f]
                if tuple(jnp.shape(a)) != ref.shape:
                    raise node_error(ParameterError, node, f, f"has shape {tuple(jnp.shape(a))}, expected {ref.shape}",
                                     "keep the shapes of model.params")
                out[node][f] = jnp.asarray(a, dtype=self.dtype)
        return out

    def hoisted(self, batch: int) -> frozenset:
        """The nodes ``run`` computes over all T*B rows before the scan, for this batch size."""
        prog = self.program
        if self.hoist is False or (self.hoist == "auto" and batch > HOIST_AUTO_MAX_BATCH):
            return frozenset()
        if self.hoist is True:
            return prog.hoistable
        # auto: dense products, and every hoistable node feeding one
        chosen: set[str] = set()
        for s in reversed(prog.steps):
            if s.name in chosen or (s.name in prog.hoistable and s.node.type in HOIST_AUTO_TYPES):
                chosen.add(s.name)
                chosen.update(src for src, _ in s.sources if src in prog.hoistable)
        return frozenset(chosen)

    def _scan(self, params, inputs, state, *, keys, states):
        self.traces += 1  # runs at trace time only
        prog, last = self._scan_program, self.channels_last
        coeffs = prepare(OPS, prog, params)  # channels-last nodes: their coefficients moved, once per run
        T, B = next(iter(inputs.values())).shape[:2]
        hoisted = self.hoisted(B)
        if last:  # once per run, outside the scan: the region's inputs and states to (..., H, W, C)
            inputs = {n: _to_last(a) if n in last else a for n, a in inputs.items()}
            state = {**state, "nodes": _map_nodes(state["nodes"], last, _to_last)}
        # hoisted nodes run over all T*B rows at once, in plan order
        flat = {n: a.reshape((T * B,) + a.shape[2:]) for n, a in inputs.items()}
        flat = run_stateless(OPS, prog, coeffs, flat, hoisted)
        # what the scan needs from outside it: sources of the nodes run in it, recorded nodes
        needed = set(keys) | set(prog.recurrent_sources)
        for s in prog.steps:
            if s.role != "input" and s.name not in hoisted:
                needed.update(src for src, _ in s.sources)
        given = set(prog.inputs) | hoisted
        xs = {n: flat[n].reshape((T, B) + flat[n].shape[1:]) for n in given & needed}
        unused = dict.fromkeys(given - needed)  # graph_step copies them without reading them

        def body(carry, xs_t):
            carry, outs = graph_step(OPS, prog, coeffs, carry, {**xs_t, **unused}, skip=hoisted)
            return carry, tuple(outs[k] for k in keys) + tuple(carry["nodes"][n][v] for n, v in states)

        if self.checkpoint:
            body = jax.checkpoint(body)
        state, ys = lax.scan(body, state, xs, length=T)
        if last:  # back to (C, H, W), over the whole sequence at once
            ys = tuple(_to_first(y) if (k if isinstance(k, str) else k[0]) in last else y
                       for k, y in zip([*keys, *states], ys))
            state = {**state, "nodes": _map_nodes(state["nodes"], last, _to_first)}
        return Outputs(zip([*keys, *states], ys)), state


def _map_nodes(nodes: Mapping, names: frozenset, fn) -> dict:
    """``{node: {var: fn(array)}}`` for the nodes in ``names``, the others unchanged."""
    return {n: ({v: fn(a) for v, a in st.items()} if n in names else st) for n, st in nodes.items()}


def _convert(v, dtype):
    return jnp.asarray(v, dtype=dtype)


def to_jax(graph: Graph, dynamics, *, dtype: Any = "float32", hoist: Any = "auto",
           checkpoint: bool = False, layout: str = "auto") -> JaxModel:
    """Compile ``graph`` with ``dynamics`` for JAX.

    Args:
        graph: a :class:`~nirbridge.graph.Graph`.
        dynamics: the :class:`~nirbridge.dynamics.Dynamics` (dt, method, reset, surrogate, ...).
            Spikes train through a surrogate derivative, by default ``"fast_sigmoid"`` with slope
            25: ``1 / (1 + 25 |v - v_threshold|)^2``.
        dtype: ``"float32"`` (default) or ``"float64"`` (needs ``jax_enable_x64``).
        hoist: ``"auto"`` (default: hoist Affine/Linear when the batch is at most 32, see
            :data:`HOIST_AUTO_TYPES`), ``True`` (run every stateless node fed only by the inputs
            over all T*B rows before the scan) or ``False`` (run every node in the scan).
        checkpoint: wrap the scan body in ``jax.checkpoint`` (less memory under ``jax.grad`` for
            long sequences, at the cost of recomputing each step in the backward pass).
        layout: ``"auto"`` (default: keep convolutional regions channels-last inside the scan, by
            the rule of :func:`channels_last_nodes`) or ``"NCHW"`` (NIR's layout everywhere, the
            convolutions transposing around each call). Results and states are (C, H, W) either way.

    Returns:
        a :class:`JaxModel`; ``model.run(model.params, x)`` runs a sequence.
    """
    check_graph(graph, "to_jax")
    return JaxModel(build_program(graph, dynamics, "jax"), dtype=dtype, hoist=hoist, checkpoint=checkpoint,
                    layout=layout)


def from_jax(model: JaxModel, params: Mapping | None = None) -> Graph:
    """The model's graph with ``params`` (default ``model.params``) written back, bit-exact.

    A parameter equal to the original cast to the compute dtype keeps the original array (its
    dtype included, e.g. float64 neuron parameters beside float32 weights); a changed one is stored
    cast to the original dtype. Nodes or fields missing from ``params`` keep their original values.
    """
    if not isinstance(model, JaxModel):
        raise InputError(f"from_jax() takes a JaxModel (from to_jax), got {type(model).__name__}. "
                         "Fix: from_jax(model, trained_params) with the model nb.to_jax returned")
    params = model.params if params is None else params
    dtype = model.dtype

    def unchanged(value, orig: np.ndarray) -> bool:
        new = np.asarray(value)
        return new.dtype == dtype and new.tobytes() == orig.astype(dtype).tobytes()

    return write_back(model.program, params, unchanged)


class JaxAdapter:
    """The JAX backend of :func:`nirbridge.simulate` (returns NumPy arrays; no progress bar:
    the whole sequence is one compiled call)."""

    name = "jax"

    def simulate(self, prog: Program, x, *, record=None, dtype=None, progress=False) -> dict:
        model = JaxModel(prog, dtype=dtype)
        outs, _ = model.run(model.params, x, record=record)
        return {k: np.asarray(v) for k, v in outs.items()}
