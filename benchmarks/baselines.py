"""Reference baselines that nirbridge is benchmarked against.

Method
------
Three workloads are defined, each as a NIR graph, a time step ``dt``, a batch
size ``B``, a number of steps ``T`` and a seeded generator of binary input
spikes shaped ``(T, B, *input_shape)``:

* ``ff_700_256_20``: Input(700) -> Affine -> LIF(256) -> Affine -> LI(20),
  built here from seeded random weights (B=64, T=500, dt=1e-3);
* ``braille``: the NIR paper Braille network (Affine -> CubaLIF with a
  recurrent Affine -> Affine -> CubaLIF), read from a ``.nir`` file
  (B=256, T=256, dt=1e-4);
* ``cnn``: the NIR paper Sinabs CNN (3 Conv2d + IF, 2 SumPool2d, Flatten,
  2 Affine + IF), read from a ``.nir`` file (B=32, T=100, dt=1.0).

Every workload is simulated with the same discrete-time semantics as
nirbridge: forward Euler, all states start at zero, and all computation is in
float32. Coefficients such as ``dt / tau`` are computed in float64 and then
cast to float32. The updates are:

* LIF:     ``v += (dt/tau) * (v_leak - v + r*x)``; ``z = v > v_threshold``;
  ``v = where(z, v_reset, v)``
* LI:      the same update without spiking; the output is ``v``
* IF:      ``v += (dt*r) * x``; spike and reset as for LIF
* CubaLIF: ``i += (dt/tau_syn) * (-i + w_in*x)``, then
  ``v += (dt/tau_mem) * (v_leak - v + r*i)`` using the new ``i``; spike and
  reset as for LIF
* Affine:  ``x @ W.T + b``. Conv2d and SumPool2d follow PyTorch conventions,
  and Flatten flattens all non-batch dimensions.

A recurrent Affine gets the previous step's spikes (zeros at step 0). When a
node has several incoming edges, their outputs are summed.

Baselines (each ``make_*`` function takes a :class:`Workload` and returns a
:class:`Baseline`, which is called with the whole input array and returns the
``(T, B, n_out)`` output after the computation has finished):

* ``make_handwritten_scan``: ``jax.jit`` + ``lax.scan`` of the network written
  by hand. Every matmul and convolution runs inside the scan body, one time
  step at a time.
* ``make_handwritten_scan_hoisted``: the same, but the input projection (the
  first Affine or Conv2d, which does not depend on any state) runs once over
  all ``T*B`` rows before the scan.
* ``make_handwritten_scan_layerwise``: every stateless op is hoisted, which
  gives one ``lax.scan`` per neuron layer with the batched matmuls and
  convolutions between them. This is valid because the only recurrence
  (Braille) is inside one layer.
* ``make_nirtorch_baseline``: ``nirtorch.nir_to_torch`` (NIRTorch 2.6) with a
  hand-written node map of stateful torch modules, driven one Python call per
  time step under ``torch.no_grad()``, as NIRTorch users run it.
* ``make_matmul_floor``: only the network's stateless weight ops (matmuls, and
  convolutions and pooling for the CNN), batched over all ``T*B`` rows at once
  with no neuron dynamics. This is the arithmetic floor. It runs in JAX
  (jitted) or in torch.

The hand-written scans take ``unroll`` (passed to ``lax.scan``) and, for the
CNN, an image ``layout``. With the default ``None``, each variant uses the
layout measured fastest on XLA:CPU: NHWC for convolutions inside the scan
(about 5x faster than NCHW there) and NCHW for convolutions batched over
``T*B``. Inputs are NCHW either way; the transpose is part of the timed
function.

Run ``python benchmarks/baselines.py`` for a correctness smoke test at small
``T`` and a timing table at full size.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import keyword
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import nir
import nirtorch
import numpy as np
import torch
import torch.nn.functional as F
from jax import lax

# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Workload:
    """A NIR graph plus everything needed to simulate it reproducibly."""

    name: str
    kind: str  # "ff", "braille" or "cnn": selects the hand-written network
    graph: nir.NIRGraph
    dt: float
    batch: int
    steps: int
    input_shape: tuple[int, ...]
    spike_prob: float
    seed: int = 0

    def inputs(
        self, steps: int | None = None, batch: int | None = None, seed: int | None = None
    ) -> np.ndarray:
        """Binary float32 input spikes shaped ``(T, B, *input_shape)``."""
        steps = self.steps if steps is None else steps
        batch = self.batch if batch is None else batch
        rng = np.random.default_rng(self.seed if seed is None else seed)
        shape = (steps, batch, *self.input_shape)
        return (rng.random(shape) < self.spike_prob).astype(np.float32)

    def with_size(self, steps: int | None = None, batch: int | None = None) -> Workload:
        return dataclasses.replace(
            self,
            steps=self.steps if steps is None else steps,
            batch=self.batch if batch is None else batch,
        )


def ff_graph(seed: int = 0, n_in: int = 700, n_hidden: int = 256, n_out: int = 20) -> nir.NIRGraph:
    """Input -> Affine -> LIF -> Affine -> LI -> Output with seeded random weights."""
    rng = np.random.default_rng(seed)

    def f32(a):
        return np.asarray(a, dtype=np.float32)

    # About 35 of the 700 inputs are active per step (p=0.05). This scale gives
    # the hidden LIF layer a firing rate of about 4%.
    w1 = f32(rng.normal(0.0, 4.0 / np.sqrt(0.05 * n_in), size=(n_hidden, n_in)))
    b1 = f32(rng.normal(0.0, 0.1, size=n_hidden))
    w2 = f32(rng.normal(0.0, 2.0 / np.sqrt(n_hidden), size=(n_out, n_hidden)))
    b2 = f32(rng.normal(0.0, 0.1, size=n_out))
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n_in])}),
        "fc1": nir.Affine(weight=w1, bias=b1),
        "lif": nir.LIF(
            tau=f32(rng.uniform(5e-3, 2e-2, size=n_hidden)),
            r=np.ones(n_hidden, dtype=np.float32),
            v_leak=np.zeros(n_hidden, dtype=np.float32),
            v_threshold=np.ones(n_hidden, dtype=np.float32),
            v_reset=np.zeros(n_hidden, dtype=np.float32),
        ),
        "fc2": nir.Affine(weight=w2, bias=b2),
        "li": nir.LI(
            tau=f32(rng.uniform(5e-3, 2e-2, size=n_out)),
            r=np.ones(n_out, dtype=np.float32),
            v_leak=np.zeros(n_out, dtype=np.float32),
        ),
        "output": nir.Output(output_type={"output": np.array([n_out])}),
    }
    edges = [("input", "fc1"), ("fc1", "lif"), ("lif", "fc2"), ("fc2", "li"), ("li", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


def ff_workload(seed: int = 0, batch: int = 64, steps: int = 500) -> Workload:
    return Workload(
        name="ff_700_256_20", kind="ff", graph=ff_graph(seed), dt=1e-3,
        batch=batch, steps=steps, input_shape=(700,), spike_prob=0.05, seed=seed,
    )


def braille_workload(path: str | Path, batch: int = 256, steps: int = 256, seed: int = 0) -> Workload:
    """The NIR paper Braille graph, e.g. ``braille_noDelay_bias_zero.nir``."""
    graph = nir.read(str(path), type_check=False)
    return Workload(
        name="braille", kind="braille", graph=graph, dt=1e-4,
        batch=batch, steps=steps, input_shape=(12,), spike_prob=0.1, seed=seed,
    )


def cnn_workload(path: str | Path, batch: int = 32, steps: int = 100, seed: int = 0) -> Workload:
    """The NIR paper Sinabs CNN graph (``cnn_sinabs.nir``). Sinabs counts time in steps, so dt=1."""
    graph = nir.read(str(path), type_check=False)
    return Workload(
        name="cnn", kind="cnn", graph=graph, dt=1.0,
        batch=batch, steps=steps, input_shape=(2, 34, 34), spike_prob=0.05, seed=seed,
    )


# --------------------------------------------------------------------------
# Graph helpers shared by the baselines
# --------------------------------------------------------------------------


def _feedforward_chain(graph: nir.NIRGraph) -> list[tuple[str, nir.NIRNode]]:
    """The nodes on the path from Input to Output, in order (Input/Output excluded).

    Side branches that only lead back into the path (recurrent Affines) are
    left out. See :func:`_recurrent_affine`.
    """
    succ = defaultdict(list)
    for src, dst in graph.edges:
        succ[src].append(dst)
    (start,) = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]

    def walk(name, seen):
        if isinstance(graph.nodes[name], nir.Output):
            return [name]
        for nxt in succ[name]:
            if nxt not in seen:
                rest = walk(nxt, seen | {nxt})
                if rest is not None:
                    return [name, *rest]
        return None

    path = walk(start, {start})
    if path is None:
        raise ValueError("no path from Input to Output")
    return [(k, graph.nodes[k]) for k in path[1:-1]]


def _recurrent_affine(graph: nir.NIRGraph, name: str) -> tuple[str, nir.Affine] | None:
    """An Affine that both reads from and writes to node ``name``, if there is one."""
    edges = set(graph.edges)
    for k, n in graph.nodes.items():
        if isinstance(n, nir.Affine) and (name, k) in edges and (k, name) in edges:
            return k, n
    return None


def _expect_chain(graph: nir.NIRGraph, types: list[type]) -> list[nir.NIRNode]:
    chain = _feedforward_chain(graph)
    found = [type(n) for _, n in chain]
    if found != types:
        raise ValueError(
            "graph does not match the hand-written network: expected "
            f"{[t.__name__ for t in types]}, found {[t.__name__ for t in found]}"
        )
    return [n for _, n in chain]


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _ratio(dt: float, tau) -> np.ndarray:
    """``dt / tau`` computed in float64, returned as float32."""
    return (np.float64(dt) / np.asarray(tau, dtype=np.float64)).astype(np.float32)


def _reset_value(node) -> np.ndarray:
    v_reset = node.v_reset if node.v_reset is not None else np.zeros_like(node.v_threshold)
    return _f32(v_reset)


def _neuron_params(node: nir.NIRNode, dt: float) -> dict[str, np.ndarray]:
    """float32 coefficients of a neuron node as a flat dict."""
    if isinstance(node, nir.LIF):
        return {
            "alpha": _ratio(dt, node.tau), "r": _f32(node.r), "v_leak": _f32(node.v_leak),
            "v_threshold": _f32(node.v_threshold), "v_reset": _reset_value(node),
        }
    if isinstance(node, nir.LI):
        return {"alpha": _ratio(dt, node.tau), "r": _f32(node.r), "v_leak": _f32(node.v_leak)}
    if isinstance(node, nir.IF):
        dt_r = (np.float64(dt) * np.asarray(node.r, dtype=np.float64)).astype(np.float32)
        return {"dt_r": dt_r, "v_threshold": _f32(node.v_threshold), "v_reset": _reset_value(node)}
    if isinstance(node, nir.CubaLIF):
        return {
            "alpha_syn": _ratio(dt, node.tau_syn), "w_in": _f32(node.w_in),
            "alpha_mem": _ratio(dt, node.tau_mem), "r": _f32(node.r),
            "v_leak": _f32(node.v_leak), "v_threshold": _f32(node.v_threshold),
            "v_reset": _reset_value(node),
        }
    raise TypeError(f"not a neuron node: {type(node).__name__}")


def _pair(value) -> tuple[int, int]:
    a = np.atleast_1d(np.asarray(value)).astype(int)
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


# --------------------------------------------------------------------------
# Baseline wrapper: the same call/prepare/compile interface for JAX and torch
# --------------------------------------------------------------------------


class Baseline:
    """Callable that runs a whole T-step simulation and returns a synchronized output.

    ``baseline(x)`` takes the backend's own array type (see :meth:`prepare`) and
    returns ``(T, B, n_out)`` after the computation has finished
    (``block_until_ready`` for JAX). ``compile(x)`` compiles ahead of time for
    the shape of ``x`` and returns the seconds taken (0 for torch).
    """

    def __init__(self, name: str, backend: str, fn: Callable, params: Any = None):
        self.name = name
        self.backend = backend
        self.params = params  # JAX only: passed as the first argument of the jitted fn
        self._fn = fn
        self._compiled: dict[tuple, Callable] = {}

    def prepare(self, x: np.ndarray):
        """Put the input on the backend ahead of time, so that timing leaves it out."""
        if self.backend == "jax":
            return jax.block_until_ready(jax.device_put(np.asarray(x, dtype=np.float32)))
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def compile(self, x) -> float:
        if self.backend != "jax":
            return 0.0
        x = self.prepare(x) if isinstance(x, np.ndarray) else x
        t0 = time.perf_counter()
        self._compiled[x.shape] = self._fn.lower(self.params, x).compile()
        return time.perf_counter() - t0

    def __call__(self, x):
        if isinstance(x, np.ndarray):
            x = self.prepare(x)
        if self.backend == "jax":
            fn = self._compiled.get(x.shape, self._fn)
            return jax.block_until_ready(fn(self.params, x))
        with torch.no_grad():
            return self._fn(x)

    @staticmethod
    def to_numpy(y) -> np.ndarray:
        return y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)

    def __repr__(self):
        return f"Baseline({self.name!r}, backend={self.backend!r})"


def _jax_baseline(name: str, sim: Callable, params) -> Baseline:
    """Jit ``sim(params, x)``. The parameters are device arguments, not baked-in constants."""
    return Baseline(name, "jax", jax.jit(sim), jax.device_put(params))


# --------------------------------------------------------------------------
# (a) Hand-written JAX: neuron updates and stateless ops
# --------------------------------------------------------------------------


def _lif(p, v, x):
    v = v + p["alpha"] * (p["v_leak"] - v + p["r"] * x)
    spiked = v > p["v_threshold"]
    return jnp.where(spiked, p["v_reset"], v), spiked.astype(jnp.float32)


def _li(p, v, x):
    return v + p["alpha"] * (p["v_leak"] - v + p["r"] * x)


def _li_layer(p, v, x):
    v = _li(p, v, x)
    return v, v  # state, output


def _if(p, v, x):
    v = v + p["dt_r"] * x
    spiked = v > p["v_threshold"]
    return jnp.where(spiked, p["v_reset"], v), spiked.astype(jnp.float32)


def _cuba_lif(p, i, v, x):
    i = i + p["alpha_syn"] * (-i + p["w_in"] * x)
    v = v + p["alpha_mem"] * (p["v_leak"] - v + p["r"] * i)
    spiked = v > p["v_threshold"]
    return i, jnp.where(spiked, p["v_reset"], v), spiked.astype(jnp.float32)


def _affine(p, x):
    # p["w"] is stored pre-transposed as (in, out); works for (B, in) and (T, B, in).
    return x @ p["w"] + p["b"]


def _affine_params(node: nir.Affine) -> dict[str, np.ndarray]:
    return {"w": np.ascontiguousarray(_f32(node.weight).T), "b": _f32(node.bias)}


# The CNN can run in either image layout. Inputs and IF parameters are NCHW as
# in the graph (torch convention). With layout="NHWC" the hand-written scan
# transposes the input once inside jit and keeps activations channels-last.
# On XLA:CPU that is much faster: about 8x for this CNN inside lax.scan.
_CONV_DIMS = {"NCHW": ("NCHW", "OIHW", "NCHW"), "NHWC": ("NHWC", "HWIO", "NHWC")}


def _conv2d_params(node: nir.Conv2d, layout: str) -> dict[str, np.ndarray]:
    w = _f32(node.weight)  # OIHW
    if layout == "NHWC":
        w = np.ascontiguousarray(w.transpose(2, 3, 1, 0))  # HWIO
    return {"w": w, "b": _f32(node.bias)}


def _conv2d_fn(node: nir.Conv2d, layout: str = "NCHW") -> Callable:
    """``conv(params, x)`` following torch.nn.Conv2d conventions (cross-correlation)."""
    if isinstance(node.padding, str):
        padding = node.padding.upper()
    else:
        ph, pw = _pair(node.padding)
        padding = [(ph, ph), (pw, pw)]
    stride, dilation, groups = _pair(node.stride), _pair(node.dilation), int(node.groups)

    def conv(p, x):
        y = lax.conv_general_dilated(
            x, p["w"], window_strides=stride, padding=padding, rhs_dilation=dilation,
            dimension_numbers=_CONV_DIMS[layout], feature_group_count=groups,
        )
        return y + (p["b"][:, None, None] if layout == "NCHW" else p["b"])

    return conv


def _sumpool2d_fn(node: nir.SumPool2d, layout: str = "NCHW") -> Callable:
    kh, kw = _pair(node.kernel_size)
    sh, sw = _pair(node.stride)
    ph, pw = _pair(node.padding)
    if layout == "NCHW":
        window, strides, pads = (1, 1, kh, kw), (1, 1, sh, sw), ((0, 0), (0, 0), (ph, ph), (pw, pw))
    else:
        window, strides, pads = (1, kh, kw, 1), (1, sh, sw, 1), ((0, 0), (ph, ph), (pw, pw), (0, 0))

    def pool(x):
        return lax.reduce_window(x, 0.0, lax.add, window, strides, pads)

    return pool


def _flatten_fn(layout: str = "NCHW") -> Callable:
    """Flatten all non-batch dims in torch's (C, H, W) order, whatever the layout."""
    if layout == "NCHW":
        return lambda x: x.reshape(x.shape[0], -1)
    return lambda x: jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


