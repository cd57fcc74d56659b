"""The NumPy reference simulator: slow, plain, and the oracle every backend is tested against.

It runs the kernels of :mod:`nirbridge.kernels` one time step at a time in a Python loop. Its
array operations are the plainest NumPy: convolutions and pooling as sums over kernel offsets of
strided slices, products with ``np.einsum`` (no BLAS), so every batch row is computed by the same
sequence of floating-point operations whatever the batch size, and results are bit-identical
between one batch of 8 and 8 batches of 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._util import progress_bar
from .kernels import NamespaceOps
from .program import (
    Program,
    float_params,
    graph_step,
    init_state,
    normalize_inputs,
    parse_record,
    prepare,
    resolve_dtype,
)

__all__ = ["NumpyOps", "run_reference", "ReferenceAdapter"]


class NumpyOps(NamespaceOps):
    """The kernels' array operations in plain NumPy (see the module docstring)."""

    xp = np
    name = "reference"

    def const(self, value, like):
        return np.asarray(value, dtype=like.dtype)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype=dtype)

    def spike(self, v, threshold, inclusive, surrogate, slope):
        z = v >= threshold if inclusive else v > threshold
        return z.astype(v.dtype)

    def affine(self, x, w, b):
        y = np.einsum("...i,oi->...o", x, w)
        return y if b is None else y + b

    def conv(self, x, w, b, geom, nd):
        pads = [(0, 0), (0, 0)] + [tuple(p) for p in geom["padding"]]
        xp = np.pad(x, pads)
        groups = geom["groups"]
        c_out, c_in_g = w.shape[0], w.shape[1]
        out_g = c_out // groups
        spatial_out = [
            (xp.shape[2 + d] - geom["dilation"][d] * (geom["kernel"][d] - 1) - 1) // geom["stride"][d] + 1
            for d in range(nd)
        ]
        y = np.zeros((x.shape[0], c_out, *spatial_out), dtype=x.dtype)
        for offset in np.ndindex(*geom["kernel"]):
            sl = [slice(None), slice(None)]
            for d in range(nd):
                start = offset[d] * geom["dilation"][d]
                sl.append(slice(start, start + geom["stride"][d] * (spatial_out[d] - 1) + 1, geom["stride"][d]))
            patch = xp[tuple(sl)]
            for g in range(groups):
                wk = w[(slice(g * out_g, (g + 1) * out_g), slice(None)) + offset]
                xg = patch[:, g * c_in_g : (g + 1) * c_in_g]
                y[:, g * out_g : (g + 1) * out_g] += np.einsum("bc...,oc->bo...", xg, wk)
        return y + b.reshape((1, -1) + (1,) * nd)

    def pool(self, x, geom, average):
        (ph, pw), (kh, kw), (sh, sw) = geom["padding"], geom["kernel"], geom["stride"]
        xp = np.pad(x, [(0, 0), (0, 0), (ph, ph), (pw, pw)])
        oh = (xp.shape[2] - kh) // sh + 1
        ow = (xp.shape[3] - kw) // sw + 1
        y = np.zeros((x.shape[0], x.shape[1], oh, ow), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                y += xp[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
        if average:  # PyTorch's default count_include_pad=True: divide by the kernel area
            y = y / np.asarray(kh * kw, dtype=x.dtype)
        return y

    def concat1(self, a, b):
        return np.concatenate([a, b], axis=1)


def cast_params(prog: Program, dtype: np.dtype) -> dict:
    """The params pytree ``{node: {field: array}}`` of a program, cast to the compute dtype."""
    return {s.name: {k: v.astype(dtype) for k, v in float_params(s).items()} for s in prog.steps}


def run_reference(prog: Program, x: Any, *, record=None, dtype=None, progress: bool = False) -> dict:
    """Run ``prog`` on ``x`` one time step at a time; the result is laid out as
    :func:`nirbridge.simulate`'s (outputs, recorded nodes and ``(node, var)`` states, ``(T, B, ...)``)."""
    dtype = resolve_dtype(dtype)
    ops = NumpyOps()
    coeffs = prepare(ops, prog, cast_params(prog, dtype))
    inputs, T, B = normalize_inputs(prog, x, dtype, convert=lambda v, d: np.asarray(v).astype(d))
    rec_nodes, rec_states = parse_record(prog, record)
    plan = prog.graph.plan
    keys = list(dict.fromkeys([*prog.outputs, *rec_nodes]))
    result: dict[Any, np.ndarray] = {k: np.empty((T, B) + plan[k].output_shape, dtype) for k in keys}
    for n, v in rec_states:
        result[(n, v)] = np.empty((T, B) + _state_shape(prog, n, v), dtype)
    state = init_state(ops, prog, B, dtype)
    bar = progress_bar(T, progress, "reference")
    for t in range(T):
        state, outs = graph_step(ops, prog, coeffs, state, {n: a[t] for n, a in inputs.items()})
        for k in keys:
            result[k][t] = outs[k]
        for n, v in rec_states:
            result[(n, v)][t] = state["nodes"][n][v]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return result


def _state_shape(prog: Program, node: str, var: str) -> tuple[int, ...]:
    s = prog.graph.plan[node]
    if var == "buffer":
        return (prog.static[node]["depth"],) + s.input_shape
    return s.input_shape


class ReferenceAdapter:
    """The NumPy reference as a backend of :func:`nirbridge.simulate`."""

    name = "reference"

    def simulate(self, prog: Program, x, *, record=None, dtype=None, progress=False):
        return run_reference(prog, x, record=record, dtype=dtype, progress=progress)
