r"""The JAX backend: a graph as a pure, jit-compiled ``lax.scan`` over time.

:func:`to_jax` turns a graph and its :class:`~nirbridge.dynamics.Dynamics` into a :class:`JaxModel`:
a params pytree ``{flat node name: {field: array}}`` holding every trainable NIR floating-point
parameter, and pure functions over it (the model's protocol, parameters first):

* ``model.init_state(batch)``: the state at step 0;
* ``model.step(params, state, x_t) -> (state, outputs_t)``: one time step of the whole graph;
* ``model.run(params, x, state=None, record=None) -> (outputs, state)``: the whole sequence, one
  ``lax.scan`` over time inside one ``jax.jit``, compiled once per input shape and dtype, record
  set and whether a state is given. The initial state, the casts of parameters and inputs to the
  compute dtype (a bool spike input stays bool until then) and every parameter check happen inside
  the compiled program or at trace time: a call costs what the compiled program costs.

``step`` and ``init_state`` are compiled too. All are ``jax.jit``-, ``jax.grad``- and
``jax.vmap``-able, and the model itself is a pytree whose leaves are its params
(``model(x)`` runs ``model.run(model.params, x)[0]``). The node updates are the shared kernels of
:mod:`nirbridge.kernels` (the equations are in :mod:`nirbridge.dynamics`); this module provides
their array operations (:class:`JaxOps`), its way to iterate (``lax.scan``) and two passes over
the program: hoisting and channels-last regions.

Gradients: a spike ``z = [v > v_threshold]`` (``>=`` with ``Dynamics(threshold=">=")``) keeps its
exact 0/1 forward value, and its derivative is replaced by the surrogate of
:func:`nirbridge.kernels.surrogate_derivative` chosen by ``Dynamics.surrogate`` (default
``"fast_sigmoid"``, slope 25: ``1 / (1 + 25 |v - v_threshold|)^2``). The derivative with respect
to the threshold is minus the one with respect to ``v``.

Hoisting: a stateless node fed only by the graph's inputs (``Program.hoistable``, e.g. the first
Affine or Conv) can run on all ``T*B`` rows at once before the scan, as one large product, instead
of ``T`` small ones inside it; see :data:`HOIST_AUTO_TYPES` for the rule of ``hoist="auto"``.

Channels-last regions: XLA:CPU runs an NCHW convolution inside a loop body (the scan) about 15x
slower than a channels-last one (jax-ml/jax#12868). So ``run`` keeps the images of a convolutional
region as ``(B, H, W, C)`` for the whole scan: inputs, states and the region's coefficients are
moved once per run, outside the scan, by the rule of each kernel's declared layout class
(:data:`nirbridge.kernels.LAYOUTS`); the only transposes left inside the scan are where a region
ends. :func:`channels_last_nodes` picks the regions; ``layout="NCHW"`` turns it off. Every public
value keeps NIR's ``(C, H, W)`` layout. ``step`` always runs the plain NCHW program.

Repeated :func:`nirbridge.simulate` calls reuse compiled models: :func:`compiled_model` keeps up
to :data:`CACHE_SIZE` of them, keyed by what the compiled program depends on (the graph's
structure, the Dynamics, dtype and options; parameter values are arguments).

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

import collections
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
    resolve_dtype,
    run_loop,
    structure_key,
    write_back,
)

__all__ = ["CACHE_SIZE", "HOIST_AUTO_MAX_BATCH", "HOIST_AUTO_TYPES", "HOIST_BLOCK_ROWS", "UNROLL_MAX_BATCH",
           "UNROLL_SMALL_BATCH", "JaxBackend", "JaxModel", "JaxOps",
           "JaxOpsNHWC", "Outputs", "batch_sharding", "channels_last_nodes", "clear_cache", "compiled_model",
           "from_jax", "place_batch", "replicated", "spike", "to_jax", "use_persistent_cache"]

#: ``hoist="auto"``: hoist dense products (these node types, and the hoistable nodes feeding them)
#: in blocks of :data:`HOIST_BLOCK_ROWS` rows: the scan runs over blocks of ``k = HOIST_BLOCK_ROWS //
#: B`` steps (all T steps when ``T*B`` is at most that), each block computing its hoisted products
#: as one ``(k*B, n_in)`` product, then scanning its ``k`` steps; from ``B >= HOIST_BLOCK_ROWS / 2``
#: nothing is hoisted (a block would be 1 or 2 steps: the plain scan). Measured on a 2-core CPU
#: (jax 0.10.2, XLA:CPU's YNNPACK matmuls, one core, CPU time, 700->256 LIF->20 LI, T=500): one
#: product over all T*B rows runs 1.25x slower per FLOP than the same work in pieces of 256-640
#: rows, and its bias is not fused; against the plain scan (1.0), hoisting everything at once
#: gives B=1 0.44-0.48, B=8 0.78-0.98, B=32 1.08, B=64 1.31-1.48, B=256 1.42; blocks of about 256
#: rows give B=1 0.44-0.54, B=8 0.67-0.72, B=32 0.88, B=64 0.74-0.96, B=256 1.03. Convolutions
#: never gained from hoisting (CNN, T=100: B=8 0.089 vs 0.064 s, B=32 0.34 vs 0.27 s), so they
#: stay in the scan.
HOIST_AUTO_TYPES = frozenset({"Affine", "Linear"})
HOIST_BLOCK_ROWS = 256
HOIST_AUTO_MAX_BATCH = HOIST_BLOCK_ROWS // 2 - 1

#: ``unroll="auto"``: ``lax.scan(unroll=UNROLL_SMALL_BATCH)`` when ``B <= UNROLL_MAX_BATCH``, else 1.
#: Measured (same machine and method): unrolling by 4 gains only at B=1 (10-28% on Braille, 5-7% on
#: 700->256->20) and is neutral to harmful from B=8 on (unroll 8: 1.4-1.6x slower from B=8-32 on).
UNROLL_SMALL_BATCH = 4
UNROLL_MAX_BATCH = 4

#: How many compiled models :func:`compiled_model` (and so :func:`nirbridge.simulate`) keeps, least
#: recently used first out. Each holds its jitted functions (one compiled program per input shape
#: and record set), a few MB of compiled code.
CACHE_SIZE = 32


# ---------------------------------------------------------------------------- spikes
@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def spike(v, threshold, inclusive: bool = False, surrogate: str = "fast_sigmoid", slope: float = 25.0):
    """``(v > threshold)`` (``>=`` if ``inclusive``) as 0/1 in v's dtype, with a surrogate derivative
    (:func:`nirbridge.kernels.surrogate_derivative`; the one w.r.t. ``threshold`` is its negative).

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
    return z, surrogate_derivative(surrogate, v - threshold, slope, jnp) * (dv - dthr)


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

    def dense_weight(self, w):
        # (in, out), transposed once per run outside the scan: with x @ w.T in the scan body XLA copies
        # the transpose of the whole weight in every step (6.4x slower at B=1), and the NT product is
        # slower than NN at small batches (1.5x at B=8)
        return w.T

    def affine(self, x, w, b):  # w: (in, out), from dense_weight
        if x.ndim > 2:  # one 2-D matmul: XLA picks a much slower kernel for the 3-D einsum on CPU
            y = (x.reshape(-1, x.shape[-1]) @ w).reshape(x.shape[:-1] + (w.shape[1],))
        else:
            y = x @ w
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
def channels_last_nodes(prog: Program) -> tuple[frozenset, str]:
    """The nodes :meth:`JaxModel.run` keeps channels-last, and why (a sentence).

    The rule, per graph:

    1. *Candidates*: nodes whose kernel declares the layout class ``"element"``, ``"conv"`` (2-D)
       or ``"pool"`` (:data:`nirbridge.kernels.LAYOUTS`), whose input and output are (C, H, W)
       images, and (element) whose float parameters all have the node's shape or are scalars.
       Input, Output and nested-graph identity nodes are element-wise too.
    2. *Regions*: the groups of candidates connected through forward edges. A region with a Conv2d
       runs channels-last; one without (pools and neurons only) gains nothing and stays NCHW.
    3. *Fallback*: the whole graph runs NCHW (the plain program) when a region
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
        layout = prog.kernels[s.name].layout
        if layout == "none" or not (image(s.input_shape) and image(s.output_shape)):
            return False
        if layout == "element":
            return all(a.shape in ((), tuple(s.output_shape)) for a in float_params(s).values())
        return True

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
    with_conv = {region[s.name] for s in steps if s.name in cand and prog.kernels[s.name].layout == "conv"}
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


def _coeffs_to_last(layout: str, c):
    """Prepared coefficients moved to the channels-last layout, by the kernel's layout class."""
    if layout == "conv":  # weight OIHW -> HWIO; the bias (O,) broadcasts on the last axis already
        return type(c)(jnp.transpose(c.weight, (2, 3, 1, 0)), c.bias)
    if layout == "element":  # (C, H, W) coefficients -> (H, W, C); scalars stay
        return jax.tree.map(lambda a: _to_last(a) if jnp.ndim(a) == 3 else a, c)
    return c