def _to_layout(a: np.ndarray, layout: str) -> np.ndarray:
    """A (C, H, W) per-neuron parameter in the given layout; other shapes unchanged."""
    return np.ascontiguousarray(a.transpose(1, 2, 0)) if layout == "NHWC" and a.ndim == 3 else a


def _over_time(fn: Callable, h: jax.Array) -> jax.Array:
    """Apply a stateless op to ``(T, B, ...)`` by folding time into the batch."""
    t, b = h.shape[:2]
    y = fn(h.reshape(t * b, *h.shape[2:]))
    return y.reshape(t, b, *y.shape[1:])


def _scan_layer(step: Callable, p, h: jax.Array, n_states: int = 1, unroll: int = 1) -> jax.Array:
    """Scan one neuron layer over time; ``step(p, *states, x) -> (*states, out)``."""

    def body(states, x_t):
        *states, out = step(p, *states, x_t)
        return tuple(states), out

    init = tuple(jnp.zeros(h.shape[1:], h.dtype) for _ in range(n_states))
    _, out = lax.scan(body, init, h, unroll=unroll)
    return out


# ---- ff: Affine -> LIF -> Affine -> LI ----


def _ff_handwritten(wl: Workload, variant: str, unroll: int):
    fc1, lif, fc2, li = _expect_chain(wl.graph, [nir.Affine, nir.LIF, nir.Affine, nir.LI])
    params = {
        "fc1": _affine_params(fc1), "lif": _neuron_params(lif, wl.dt),
        "fc2": _affine_params(fc2), "li": _neuron_params(li, wl.dt),
    }
    n_hidden, n_out = fc1.weight.shape[0], fc2.weight.shape[0]

    def sim(p, x):
        batch = x.shape[1]
        if variant == "layerwise":
            h = _affine(p["fc1"], x)  # (T, B, 700) @ (700, 256): one big matmul
            z = _scan_layer(_lif, p["lif"], h, unroll=unroll)
            return _scan_layer(_li_layer, p["li"], _affine(p["fc2"], z), unroll=unroll)

        def step(carry, x_t):
            v1, v2 = carry
            h_t = x_t if variant == "hoisted" else _affine(p["fc1"], x_t)
            v1, z1 = _lif(p["lif"], v1, h_t)
            v2 = _li(p["li"], v2, _affine(p["fc2"], z1))
            return (v1, v2), v2

        xs = _affine(p["fc1"], x) if variant == "hoisted" else x
        init = (jnp.zeros((batch, n_hidden), jnp.float32), jnp.zeros((batch, n_out), jnp.float32))
        _, out = lax.scan(step, init, xs, unroll=unroll)
        return out

    return sim, params


