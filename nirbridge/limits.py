"""What every backend can run: the one place sizes are checked against hard limits.

The node shape rules (:mod:`nirbridge.nodes`) call these checks at load time, so a graph that no
backend could run is refused with an error naming the node and the field, instead of being
accepted and then crashing a backend (an int64 element count that wraps, a padding that makes
XLA abort the process, a delay that overflows when turned into steps). The limits are the
tightest of the backends' (XLA and PyTorch index tensors with 64-bit integers, but XLA's
convolutions take 32-bit sizes per dimension):

* :data:`MAX_DIM`: one dimension of any tensor (input, output, parameter, buffer);
* :data:`MAX_ELEMENTS`: the elements of one tensor, without batch and time;
* :data:`MAX_GEOMETRY`: a kernel size, stride, padding or dilation of a convolution or pooling;
* :data:`MAX_DELAY_STEPS`: a Delay's delay in whole time steps (the depth of its buffer).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from .errors import DynamicsError, ShapeError, UnsupportedError, node_error

__all__ = ["MAX_DIM", "MAX_ELEMENTS", "MAX_GEOMETRY", "MAX_DELAY_STEPS", "MAX_NESTING", "check_shape",
           "check_geometry", "check_delay_steps", "deep_recursion"]

MAX_DIM = 2**31 - 1
MAX_ELEMENTS = 2**40
MAX_GEOMETRY = 2**20
MAX_DELAY_STEPS = 2**24
#: nested graphs inside nested graphs: deeper nesting is refused
MAX_NESTING = 2000


def check_shape(node: str, field: str, shape: Iterable[int], *, allow_empty: bool = False) -> tuple[int, ...]:
    """``shape`` as a tuple of ints, checked: at least one dimension (unless ``allow_empty``), every
    dimension in ``1..MAX_DIM``, and at most :data:`MAX_ELEMENTS` elements in all (computed with
    Python integers, so a product that would wrap around in int64 is caught)."""
    dims = tuple(int(d) for d in shape)
    if not dims and not allow_empty:
        raise node_error(ShapeError, node, field, "the shape is empty (0-d); a NIR shape has at least one dimension",
                         "give the shape as an array of sizes, e.g. np.array([N])")
    n = 1
    for d in dims:
        if d < 1 or d > MAX_DIM:
            raise node_error(ShapeError, node, field, f"shape {dims} has a size outside 1..{MAX_DIM}",
                             "give positive sizes that a backend can index")
        n *= d
    if n > MAX_ELEMENTS:
        raise node_error(ShapeError, node, field, f"shape {dims} has {n} elements, more than any backend can hold "
                         f"(at most {MAX_ELEMENTS})", "use smaller shapes")
    return dims


def check_geometry(node: str, field: str, values: Iterable[int]) -> tuple[int, ...]:
    """Kernel sizes, strides, paddings and dilations: at most :data:`MAX_GEOMETRY` each."""
    vals = tuple(int(v) for v in values)
    if any(abs(v) > MAX_GEOMETRY for v in vals):
        shown = tuple(v if abs(v) < 10**9 else float(v) for v in vals)
        raise node_error(UnsupportedError, node, field, f"{field} {shown} is beyond what a backend can run "
                         f"(at most {MAX_GEOMETRY} per dimension)", f"use a {field} of a size a layer can have")
    return vals


def check_delay_steps(node: str, steps: Any, dt: float) -> None:
    """A Delay's delays in steps of ``dt`` (floats, before rounding): finite and at most
    :data:`MAX_DELAY_STEPS` (the delay buffer holds that many steps)."""
    import numpy as np

    s = np.asarray(steps, dtype=np.float64)
    with np.errstate(all="ignore"):
        bad = ~np.isfinite(s) | (s > MAX_DELAY_STEPS)
    if np.any(bad):
        i = tuple(int(k) for k in np.argwhere(np.atleast_1d(bad))[0])
        raise node_error(DynamicsError, node, "delay", f"the delay is {np.atleast_1d(s)[i]:.6g} steps of dt={dt!r}, "
                         f"more than a delay buffer can hold ({MAX_DELAY_STEPS} steps)", "use a larger dt or a "
                         "shorter delay")


@contextlib.contextmanager
def deep_recursion(depth: int | None = None, frames_per_level: int = 8) -> Iterator[None]:
    """Raise Python's recursion limit for a walk over a graph nested ``depth`` deep (default
    :data:`MAX_NESTING`; nested graphs are walked recursively, a handful of frames per level)."""
    old = sys.getrecursionlimit()
    need = (MAX_NESTING if depth is None else depth) * frames_per_level + 1000
    if need > old:
        sys.setrecursionlimit(need)
    try:
        yield
    finally:
        if need > old:
            sys.setrecursionlimit(old)