def _layout_program(prog: Program, last: frozenset) -> Program:
    """``prog`` with the steps of the channels-last nodes run by :class:`JaxOpsNHWC`, and a node
    outside the regions that reads from one given its input moved back to (C, H, W) (all its sources
    are inside the region, :func:`channels_last_nodes` checks). Input and Output roles keep their
    step (graph_step copies inputs; an Output is an identity)."""
    kernels = dict(prog.kernels)
    for s in prog.steps:
        k = prog.kernels[s.name]
        if s.name in last and s.role == "compute":
            kernels[s.name] = k.replace(step=lambda ops, c, st, x, k=k: k.step(OPS_NHWC, c, st, x))
        elif s.name not in last and s.role != "input" and any(src in last for src, _ in s.sources):
            kernels[s.name] = k.replace(step=lambda ops, c, st, x, k=k: k.step(ops, c, st, _to_first(x)))
    return dataclasses.replace(prog, kernels=kernels)


# ---------------------------------------------------------------------------- one product per source
def dense_groups(prog: Program, hoisted: frozenset) -> list[tuple[str, ...]]:
    """Groups of Affine/Linear nodes that ``run`` computes as ONE product per step: two or more in
    the scan (not hoisted) reading the same single source through a forward edge, on vectors.

    Braille's CubaLIF feeds its recurrent Affine and the next layer's Affine: one
    ``z @ [W_rec | W_2]`` per step instead of two products. The step is overhead-bound (a dozen small
    operations per step), so fewer products is what brings it closer to the weight-product floor
    (measured on Braille, B=256: 1.22x the floor with the merged product against 1.41-1.50x)."""
    by_source: dict[str, list[str]] = {}
    for s in prog.steps:
        feeds = prog.feeds[s.name]
        if (s.node.type in ("Affine", "Linear") and s.name not in hoisted and len(feeds) == 1 and not feeds[0][1]
                and len(s.input_shape) == 1):
            by_source.setdefault(feeds[0][0], []).append(s.name)
    return [tuple(g) for g in by_source.values() if len(g) > 1]