# ---- braille: Affine -> CubaLIF (+ recurrent Affine) -> Affine -> CubaLIF ----


def _braille_handwritten(wl: Workload, variant: str, unroll: int):
    chain = _feedforward_chain(wl.graph)
    fc1, cuba1, fc2, cuba2 = _expect_chain(wl.graph, [nir.Affine, nir.CubaLIF, nir.Affine, nir.CubaLIF])
    rec = _recurrent_affine(wl.graph, chain[1][0])
    if rec is None:
        raise ValueError("braille graph: expected a recurrent Affine on the first CubaLIF")
    params = {
        "fc1": _affine_params(fc1), "cuba1": _neuron_params(cuba1, wl.dt),
        "rec": _affine_params(rec[1]),
        "fc2": _affine_params(fc2), "cuba2": _neuron_params(cuba2, wl.dt),
    }
    n_hidden, n_out = fc1.weight.shape[0], fc2.weight.shape[0]

    def recurrent_layer(p, i, v, z, h_t):
        # Fan-in: feed-forward current plus the recurrent Affine of last step's spikes.
        i, v, z = _cuba_lif(p["cuba1"], i, v, h_t + _affine(p["rec"], z))
        return i, v, z, z

    def sim(p, x):
        batch = x.shape[1]
        if variant == "layerwise":
            z1 = _scan_layer(recurrent_layer, p, _affine(p["fc1"], x), n_states=3, unroll=unroll)
            return _scan_layer(_cuba_lif, p["cuba2"], _affine(p["fc2"], z1), n_states=2, unroll=unroll)

        def step(carry, x_t):
            i1, v1, z1, i2, v2 = carry
            h_t = x_t if variant == "hoisted" else _affine(p["fc1"], x_t)
            i1, v1, z1, _ = recurrent_layer(p, i1, v1, z1, h_t)
            i2, v2, z2 = _cuba_lif(p["cuba2"], i2, v2, _affine(p["fc2"], z1))
            return (i1, v1, z1, i2, v2), z2

        xs = _affine(p["fc1"], x) if variant == "hoisted" else x
        zeros_h = jnp.zeros((batch, n_hidden), jnp.float32)
        zeros_o = jnp.zeros((batch, n_out), jnp.float32)
        _, out = lax.scan(step, (zeros_h, zeros_h, zeros_h, zeros_o, zeros_o), xs, unroll=unroll)
        return out

    return sim, params


