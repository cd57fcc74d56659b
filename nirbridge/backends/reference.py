"""The NumPy reference simulator: slow, plain, and the oracle every backend is tested against.

It runs the kernels of :mod:`nirbridge.kernels` through the one time loop
(:func:`nirbridge.program.run_loop`) with a Python loop over time steps. Its array operations are
the plainest NumPy: convolutions and pooling as sums over kernel offsets of strided slices,
products with ``np.einsum`` (no BLAS), so every batch row is computed by the same sequence of
floating-point operations whatever the batch size, and results are bit-identical between one
batch of 8 and 8 batches of 1.

>>> import nir, numpy as np, nirbridge as nb
>>> from nirbridge.backends.reference import ReferenceModel
>>> g = nb.Graph.from_nir(nir.NIRGraph.from_list(
...     nir.LIF(tau=np.array([1e-3]), r=np.array([1.0]), v_leak=np.array([0.0]),
...             v_threshold=np.array([0.25]), v_reset=np.array([0.0]))))
>>> model = ReferenceModel(g, nb.Dynamics(dt=1e-4))
>>> out, state = model.run(np.ones((4, 1, 1)))
>>> out["output"][:, 0, 0].tolist()
[0.0, 0.0, 1.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .._util import progress_bar
from ..io import as_graph
from ..kernels import NamespaceOps
from ..program import (
    Program,
    build_program,
    export_state,
    float_params,
    graph_step,
    import_state,
    init_carry,
    normalize_inputs,
    parse_record,
    prepare,
    python_loop,
    resolve_dtype,
    run_loop,
)

__all__ = ["NumpyOps", "ReferenceBackend", "ReferenceModel", "cast_params"]


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


OPS = NumpyOps()


def cast_params(prog: Program, dtype: np.dtype) -> dict:
    """The params pytree ``{node: {field: array}}`` of a program's graph, cast to the compute dtype
    (every float parameter but the structural ones, which the kernels fixed at build time)."""
    out = {}
    for s in prog.steps:
        fields = {k: v.astype(dtype) for k, v in float_params(s).items()}
        if fields:
            out[s.name] = fields
    return out


class ReferenceModel:
    """A graph on the NumPy reference, with the protocol every backend's model follows:
    ``init_state(batch)``, ``step(state, x_t) -> (state, y_t)``, ``run(x, state=None, record=None)
    -> (outputs, state)``. ``graph`` is a Graph, a ``nir.NIRGraph`` or a path."""

    def __init__(self, graph: Any, dynamics: Any = None, *, dtype: Any = "float32", program: Program | None = None):
        self.program = program if program is not None else build_program(as_graph(graph, "ReferenceModel"),
                                                                          dynamics, "reference")
        self.dtype = resolve_dtype(dtype)
        self.params = cast_params(self.program, self.dtype)
        self._coeffs = prepare(OPS, self.program, self.params)

    @property
    def graph(self):
        """The :class:`~nirbridge.graph.Graph` the model runs."""
        return self.program.graph

    @property
    def dynamics(self):
        """The :class:`~nirbridge.dynamics.Dynamics` the model runs."""
        return self.program.dynamics

    def init_state(self, batch: int) -> dict:
        """The state at step 0: ``{"nodes": {node: {var: array}}, "prev": {node: array}}``."""
        return export_state(init_carry(OPS, self.program, self._coeffs, int(batch), self.dtype))

    def step(self, state: Mapping | None, x_t: Any) -> tuple[dict, dict]:
        """One time step: ``x_t`` is ``(B, *shape)`` or ``{input: array}``; returns ``(state, {output: y_t})``."""
        prog = self.program
        seq = {k: np.asarray(v)[None] for k, v in x_t.items()} if isinstance(x_t, Mapping) else np.asarray(x_t)[None]
        inputs, _, B = normalize_inputs(prog, seq, self.dtype, convert=_convert)
        carry = init_carry(OPS, prog, self._coeffs, B, self.dtype) if state is None else import_state(prog, state)
        carry, outs = graph_step(OPS, prog, self._coeffs, carry, {n: v[0] for n, v in inputs.items()})
        return export_state(carry), {o: outs[o] for o in prog.outputs}

    def run(self, x: Any, state: Mapping | None = None, record: Any = None, *, progress: bool = False):
        """Run a time-major sequence ``(T, B, *shape)`` (or ``{input: array}``); returns ``(outputs,
        state)``: ``outputs`` maps output names, recorded nodes and ``(node, var)`` to ``(T, B, ...)``."""
        prog = self.program
        inputs, T, B = normalize_inputs(prog, x, self.dtype, convert=_convert)
        rec = parse_record(prog, record)
        carry = init_carry(OPS, prog, self._coeffs, B, self.dtype) if state is None else import_state(prog, state)
        bar = progress_bar(T, progress, "reference")
        try:
            result, carry = run_loop(OPS, prog, self._coeffs, carry, inputs, iterate=python_loop(np.stack, bar),
                                     record=rec)
        finally:
            if bar is not None:
                bar.close()
        return result, export_state(carry)


def _convert(v, dtype):
    return np.asarray(v).astype(dtype)


class ReferenceBackend:
    """The NumPy reference as a backend of :func:`nirbridge.simulate`."""

    name = "reference"

    def simulate(self, graph, dynamics, x, *, record=None, dtype=None, progress=False) -> dict:
        model = ReferenceModel(graph, dynamics, dtype=dtype)
        return model.run(x, record=record, progress=progress)[0]