def _fused_name(group: tuple[str, ...]) -> str:
    return "\x00product:" + "+".join(group)  # no node name of a plan contains a NUL


def _fuse_dense(prog: Program, groups: list[tuple[str, ...]]) -> Program:
    """``prog`` with each group of :func:`dense_groups` computed by one product node placed before the
    group's first member; each member then takes its columns of that product."""
    if not groups:
        return prog
    first = {g[0]: g for g in groups}
    member = {m: g for g in groups for m in g}
    steps, kernels = [], dict(prog.kernels)
    for s in prog.steps:
        if s.name in first:
            g = first[s.name]
            total = sum(prog.graph.plan[m].output_shape[0] for m in g)
            fused = _fused_name(g)
            steps.append(dataclasses.replace(s, name=fused, output_shape=(total,)))
            kernels[fused] = prog.kernels[s.name].replace(step=_product_step)
        if s.name in member:
            g = member[s.name]
            start = sum(prog.graph.plan[m].output_shape[0] for m in g[: g.index(s.name)])
            stop = start + s.output_shape[0]
            steps.append(dataclasses.replace(s, sources=((_fused_name(g), False),)))
            kernels[s.name] = prog.kernels[s.name].replace(
                step=lambda ops, c, st, x, a=start, b=stop: (st, x[:, a:b]))
        else:
            steps.append(s)
    return dataclasses.replace(prog, steps=tuple(steps), kernels=kernels)


def _product_step(ops, c, st, x):
    return st, ops.affine(x, c.weight, c.bias)


def _fused_coeffs(prog: Program, coeffs: dict, groups: list[tuple[str, ...]]) -> dict:
    """The coefficients of the product nodes: the members' (in, out) weights side by side, their
    biases one after the other (zeros for a Linear)."""
    out = dict(coeffs)
    for g in groups:
        ws = [coeffs[m].weight for m in g]
        bs = [coeffs[m].bias if coeffs[m].bias is not None else jnp.zeros(w.shape[1], w.dtype) for m, w in zip(g, ws)]
        out[_fused_name(g)] = type(coeffs[g[0]])(jnp.concatenate(ws, axis=1), jnp.concatenate(bs))
    return out


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


def _scan(unroll: int, checkpoint: bool):
    """The ``iterate`` of :func:`~nirbridge.program.run_loop`: one ``lax.scan``."""

    def iterate(body, coeffs, carry, xs, T):
        def f(c, x_t):
            return body(coeffs, c, x_t)

        return lax.scan(jax.checkpoint(f) if checkpoint else f, carry, xs, length=T, unroll=unroll)

    return iterate