# ---- cnn: 3x (Conv2d -> IF), 2 SumPool2d, Flatten, 2x (Affine -> IF) ----


def _cnn_handwritten(wl: Workload, variant: str, unroll: int, layout: str):
    (conv1, if1, conv2, if2, pool1, conv3, if3, pool2, flat, fc1, if4, fc2, if5) = _expect_chain(
        wl.graph,
        [nir.Conv2d, nir.IF, nir.Conv2d, nir.IF, nir.SumPool2d, nir.Conv2d, nir.IF,
         nir.SumPool2d, nir.Flatten, nir.Affine, nir.IF, nir.Affine, nir.IF],
    )
    if int(flat.end_dim) != -1:
        raise ValueError("cnn graph: expected Flatten over all non-batch dimensions")
    conv_a, conv_b, conv_c = (_conv2d_fn(n, layout) for n in (conv1, conv2, conv3))
    pool_a, pool_b = _sumpool2d_fn(pool1, layout), _sumpool2d_fn(pool2, layout)
    flatten = _flatten_fn(layout)
    neurons = [if1, if2, if3, if4, if5]
    params = {
        "conv1": _conv2d_params(conv1, layout),
        "conv2": _conv2d_params(conv2, layout),
        "conv3": _conv2d_params(conv3, layout),
        "fc1": _affine_params(fc1),
        "fc2": _affine_params(fc2),
        "if": [
            {k: _to_layout(v, layout) for k, v in _neuron_params(n, wl.dt).items()} for n in neurons
        ],
    }
    state_shapes = [_to_layout(np.zeros(np.shape(n.v_threshold)), layout).shape for n in neurons]

    def sim(p, x):
        q = p["if"]
        if layout == "NHWC" and variant != "in_scan":
            x = jnp.transpose(x, (0, 1, 3, 4, 2))  # (T, B, C, H, W) -> (T, B, H, W, C)
        if variant == "layerwise":
            z = _scan_layer(_if, q[0], _over_time(functools.partial(conv_a, p["conv1"]), x), unroll=unroll)
            z = _scan_layer(_if, q[1], _over_time(functools.partial(conv_b, p["conv2"]), z), unroll=unroll)
            z = _scan_layer(_if, q[2], _over_time(lambda a: conv_c(p["conv3"], pool_a(a)), z), unroll=unroll)
            h = _over_time(lambda a: _affine(p["fc1"], flatten(pool_b(a))), z)
            z = _scan_layer(_if, q[3], h, unroll=unroll)
            return _scan_layer(_if, q[4], _affine(p["fc2"], z), unroll=unroll)

        def step(v, x_t):
            v = list(v)
            if variant == "hoisted":
                h = x_t
            else:  # transpose one step's input to channels-last (cheaper than all T at once)
                h = conv_a(p["conv1"], jnp.transpose(x_t, (0, 2, 3, 1)) if layout == "NHWC" else x_t)
            v[0], z = _if(q[0], v[0], h)
            v[1], z = _if(q[1], v[1], conv_b(p["conv2"], z))
            v[2], z = _if(q[2], v[2], conv_c(p["conv3"], pool_a(z)))
            v[3], z = _if(q[3], v[3], _affine(p["fc1"], flatten(pool_b(z))))
            v[4], z = _if(q[4], v[4], _affine(p["fc2"], z))
            return tuple(v), z

        xs = _over_time(functools.partial(conv_a, p["conv1"]), x) if variant == "hoisted" else x
        batch = x.shape[1]
        init = tuple(jnp.zeros((batch, *s), jnp.float32) for s in state_shapes)
        _, out = lax.scan(step, init, xs, unroll=unroll)
        return out

    return sim, params


# Fastest CNN image layout per variant on XLA:CPU (2 cores, B=32, T=100).
# Per-step convs inside lax.scan: NHWC ~0.2 s vs NCHW ~1.1 s. Convs batched over
# T*B=3200 images (layerwise, floor): NCHW ~0.3 s vs NHWC ~0.4 s.
_DEFAULT_LAYOUT = {"in_scan": "NHWC", "hoisted": "NHWC", "layerwise": "NCHW", "floor": "NCHW"}


def _build_handwritten(workload: Workload, variant: str, unroll: int, layout: str | None):
    """Dispatch on workload.kind; ``layout`` ("NHWC"/"NCHW"/None=fastest) only matters for the CNN."""
    if workload.kind == "cnn":
        return _cnn_handwritten(workload, variant, unroll, layout or _DEFAULT_LAYOUT[variant])
    builders = {"ff": _ff_handwritten, "braille": _braille_handwritten}
    return builders[workload.kind](workload, variant, unroll)


def make_handwritten_scan(workload: Workload, unroll: int = 1, layout: str | None = None) -> Baseline:
    """jit + lax.scan with every matmul/conv inside the scan body."""
    sim, params = _build_handwritten(workload, "in_scan", unroll, layout)
    return _jax_baseline("handwritten_scan", sim, params)


def make_handwritten_scan_hoisted(workload: Workload, unroll: int = 1, layout: str | None = None) -> Baseline:
    """As :func:`make_handwritten_scan`, with the input projection batched over T*B before the scan."""
    sim, params = _build_handwritten(workload, "hoisted", unroll, layout)
    return _jax_baseline("handwritten_scan_hoisted", sim, params)


def make_handwritten_scan_layerwise(workload: Workload, unroll: int = 1, layout: str | None = None) -> Baseline:
    """One lax.scan per neuron layer; all stateless ops batched over T*B between the scans."""
    sim, params = _build_handwritten(workload, "layerwise", unroll, layout)
    return _jax_baseline("handwritten_scan_layerwise", sim, params)


# --------------------------------------------------------------------------
# (b) NIRTorch 2.6 with a hand-written node map
# --------------------------------------------------------------------------


class _TorchNeuron(torch.nn.Module):
    """Holds the neuron's float32 coefficients as buffers (dt/tau computed in float64)."""

    def __init__(self, node: nir.NIRNode, dt: float):
        super().__init__()
        for key, value in _neuron_params(node, dt).items():
            self.register_buffer(key, torch.from_numpy(value))


class TorchLIF(_TorchNeuron):
    def forward(self, x, state=None):
        v = torch.zeros_like(x) if state is None else state
        v = v + self.alpha * (self.v_leak - v + self.r * x)
        spiked = v > self.v_threshold
        return spiked.to(x.dtype), torch.where(spiked, self.v_reset, v)


class TorchLI(_TorchNeuron):
    def forward(self, x, state=None):
        v = torch.zeros_like(x) if state is None else state
        v = v + self.alpha * (self.v_leak - v + self.r * x)
        return v, v


class TorchIF(_TorchNeuron):
    def forward(self, x, state=None):
        v = torch.zeros_like(x) if state is None else state
        v = v + self.dt_r * x
        spiked = v > self.v_threshold
        return spiked.to(x.dtype), torch.where(spiked, self.v_reset, v)


class TorchCubaLIF(_TorchNeuron):
    def forward(self, x, state=None):
        if state is None:
            i, v = torch.zeros_like(x), torch.zeros_like(x)
        else:
            i, v = state
        i = i + self.alpha_syn * (-i + self.w_in * x)
        v = v + self.alpha_mem * (self.v_leak - v + self.r * i)
        spiked = v > self.v_threshold
        return spiked.to(x.dtype), (i, torch.where(spiked, self.v_reset, v))


def _torch_affine(node: nir.Affine) -> torch.nn.Linear:
    # NIRTorch 2.6's default Affine mapping writes `module.weight.bias = ...`
    # where it means `module.bias.data = ...`. The real bias then keeps
    # nn.Linear's random initial values, so the graph's bias is silently
    # replaced by a random one. Map Affine to an nn.Linear that keeps the bias.
    out_features, in_features = node.weight.shape
    linear = torch.nn.Linear(in_features, out_features, bias=True)
    linear.weight.data = torch.from_numpy(_f32(node.weight).copy())
    linear.bias.data = torch.from_numpy(_f32(node.bias).copy())
    return linear


def _torch_flatten(node: nir.Flatten) -> torch.nn.Flatten:
    # NIR's start_dim/end_dim count from the first non-batch dimension (the
    # Sinabs CNN has start_dim=0). NIRTorch 2.6 passes them to torch.nn.Flatten
    # unchanged, which also flattens the batch. The next Linear then fails with
    # "mat1 and mat2 shapes cannot be multiplied (1x4096 and 128x256)".
    start, end = int(node.start_dim), int(node.end_dim)
    return torch.nn.Flatten(start_dim=start + 1 if start >= 0 else start,
                            end_dim=end + 1 if end >= 0 else end)


def _nirtorch_name(name: str) -> str:
    # Same rule as nirtorch.nir_interpreter._sanitize_name (2.6).
    name = name.replace(".", "_")
    return "nir_node_" + name if keyword.iskeyword(name) else name


def nirtorch_node_map(dt: float) -> dict:
    """The user-written node map handed to ``nirtorch.nir_to_torch``."""
    return {
        nir.LIF: functools.partial(TorchLIF, dt=dt),
        nir.LI: functools.partial(TorchLI, dt=dt),
        nir.IF: functools.partial(TorchIF, dt=dt),
        nir.CubaLIF: functools.partial(TorchCubaLIF, dt=dt),
        nir.Affine: _torch_affine,
        nir.Flatten: _torch_flatten,
        # Conv2d and SumPool2d use NIRTorch's defaults (SumPool2d -> LPPool2d(p=1)).
    }


def make_nirtorch_baseline(workload: Workload, seed_recurrent_bias: bool = True) -> Baseline:
    """``nirtorch.nir_to_torch`` module called once per time step from Python.

    NIRTorch 2.6 feeds a recurrent edge from ``state["<node>_prev_output"]``,
    which is ``torch.zeros(1)`` at step 0. So at step 0 a recurrent Affine
    gives 0, where it should give ``W @ 0 + b = b``. With
    ``seed_recurrent_bias=True``, that state entry starts as the Affine's bias,
    which matches the semantics above (zero spikes at step 0). With False you
    get NIRTorch's own behaviour.
    """
    module = nirtorch.nir_to_torch(workload.graph, nirtorch_node_map(workload.dt))
    module.eval()
    names = [name for name, _ in module.named_children()]
    initial_prev = {}
    if seed_recurrent_bias:
        for name, _ in _feedforward_chain(workload.graph):
            rec = _recurrent_affine(workload.graph, name)
            if rec is not None:
                initial_prev[f"{_nirtorch_name(rec[0])}_prev_output"] = torch.from_numpy(_f32(rec[1].bias))

    def run(x: torch.Tensor) -> torch.Tensor:
        state = {name: None for name in names}
        state.update(initial_prev)
        outputs = []
        for t in range(x.shape[0]):
            y, state = module(x[t], state)
            outputs.append(y)
        return torch.stack(outputs)

    baseline = Baseline("nirtorch_baseline", "torch", run)
    baseline.module = module
    return baseline