class _Core:
    """What a JaxModel compiles: the program, its options and the jitted functions (shared by every
    model built from it: :func:`compiled_model`, pytree unflattening). Hashed by identity."""

    def __init__(self, program: Program, dtype: np.dtype, hoist: Any, checkpoint: bool, layout: str, unroll: Any):
        self.program = program
        self.dtype = dtype
        self.hoist = hoist
        self.checkpoint = checkpoint
        self.layout = layout
        self.unroll = unroll
        self.fuse = True
        if layout == "auto":
            self.channels_last, self.layout_reason = channels_last_nodes(program)
        else:
            self.channels_last, self.layout_reason = frozenset(), "NCHW: layout='NCHW'"
        self.scan_program = _layout_program(program, self.channels_last) if self.channels_last else program
        self.shapes = {s.name: {f: (a.shape, a.dtype) for f, a in float_params(s).items()}
                       for s in program.steps if float_params(s)}
        self.traces = 0
        self._jitted: dict[Any, Any] = {}
        self._fused: dict[frozenset, tuple] = {}

    def loop_program(self, hoisted: frozenset) -> tuple[Program, list]:
        """The program the scan runs for this hoisting: the channels-last one with its dense products
        merged per source (:func:`dense_groups`), and the groups."""
        got = self._fused.get(hoisted)
        if got is None:
            groups = dense_groups(self.scan_program, hoisted) if self.fuse else []
            got = self._fused[hoisted] = (_fuse_dense(self.scan_program, groups), groups)
        return got

    # ----------------------------------------------------------------- rules
    def hoisting(self, T: int, batch: int) -> tuple[frozenset, int | None]:
        """``(hoisted nodes, block)`` for a run of ``T`` steps of ``batch`` rows (see :data:`HOIST_AUTO_TYPES`)."""
        prog = self.program
        if self.hoist is False or not prog.hoistable:
            return frozenset(), None
        if self.hoist is True:
            return prog.hoistable, None
        if batch > HOIST_AUTO_MAX_BATCH:
            return frozenset(), None
        chosen: set[str] = set()  # auto: dense products, and every hoistable node feeding one
        for s in reversed(prog.steps):
            if s.name in chosen or (s.name in prog.hoistable and s.node.type in HOIST_AUTO_TYPES):
                chosen.add(s.name)
                chosen.update(src for src, _ in s.sources if src in prog.hoistable)
        block = max(1, HOIST_BLOCK_ROWS // batch)
        return frozenset(chosen), (None if block >= T else block)

    def unroll_for(self, batch: int) -> int:
        if self.unroll == "auto":
            return UNROLL_SMALL_BATCH if batch <= UNROLL_MAX_BATCH else 1
        return int(self.unroll)

    # ----------------------------------------------------------------- traced pieces
    def cast_params(self, params: Any) -> dict:
        """Check ``params`` (at trace time: structure and shapes only) and cast to the compute dtype."""
        if not isinstance(params, Mapping):
            raise InputError(f"params must be a dict {{node: {{field: array}}}}, got {type(params).__name__}. "
                             "Fix: start from model.params")
        extra = sorted(set(params) - set(self.shapes))
        if extra:
            raise node_error(ParameterError, extra[0], None, "params has a node the model has no parameters for",
                             f"use the nodes of model.params: {sorted(self.shapes)}")
        out = {}
        for node, fields in self.shapes.items():
            given = params.get(node)
            if not isinstance(given, Mapping) or set(given) != set(fields):
                have = sorted(given) if isinstance(given, Mapping) else None
                raise node_error(ParameterError, node, None, f"params has fields {have}, expected {sorted(fields)}",
                                 "pass every field of model.params[node]")
            out[node] = {}
            for f, (shape, _) in fields.items():
                a = given[f]
                if tuple(jnp.shape(a)) != shape:
                    raise node_error(ParameterError, node, f, f"has shape {tuple(jnp.shape(a))}, expected {shape}",
                                     "keep the shapes of model.params")
                out[node][f] = jnp.asarray(a, dtype=self.dtype)
        return out

    def traced_run(self, params, inputs, state, *, record):
        self.traces += 1  # runs at trace time only
        prog, last = self.scan_program, self.channels_last
        params = self.cast_params(params)
        inputs = {n: jnp.asarray(a, dtype=self.dtype) for n, a in inputs.items()}
        T, B = next(iter(inputs.values())).shape[:2]
        coeffs = prepare(OPS, self.program, params)
        carry = init_carry(OPS, self.program, coeffs, B, self.dtype) if state is None else import_state(prog, state)
        if last:  # once per run, outside the scan: the region's inputs, states and coefficients to (..., H, W, C)
            inputs = {n: _to_last(a) if n in last else a for n, a in inputs.items()}
            carry = {**carry, "nodes": {n: (jax.tree.map(_to_last, st) if n in last else st)
                                        for n, st in carry["nodes"].items()}}
            coeffs = {n: _coeffs_to_last(prog.kernels[n].layout, c) if n in last else c for n, c in coeffs.items()}
        hoisted, block = self.hoisting(T, B)
        prog, groups = self.loop_program(hoisted)
        coeffs = _fused_coeffs(prog, coeffs, groups)
        results, carry = run_loop(OPS, prog, coeffs, carry, inputs, record=record, hoisted=hoisted, block=block,
                                  iterate=_scan(self.unroll_for(B), self.checkpoint))
        if last:  # back to (C, H, W), over the whole sequence at once
            results = {k: _to_first(y) if (k if isinstance(k, str) else k[0]) in last else y
                       for k, y in results.items()}
            carry = {**carry, "nodes": {n: (jax.tree.map(_to_first, st) if n in last else st)
                                        for n, st in carry["nodes"].items()}}
        return Outputs(results), export_state(carry)

    def traced_step(self, params, state, inputs):
        prog = self.program
        params = self.cast_params(params)
        inputs = {n: jnp.asarray(a, dtype=self.dtype) for n, a in inputs.items()}
        coeffs = prepare(OPS, prog, params)
        B = next(iter(inputs.values())).shape[0]
        carry = init_carry(OPS, prog, coeffs, B, self.dtype) if state is None else import_state(prog, state)
        carry, outs = graph_step(OPS, prog, coeffs, carry, inputs)
        return export_state(carry), {o: outs[o] for o in prog.outputs}

    def traced_init(self, params, *, batch):
        coeffs = prepare(OPS, self.program, self.cast_params(params))
        return export_state(init_carry(OPS, self.program, coeffs, batch, self.dtype))

    def jitted(self, kind: str, **static):
        key = (kind, tuple(sorted(static.items())))
        fn = self._jitted.get(key)
        if fn is None:
            fn = jax.jit(functools.partial(getattr(self, f"traced_{kind}"), **static))
            self._jitted[key] = fn
        return fn


class JaxModel:
    """A graph compiled for JAX: ``params`` and pure ``init_state`` / ``step`` / ``run``.

    Build it with :func:`to_jax`. Attributes: ``params`` (``{node: {field: array}}`` in the compute
    dtype, every trainable NIR float parameter), ``graph``, ``dynamics``, ``dtype``, ``program``,
    ``channels_last`` (the nodes ``run`` keeps as (B, H, W, C) inside the scan, see
    :func:`channels_last_nodes`) with ``layout_reason``, and ``traces`` (how many times ``run``
    was traced). A JaxModel is a pytree whose leaves are ``params``.
    """

    def __init__(self, program: Program, *, dtype: Any = "float32", hoist: Any = "auto", checkpoint: bool = False,
                 layout: str = "auto", unroll: Any = "auto", devices: Any = None):
        dtype = resolve_dtype(dtype)
        _check_dtype(dtype)
        if not (hoist == "auto" or hoist is True or hoist is False):
            raise InputError(f"hoist={hoist!r} is not one of 'auto', True, False. Fix: pick one of them")
        if not (isinstance(layout, str) and layout in ("auto", "NCHW")):
            raise InputError(f"layout={layout!r} is not one of 'auto', 'NCHW'. Fix: pick one of them")
        if not (unroll == "auto" or (isinstance(unroll, int) and not isinstance(unroll, bool) and unroll >= 1)):
            raise InputError(f"unroll={unroll!r} is not 'auto' or an int >= 1. Fix: e.g. unroll='auto'")
        sharding = None if devices is None else batch_sharding(devices)
        self._meta = _Meta(_Core(program, dtype, hoist, bool(checkpoint), layout, unroll), program, sharding)
        self.params = _params_of(program, dtype)
        if sharding is not None:
            self.params = replicated(self.params, sharding)

    @classmethod
    def _from_meta(cls, meta: _Meta, params: Any) -> JaxModel:
        model = object.__new__(cls)
        model._meta = meta
        model.params = params
        return model

    # -------------------------------------------------------------- attributes
    _core = property(lambda self: self._meta.core)
    program = property(lambda self: self._meta.program, doc="The :class:`~nirbridge.program.Program` (its "
                       "graph holds the original parameters).")
    dtype = property(lambda self: self._core.dtype, doc="The compute dtype (NumPy).")
    hoist = property(lambda self: self._core.hoist, doc="The hoisting option.")
    checkpoint = property(lambda self: self._core.checkpoint, doc="Whether the scan body is checkpointed.")
    layout = property(lambda self: self._core.layout, doc="The layout option.")
    unroll = property(lambda self: self._core.unroll, doc="The scan's unroll option.")
    channels_last = property(lambda self: self._core.channels_last, doc="The nodes run channels-last.")
    layout_reason = property(lambda self: self._core.layout_reason, doc="Why (a sentence).")
    traces = property(lambda self: self._core.traces, doc="How many times ``run`` was traced.")
    sharding = property(lambda self: self._meta.sharding, doc="The batch sharding of ``run``'s inputs "
                        "(``to_jax(devices=...)``; None: one device).")

    @property
    def graph(self) -> Graph:
        """The :class:`~nirbridge.graph.Graph` the model was built from (original parameters)."""
        return self.program.graph

    @property
    def dynamics(self):
        """The :class:`~nirbridge.dynamics.Dynamics` the model runs."""
        return self.program.dynamics

    @property
    def kinds(self) -> dict:
        """``{node: {field: kind}}``, the structure of ``params``: what each parameter is
        (:data:`nirbridge.nodes.PARAM_KINDS`)."""
        return param_kinds(self.program)

    def mask(self, kinds: Any = "weight") -> dict:
        """A pytree of bools shaped like ``params``: True for the parameters of these kinds (default:
        the weights and biases of Affine, Linear, Conv and Scale nodes). Train those only with
        ``optax.masked(optimizer, model.mask())``; time constants, thresholds, gains stay as they are.
        (Trained in raw form a time constant can go negative within a few steps; the Flax and
        Equinox shells train time constants in log space instead.)"""
        kinds = check_kinds(kinds)
        return {n: {f: k in kinds for f, k in fields.items()} for n, fields in self.kinds.items()}

    def hoisted(self, batch: int, steps: int = 1 << 30) -> frozenset:
        """The nodes ``run`` computes outside the scan's step (over many rows at once) for this batch size."""
        return self._core.hoisting(int(steps), int(batch))[0]

    def hoist_block(self, batch: int, steps: int) -> int | None:
        """How many steps ``run`` hoists at once (None: all of them) for this batch size and length."""
        return self._core.hoisting(int(steps), int(batch))[1]

    def __repr__(self) -> str:
        return (f"JaxModel({self.graph!r}, {self.dynamics!r}, dtype={self.dtype.name}, hoist={self.hoist!r}, "
                f"checkpoint={self.checkpoint}, layout={self.layout!r})")

    # -------------------------------------------------------------- pure functions
    def init_state(self, batch: int, params: Mapping | None = None) -> dict:
        """The state at step 0 for a batch (zeros unless the Dynamics say otherwise, e.g. ``v_init``,
        computed from ``params``, default ``model.params``):
        ``{"nodes": {node: {var: array}}, "prev": {recurrent source: array}}``."""
        _check_dtype(self.dtype)
        return self._core.jitted("init", batch=int(batch))(self.params if params is None else params)

    def step(self, params: Mapping, state: Mapping | None, x_t: Any) -> tuple[dict, dict]:
        """One time step: ``x_t`` is ``(B, *shape)`` or ``{input name: array}``; ``state`` from
        :meth:`init_state` or the previous step (None: the initial state); returns
        ``(state, {output name: (B, *shape)})``. Pure and compiled; ``run`` is the fast way over a sequence."""
        _check_dtype(self.dtype)
        seq = {k: _time_axis(v) for k, v in x_t.items()} if isinstance(x_t, Mapping) else _time_axis(x_t)
        inputs, _, _ = normalize_inputs(self.program, seq, convert=None)
        inputs = {n: v[0] for n, v in inputs.items()}
        return self._core.jitted("step")(params, state, inputs)

    def run(self, params: Mapping, x: Any, state: Mapping | None = None, record: Any = None):
        """Run a whole sequence: ``x`` is ``(T, B, *shape)`` or ``{input name: array}``.

        Returns ``(outputs, final state)``; ``outputs`` maps output names, recorded node names and
        recorded ``(node, var)`` pairs to ``(T, B, ...)`` arrays (see :func:`nirbridge.simulate`).
        One ``lax.scan`` inside one ``jax.jit``. ``state`` and the final state have the layout of
        :meth:`init_state` (NIR's (C, H, W) per image, also for the nodes kept channels-last).
        """
        _check_dtype(self.dtype)
        inputs, _, _ = normalize_inputs(self.program, x, convert=None)
        rec = parse_record(self.program, record)
        sharding = self._meta.sharding
        if sharding is not None:  # the batch split over the devices, parameters on all of them
            inputs = place_batch(inputs, sharding)
            params = replicated(params, sharding)
            if state is not None:
                state = place_batch(state, sharding, axis=0)
        return self._core.jitted("run", record=rec)(params, inputs, state)

    def __call__(self, x: Any, state: Mapping | None = None, record: Any = None):
        """``run(self.params, x, state, record)[0]``: the outputs of a sequence."""
        return self.run(self.params, x, state, record)[0]


def _time_axis(v):
    if not hasattr(v, "shape"):
        v = np.asarray(v)
    return v[None]


def _params_of(program: Program, dtype: np.dtype) -> dict:
    return {s.name: {f: jnp.asarray(a.astype(dtype)) for f, a in float_params(s).items()}
            for s in program.steps if float_params(s)}


class _Meta:
    """A model's static part: its compiled core (shared) and its own program (its graph). The pytree
    aux data of a JaxModel, compared by identity."""

    __slots__ = ("core", "program", "sharding")

    def __init__(self, core: _Core, program: Program, sharding: Any = None):
        self.core, self.program, self.sharding = core, program, sharding


def _model_flatten_with_keys(m):
    return [(jax.tree_util.GetAttrKey("params"), m.params)], m._meta


jax.tree_util.register_pytree_with_keys(
    JaxModel, _model_flatten_with_keys, lambda meta, children: JaxModel._from_meta(meta, children[0]),
    lambda m: ([m.params], m._meta),
)


def to_jax(graph: Any, dynamics, *, dtype: Any = "float32", hoist: Any = "auto", checkpoint: bool = False,
           layout: str = "auto", unroll: Any = "auto", devices: Any = None) -> JaxModel:
    """Compile ``graph`` with ``dynamics`` for JAX.

    Args:
        graph: a :class:`~nirbridge.graph.Graph`, a ``nir.NIRGraph`` or the path of a ``.nir`` file.
        dynamics: the :class:`~nirbridge.dynamics.Dynamics` (dt, method, reset, surrogate, ...).
            Spikes train through a surrogate derivative, by default ``"fast_sigmoid"`` with slope
            25: ``1 / (1 + 25 |v - v_threshold|)^2``.
        dtype: ``"float32"`` (default) or ``"float64"`` (needs ``jax_enable_x64``).
        hoist: ``"auto"`` (default: hoist Affine/Linear products in blocks of about 256 rows for
            batches under 128, see :data:`HOIST_AUTO_TYPES`), ``True`` (run every stateless node fed
            only by the inputs over all T*B rows before the scan) or ``False`` (every node in the scan).
        checkpoint: wrap the scan body in ``jax.checkpoint`` (less memory under ``jax.grad`` for
            long sequences, at the cost of recomputing each step in the backward pass).
        layout: ``"auto"`` (default: keep convolutional regions channels-last inside the scan, by
            the rule of :func:`channels_last_nodes`) or ``"NCHW"`` (NIR's layout everywhere, the
            convolutions transposing around each call). Results and states are (C, H, W) either way.
        unroll: the scan's ``unroll`` (``"auto"``: 4 for batches up to 4, else 1; see
            :data:`UNROLL_SMALL_BATCH`).
        devices: split the batch of ``run`` over devices: a ``jax.sharding.Mesh`` (its first axis
            is the batch axis), a sequence of devices, or a ``NamedSharding`` of the inputs
            (see :func:`batch_sharding`). Parameters are replicated on every device; outputs and
            the final state come back batch-sharded. Default: one device.

    Returns:
        a :class:`JaxModel`; ``model.run(model.params, x)`` runs a sequence.
    """
    graph = as_graph(graph, "to_jax")
    return JaxModel(build_program(graph, dynamics, "jax"), dtype=dtype, hoist=hoist, checkpoint=checkpoint,
                    layout=layout, unroll=unroll, devices=devices)


_CACHE: collections.OrderedDict = collections.OrderedDict()


def compiled_model(graph: Any, dynamics, **options: Any) -> JaxModel:
    """A :class:`JaxModel` of ``graph`` that shares its compiled programs with every earlier model of
    a graph with the same structure (:func:`nirbridge.program.structure_key`), Dynamics, dtype and
    options; its ``params`` are ``graph``'s own. What :func:`nirbridge.simulate` and
    :func:`nirbridge.compare` use: repeated calls cost what ``model.run`` costs. Keeps up to
    :data:`CACHE_SIZE` compiled models (least recently used out); :func:`clear_cache` empties it."""
    graph = as_graph(graph, "compiled_model")
    dtype = resolve_dtype(options.pop("dtype", "float32"))
    key = (structure_key(graph), dynamics, dtype.str, tuple(sorted(options.items())))
    try:
        hash(key)
    except TypeError:
        key = None
    model = _CACHE.get(key) if key is not None else None
    if model is None:
        model = to_jax(graph, dynamics, dtype=dtype, **options)
        if key is not None:
            _CACHE[key] = model
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
        return model
    _CACHE.move_to_end(key)
    if graph is model.graph:
        return model
    prog = build_program(graph, dynamics, "jax")  # the same checks (and warnings) as a first build
    params = _params_of(prog, dtype)
    if model.sharding is not None:
        params = replicated(params, model.sharding)
    return JaxModel._from_meta(_Meta(model._core, prog, model.sharding), params)


def use_persistent_cache(path: Any, *, min_compile_seconds: float = 0.0) -> None:
    """Keep JAX's compiled programs on disk under ``path`` (JAX's persistent compilation cache), so
    another process with the same graph structure, shapes and options loads the program instead of
    compiling it. ``min_compile_seconds``: store only programs that took at least this long to
    compile (JAX's default is 1 s; 0 stores every one). Call once at start-up, before the first run."""
    import os

    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# ---------------------------------------------------------------------------- several devices
def batch_sharding(devices: Any = None, axis: str | None = None):
    """The ``NamedSharding`` that splits time-major inputs ``(T, B, ...)`` along the batch over devices.

    ``devices``: a ``jax.sharding.Mesh`` (the batch goes on ``axis``, default its first axis), a
    ``NamedSharding`` (returned as it is), a sequence of devices (a 1-D mesh ``("batch",)``), or
    None (every device: :func:`jax.devices`, all processes' under ``jax.distributed``)."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    if isinstance(devices, NamedSharding):
        return devices
    if devices is None:
        devices = jax.devices()
    if not isinstance(devices, Mesh):
        try:
            devs = np.asarray(list(devices), dtype=object)
        except TypeError:
            raise InputError(f"devices={devices!r} is not a Mesh, a NamedSharding or a sequence of devices. "
                             "Fix: e.g. devices=jax.devices()") from None
        if devs.size == 0 or not all(isinstance(d, jax.Device) for d in devs.ravel()):
            raise InputError(f"devices={devices!r} holds no JAX devices. Fix: e.g. devices=jax.devices()")
        devices = Mesh(devs.reshape(-1), ("batch",))
    axis = devices.axis_names[0] if axis is None else axis
    if axis not in devices.axis_names:
        raise InputError(f"the mesh has axes {devices.axis_names}, not {axis!r}. Fix: name one of them")
    return NamedSharding(devices, PartitionSpec(None, axis))


def _spec_for(sharding, ndim: int, axis: int):
    from jax.sharding import NamedSharding, PartitionSpec

    name = sharding.spec[1] if len(sharding.spec) > 1 else sharding.spec[0]
    return NamedSharding(sharding.mesh, PartitionSpec(*([None] * axis + [name] + [None] * (ndim - axis - 1))))


def place_batch(tree: Any, sharding, axis: int = 1) -> Any:
    """Every array of ``tree`` placed with its batch axis (``axis``: 1 for time-major inputs, 0 for
    states) split as ``sharding`` (from :func:`batch_sharding`) says. Under ``jax.distributed`` with
    several processes, each process passes its own rows and gets the global array
    (``jax.make_array_from_process_local_data``). The batch must divide by the number of devices."""
    n = sharding.mesh.shape[sharding.spec[1] if len(sharding.spec) > 1 else sharding.spec[0]]
    multi = jax.process_count() > 1

    def put(a):
        if isinstance(a, jax.core.Tracer):
            return a
        if isinstance(a, jax.Array) and a.sharding.is_equivalent_to(_spec_for(sharding, a.ndim, axis), a.ndim):
            return a
        sh = _spec_for(sharding, np.ndim(a), axis)
        rows = np.shape(a)[axis] * (jax.process_count() if multi else 1)
        if rows % n:
            raise InputError(f"a batch of {rows} rows does not split over {n} devices. Fix: use a batch that "
                             f"is a multiple of {n}, or fewer devices")
        if multi:
            return jax.make_array_from_process_local_data(sh, np.asarray(a))
        return jax.device_put(a, sh)

    return jax.tree.map(put, tree)


def replicated(tree: Any, sharding) -> Any:
    """Every array of ``tree`` on every device of ``sharding``'s mesh (parameters)."""
    from jax.sharding import NamedSharding, PartitionSpec

    rep = NamedSharding(sharding.mesh, PartitionSpec())
    multi = jax.process_count() > 1

    def put(a):
        if isinstance(a, jax.core.Tracer):
            return a
        if isinstance(a, jax.Array) and a.sharding.is_equivalent_to(rep, a.ndim):
            return a
        if multi:
            return jax.make_array_from_process_local_data(rep, np.asarray(a))
        return jax.device_put(a, rep)

    return jax.tree.map(put, tree)


def clear_cache() -> None:
    """Forget every compiled model :func:`compiled_model` keeps."""
    _CACHE.clear()


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


class JaxBackend:
    """The JAX backend of :func:`nirbridge.simulate` (NumPy arrays out; no progress bar: the whole
    sequence is one compiled call). Compiled models are reused (:func:`compiled_model`)."""

    name = "jax"

    def simulate(self, graph, dynamics, x, *, record=None, dtype=None, progress=False) -> dict:
        model = compiled_model(graph, dynamics, dtype=dtype)
        outs, _ = model.run(model.params, x, record=record)
        return {k: np.asarray(v) for k, v in outs.items()}