# --------------------------------------------------------------------------
# (c) Arithmetic floor: only the stateless weight ops, batched over T*B rows
# --------------------------------------------------------------------------


def _stateless_chain(workload: Workload):
    """The feed-forward chain without neuron nodes. Recurrent Affines are left out."""
    neuron_types = (nir.LIF, nir.LI, nir.IF, nir.CubaLIF)
    chain = [n for _, n in _feedforward_chain(workload.graph) if not isinstance(n, neuron_types)]
    for node in chain:
        if not isinstance(node, (nir.Affine, nir.Conv2d, nir.SumPool2d, nir.Flatten)):
            raise TypeError(f"matmul_floor: unsupported node {type(node).__name__}")
    return chain


def make_matmul_floor(workload: Workload, backend: str = "jax", layout: str | None = None) -> Baseline:
    """Affine/Conv2d/SumPool2d/Flatten of the chain applied to all T*B rows at once.

    ff:      (T*B,700)@(700,256) then (T*B,256)@(256,20)
    braille: (T*B,12)@(12,38) then (T*B,38)@(38,7) (the feed-forward matmuls)
    cnn:     the three convs, the two pools and the two Affines over T*B images
             (JAX: image ``layout`` as for the hand-written scan; torch: NCHW)
    """
    chain = _stateless_chain(workload)
    is_image = any(isinstance(n, nir.Conv2d) for n in chain)
    layout = layout or _DEFAULT_LAYOUT["floor"]
    if backend == "jax":
        ops, params = [], []
        for node in chain:
            if isinstance(node, nir.Affine):
                ops.append(_affine)
                params.append(_affine_params(node))
            elif isinstance(node, nir.Conv2d):
                ops.append(_conv2d_fn(node, layout))
                params.append(_conv2d_params(node, layout))
            elif isinstance(node, nir.SumPool2d):
                pool = _sumpool2d_fn(node, layout)
                ops.append(lambda _p, h, pool=pool: pool(h))
                params.append({})
            else:  # Flatten over all non-batch dimensions
                flatten = _flatten_fn(layout if is_image else "NCHW")
                ops.append(lambda _p, h, flatten=flatten: flatten(h))
                params.append({})

        def sim(p, x):
            t, b = x.shape[:2]
            h = x.reshape(t * b, *x.shape[2:])
            if is_image and layout == "NHWC":
                h = jnp.transpose(h, (0, 2, 3, 1))
            for op, q in zip(ops, p):
                h = op(q, h)
            return h.reshape(t, b, *h.shape[1:])

        return _jax_baseline("matmul_floor_jax", sim, params)

    if backend == "torch":
        layers = []
        for node in chain:
            if isinstance(node, nir.Affine):
                w, b = torch.from_numpy(_f32(node.weight)), torch.from_numpy(_f32(node.bias))
                layers.append(lambda h, w=w, b=b: F.linear(h, w, b))
            elif isinstance(node, nir.Conv2d):
                w, b = torch.from_numpy(_f32(node.weight)), torch.from_numpy(_f32(node.bias))
                kw = {"stride": _pair(node.stride), "padding": _pair(node.padding),
                      "dilation": _pair(node.dilation), "groups": int(node.groups)}
                layers.append(lambda h, w=w, b=b, kw=kw: F.conv2d(h, w, b, **kw))
            elif isinstance(node, nir.SumPool2d):
                k, s, pad = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
                layers.append(lambda h, k=k, s=s, pad=pad: F.avg_pool2d(h, k, s, pad) * (k[0] * k[1]))
            else:
                layers.append(lambda h: h.flatten(1))

        def run(x: torch.Tensor) -> torch.Tensor:
            t, b = x.shape[:2]
            h = x.reshape(t * b, *x.shape[2:])
            for layer in layers:
                h = layer(h)
            return h.reshape(t, b, *h.shape[1:])

        return Baseline("matmul_floor_torch", "torch", run)

    raise ValueError(f"unknown backend {backend!r}")


_NEURONS = (nir.LIF, nir.LI, nir.IF, nir.CubaLIF, nir.CubaLI, nir.I)


def make_matmul_floor_in_loop(workload: Workload) -> Baseline:
    """Only the weight products, but one time step at a time inside a ``lax.scan``, as the network
    needs them (a recurrent Affine reads the previous step's value): the floor for a graph whose
    cost is the loop over small products rather than the products themselves.

    braille: per step x_t @ (12, 38) + h_{t-1} @ (38, 38), then h_t @ (38, 7)
    ff:      per step x_t @ (700, 256), then (256, 20)
    No neuron dynamics; the carry is the recurrent Affine's input (zeros when there is none).
    """
    graph = workload.graph
    chain = _feedforward_chain(graph)
    if not all(isinstance(n, (nir.Affine, *_NEURONS)) for _, n in chain):
        raise TypeError("matmul_floor_in_loop: only chains of Affine and neuron nodes")
    steps, params = [], []
    for name, node in chain:
        if isinstance(node, nir.Affine):
            steps.append(("affine", len(params)))
            params.append(_affine_params(node))
        else:
            rec = _recurrent_affine(graph, name)
            if rec is not None:
                steps.append(("recurrent", len(params)))
                params.append(_affine_params(rec[1]))

    def sim(p, x):
        def body(carry, x_t):
            h, new = x_t, []
            for (kind, k), h_prev in zip(steps, carry):
                if kind == "affine":
                    h = _affine(p[k], h)
                    new.append(h_prev)
                else:  # the recurrent product of the previous step's value, added in
                    h = h + _affine(p[k], h_prev)
                    new.append(h)
            return tuple(new), h

        b = x.shape[1]
        carry = tuple(jnp.zeros((b, p[k]["w"].shape[1] if kind == "recurrent" else 1), x.dtype)
                      for kind, k in steps)
        return jax.lax.scan(body, carry, x)[1]

    return _jax_baseline("matmul_floor_in_loop", sim, params)


ALL_BASELINES: dict[str, Callable[[Workload], Baseline]] = {
    "handwritten_scan": make_handwritten_scan,
    "handwritten_scan_hoisted": make_handwritten_scan_hoisted,
    "handwritten_scan_layerwise": make_handwritten_scan_layerwise,
    "nirtorch_baseline": make_nirtorch_baseline,
    "matmul_floor_jax": functools.partial(make_matmul_floor, backend="jax"),
    "matmul_floor_torch": functools.partial(make_matmul_floor, backend="torch"),
    "matmul_floor_in_loop": make_matmul_floor_in_loop,
}


# --------------------------------------------------------------------------
# Timing and smoke test
# --------------------------------------------------------------------------


def _cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds used by the whole machine, CPU seconds used by this process), Linux only."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    busy = sum(ticks) - ticks[3] - ticks[4]  # everything except idle and iowait
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def time_baseline(baseline: Baseline, x: np.ndarray, repeats: int = 5) -> dict[str, Any]:
    """Compile (JAX, ahead of time), run once to warm up, then time ``repeats`` runs.

    ``others`` is the share of the machine's CPU that other processes used
    during the timed runs. Above a few percent, the timings are contaminated.
    """
    x = baseline.prepare(x)
    compile_s = baseline.compile(x)
    t0 = time.perf_counter()
    y = baseline(x)
    first_s = time.perf_counter() - t0
    times = []
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        baseline(x)
        times.append(time.perf_counter() - t0)
    cpu1, wall = _cpu_seconds(), time.perf_counter() - wall0
    others = float("nan")
    if cpu0 is not None and cpu1 is not None:
        others = max(0.0, (cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1])) / (wall * (os.cpu_count() or 1))
    return {
        "compile_s": compile_s, "first_s": first_s, "median_s": statistics.median(times),
        "min_s": min(times), "times_s": times, "others": others, "output": Baseline.to_numpy(y),
    }


def compare_outputs(workload: Workload, a: np.ndarray, b: np.ndarray) -> str:
    """Spike outputs: count of differing entries. LI voltage output (ff): max |a-b|."""
    if a.shape != b.shape:
        return f"SHAPE MISMATCH {a.shape} vs {b.shape}"
    if workload.kind == "ff":
        return f"max|dv|={np.max(np.abs(a - b)):.2e}"
    return f"spike mismatches={int(np.sum(a != b))}/{a.size}"


def outputs_match(workload: Workload, a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if workload.kind == "ff":
        return bool(np.max(np.abs(a - b)) <= 1e-4)
    return bool(np.array_equal(a, b))


def _default_path(*candidates: str) -> str | None:
    root = Path(__file__).resolve().parent.parent
    for c in candidates:
        p = Path(c) if Path(c).is_absolute() else root / c
        if p.exists():
            return str(p)
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--braille", default=_default_path("nirbridge/examples/braille_noDelay_bias_zero.nir"))
    parser.add_argument("--cnn", default=_default_path("nirbridge/examples/cnn_sinabs.nir"))
    parser.add_argument("--smoke-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--workloads", nargs="*", default=None, help="subset: ff_700_256_20 braille cnn")
    parser.add_argument("--baselines", nargs="*", default=None, help=f"subset of {list(ALL_BASELINES)}")
    args = parser.parse_args(argv)

    workloads = [ff_workload()]
    for path, make in ((args.braille, braille_workload), (args.cnn, cnn_workload)):
        if path is None:
            print(f"skipping {make.__name__}: no .nir file found (pass --braille/--cnn)")
        else:
            workloads.append(make(path))
    if args.workloads:
        workloads = [w for w in workloads if w.name in args.workloads]
    names = args.baselines or list(ALL_BASELINES)
    print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), nirtorch {nirtorch.__version__}, nir {nir.version}")

    # ---- smoke: small T, every baseline runs; scans vs NIRTorch must agree
    ok = True
    print(f"\n== smoke test (T={args.smoke_steps}) ==")
    for wl in workloads:
        small = wl.with_size(steps=args.smoke_steps)
        x = small.inputs()
        outs = {name: Baseline.to_numpy(ALL_BASELINES[name](small)(x)) for name in names}
        ref = outs.get("nirtorch_baseline")
        for name, y in outs.items():
            line = f"  {wl.name:14s} {name:28s} out{tuple(y.shape)} mean={y.mean():.4f}"
            if ref is not None and name.startswith("handwritten"):
                line += f"  vs nirtorch: {compare_outputs(wl, y, ref)}"
                ok &= outputs_match(wl, y, ref)
            print(line)
        if "nirtorch_baseline" in names and wl.kind == "braille":
            raw = Baseline.to_numpy(make_nirtorch_baseline(small, seed_recurrent_bias=False)(x))
            print(f"  {wl.name:14s} {'nirtorch (unseeded rec.)':28s} vs seeded: {compare_outputs(wl, raw, ref)}")
    print("smoke:", "OK" if ok else "MISMATCH")

    if args.no_timing:
        return 0 if ok else 1

    # ---- timing at full size
    print(f"\n== timing (median of {args.repeats} warm runs; JAX compile reported separately; "
          "'others' = CPU share used by other processes meanwhile) ==")
    header = (f"{'workload':14s} {'baseline':28s} {'compile s':>9s} {'median ms':>10s} "
              f"{'min ms':>9s} {'us/step':>9s} {'x scan':>7s} {'others':>7s}")
    print(header)
    print("-" * len(header))
    for wl in workloads:
        x = wl.inputs()
        results = {}
        for name in names:
            results[name] = time_baseline(ALL_BASELINES[name](wl), x, args.repeats)
            ref = results.get("handwritten_scan")
            r = results[name]
            ratio = r["median_s"] / ref["median_s"] if ref else float("nan")
            print(f"{wl.name:14s} {name:28s} {r['compile_s']:9.2f} {1e3 * r['median_s']:10.1f} "
                  f"{1e3 * r['min_s']:9.1f} {1e6 * r['median_s'] / wl.steps:9.1f} {ratio:7.2f} "
                  f"{100 * r['others']:6.0f}%")
        if "nirtorch_baseline" in results:
            ref = results["nirtorch_baseline"]["output"]
            for name in names:
                if name.startswith("handwritten"):
                    print(f"{'':14s}   full-size {name} vs nirtorch: "
                          f"{compare_outputs(wl, results[name]['output'], ref)}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())


# --------------------------------------------------------------------------
# Training steps: forward + backward (surrogate gradient) + one Adam step
# --------------------------------------------------------------------------
#
# Every training row runs the 700-256-20 network on the same input and labels: a loss of
# cross-entropy of the time-mean output (logits) against seeded labels, then Adam (lr 1e-3) on
# the weights and biases. Surrogate: 1 / (1 + 25 |v - threshold|)^2 everywhere (nirbridge's
# default "fast_sigmoid", snnTorch's fast_sigmoid(slope=25), Spyx's superspike(k=25)). The
# peers run their own neuron models as their users write them (Spyx and snnTorch: decay
# factors, subtractive reset), so the rows time the same amount of work, not the same numbers.
# A row is ``TrainStep(name, step)``: ``step()`` runs one training step and waits for it.

class TrainStep:
    def __init__(self, name: str, step: Callable[[], Any]):
        self.name, self.step = name, step

    def __call__(self):
        return self.step()


def training_data(wl: Workload, n_out: int = 20):
    x = wl.inputs()
    y = np.random.default_rng(wl.seed + 1).integers(0, n_out, size=wl.batch)
    return x, y


def _xent_jax(logits, labels):
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


def train_nirbridge_jax(wl: Workload, dynamics) -> TrainStep:
    """nirbridge's JAX model, trained on its weights and biases (``model.mask()``): the gradient is taken
    of those only, the other parameters (time constants, thresholds) closed over as constants.
    (``optax.masked`` over all parameters gives the same updates but differentiates every
    parameter: measured 1.24x slower at T=100.)"""

    import nirbridge as nb

    model = nb.to_jax(nb.Graph.from_nir(wl.graph), dynamics)
    out = model.graph.outputs[0]
    mask = model.mask()
    train = {n: {f: a for f, a in d.items() if mask[n][f]} for n, d in model.params.items()}
    train = {n: d for n, d in train.items() if d}
    fixed = {n: {f: a for f, a in d.items() if not mask[n][f]} for n, d in model.params.items()}
    def loss(tp, xs, ys):
        p = {n: {**fixed.get(n, {}), **tp.get(n, {})} for n in model.params}
        return _xent_jax(model.run(p, xs)[0][out].mean(0), ys)

    x, y = training_data(wl)
    return _adam_step("nirbridge-jax", loss, train, x, y)


def _adam_step(name: str, loss, params, x: np.ndarray, y: np.ndarray) -> TrainStep:
    """One jitted Adam (lr 1e-3) step on ``loss(params, x, y)``, its state carried between calls."""
    import optax

    opt = optax.adam(1e-3)
    x, y = jax.device_put(x), jax.device_put(y)

    @jax.jit
    def step(p, s, xs, ys):
        value, g = jax.value_and_grad(loss)(p, xs, ys)
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s, value

    state = {"p": params, "s": opt.init(params)}

    def run():
        state["p"], state["s"], v = step(state["p"], state["s"], x, y)
        return jax.block_until_ready(v)

    return TrainStep(name, run)


def train_handwritten_jax(wl: Workload) -> TrainStep:
    """The same network and semantics as nirbridge (forward Euler LIF with reset to zero, LI readout),
    written by hand: input projection hoisted over all T*B rows, a ``lax.scan`` over the rest."""

    nodes = dict(wl.graph.nodes)
    f32 = lambda a: jnp.asarray(np.asarray(a, np.float32))  # noqa: E731
    fc1, lif, fc2, li = nodes["fc1"], nodes["lif"], nodes["fc2"], nodes["li"]
    params = {"w1": f32(fc1.weight.T), "b1": f32(fc1.bias), "w2": f32(fc2.weight.T), "b2": f32(fc2.bias)}
    a1 = f32(wl.dt / np.asarray(lif.tau, np.float64))
    a2 = f32(wl.dt / np.asarray(li.tau, np.float64))
    thr = f32(lif.v_threshold)

    @jax.custom_jvp
    def spike(v):
        return (v > thr).astype(v.dtype)

    @spike.defjvp
    def _spike_jvp(primals, tangents):
        (v,), (dv,) = primals, tangents
        return spike(v), dv / (1 + 25 * jnp.abs(v - thr)) ** 2

    def forward(p, xs):
        T, B = xs.shape[:2]
        h = (xs.reshape(T * B, -1) @ p["w1"] + p["b1"]).reshape(T, B, -1)

        def body(c, h_t):
            v1, v2 = c
            v1 = v1 + a1 * (h_t - v1)
            z = spike(v1)
            v1 = jnp.where(z > 0, 0.0, v1)
            v2 = v2 + a2 * (z @ p["w2"] + p["b2"] - v2)
            return (v1, v2), v2

        c0 = (jnp.zeros((B, a1.shape[0]), jnp.float32), jnp.zeros((B, a2.shape[0]), jnp.float32))
        return lax.scan(body, c0, h)[1]

    x, y = training_data(wl)
    return _adam_step("handwritten_jax", lambda q, xs, ys: _xent_jax(forward(q, xs).mean(0), ys), params,
                      x.astype(np.float32), y)


def train_spyx(wl: Workload) -> TrainStep:
    """Spyx 1.0.0 as its users write it: ``spyx.nn.Sequential`` of flax nnx Linear layers and Spyx's own
    LIF / LI neurons, run by ``spyx.nn.run``, trained with ``nnx.Optimizer`` under ``nnx.jit``."""
    import optax
    import spyx
    from flax import nnx

    rngs = nnx.Rngs(wl.seed)
    model = spyx.nn.Sequential(
        nnx.Linear(700, 256, rngs=rngs),
        spyx.nn.LIF((256,), activation=spyx.axn.superspike(25), rngs=rngs),
        nnx.Linear(256, 20, rngs=rngs),
        spyx.nn.LI((20,), rngs=rngs),
    )
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    x, y = training_data(wl)
    x, y = jnp.asarray(x.astype(np.float32)), jnp.asarray(y)

    def loss_fn(m, xs, ys):
        out, _ = spyx.nn.run(m, xs)
        return _xent_jax(out.mean(0), ys)

    @nnx.jit
    def step(m, o, xs, ys):
        value, grads = nnx.value_and_grad(loss_fn)(m, xs, ys)
        o.update(m, grads)
        return value

    def run():
        return jax.block_until_ready(step(model, optimizer, x, y))

    return TrainStep("spyx", run)


def train_snntorch(wl: Workload) -> TrainStep:
    """snnTorch 1.0.0 as its users write it: nn.Linear + snn.Leaky (fast sigmoid, slope 25), a Python
    loop over time, the output layer's membrane as logits; torch.optim.Adam."""
    import snntorch as snn
    from snntorch import surrogate

    torch.manual_seed(wl.seed)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(700, 256)
            self.lif1 = snn.Leaky(beta=0.9, spike_grad=surrogate.fast_sigmoid(slope=25))
            self.fc2 = torch.nn.Linear(256, 20)
            self.lif2 = snn.Leaky(beta=0.9, reset_mechanism="none", spike_grad=surrogate.fast_sigmoid(slope=25))

        def forward(self, xs):
            mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
            outs = []
            for t in range(xs.shape[0]):
                spk1, mem1 = self.lif1(self.fc1(xs[t]), mem1)
                _, mem2 = self.lif2(self.fc2(spk1), mem2)
                outs.append(mem2)
            return torch.stack(outs)

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = training_data(wl)
    x, y = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)

    def run():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x).mean(0), y)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return TrainStep("snntorch", run)


def train_nirbridge_torch(wl: Workload, dynamics) -> TrainStep:
    import nirbridge as nb

    module = nb.to_torch(nb.Graph.from_nir(wl.graph), dynamics)
    opt = torch.optim.Adam([p for _, p in module.named_parameters_of_kind("weight")], lr=1e-3)
    x, y = training_data(wl)
    x, y = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)

    def run():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(module(x).mean(0), y)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return TrainStep("nirbridge-torch", run)
