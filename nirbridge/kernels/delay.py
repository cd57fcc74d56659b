"""The Delay kernel: ``y[t] = x[t - round(delay/dt)]``, per element, in whole steps of dt."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..errors import DynamicsError, node_error
from ..nodes import check_delay_steps
from .base import Kernel, NoState, register_kernel


class DelayCoeffs(NamedTuple):
    """A per-element delay selects ``x(t - k)`` with a one-hot ``mask`` over the buffer depth
    (``(1, depth + 1, *shape)``); a uniform delay needs neither (both None)."""

    mask: Any
    zero: Any


class DelayState(NamedTuple):
    """The last ``depth`` inputs, newest first: ``buffer[:, k] = x(t - 1 - k)``."""

    buffer: Any


def delay_steps(name: str, delay: Any, dt: float) -> np.ndarray:
    """The delays in whole steps of ``dt`` (int64); a delay that is not a whole number of steps
    (within 1e-6) raises :class:`~nirbridge.errors.DynamicsError` naming the node."""
    delay = np.asarray(delay, dtype=np.float64)
    steps = delay / dt
    check_delay_steps(name, steps, dt)  # finite and within a buffer's depth, before rounding
    rounded = np.round(steps)
    bad = np.abs(steps - rounded) > 1e-6 * np.maximum(1.0, np.abs(steps))
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise node_error(DynamicsError, name, "delay",
                         f"delay {delay[idx]!r} s is {steps[idx]:.6g} steps of dt={dt!r}, not a whole number",
                         "choose a dt that divides every delay")
    return rounded.astype(np.int64)


@register_kernel("Delay")
def delay(step, dyn) -> Kernel:
    """Delay: the delay in steps is fixed when the kernel is built (it is a structural parameter,
    not a trainable one: its spec marks it so)."""
    d = dyn.for_node(step.name, step.node.type)
    n = delay_steps(step.name, step.node.params["delay"], d.dt)
    shape = tuple(step.input_shape)
    depth = int(n.max()) if n.size else 0
    if depth == 0:
        return Kernel(lambda ops, p: DelayCoeffs(None, None), lambda ops, c, b, dt: NoState(),
                      lambda ops, c, st, x: (st, x))
    uniform = bool(np.all(n == n.reshape(-1)[0]))
    k0 = int(n.reshape(-1)[0])
    # one-hot over the buffer depth, broadcast over the batch axis: (1, depth+1, *shape)
    mask = (np.arange(depth + 1).reshape((-1,) + (1,) * n.ndim) == n[None]).astype(np.float64)
    mask = mask.reshape((1, depth + 1) + shape)

    def prepare(ops, p) -> DelayCoeffs:
        if uniform:
            return DelayCoeffs(None, None)
        return DelayCoeffs(ops.const(mask, like=p["delay"]), ops.const(0.0, like=p["delay"]))

    def init(ops, c, batch, dtype) -> DelayState:
        return DelayState(ops.zeros((batch, depth) + shape, dtype))

    def run(ops, c, st, x):
        full = ops.concat1(x[:, None], st.buffer)  # full[:, k] = x(t - k)
        if uniform:
            y = full[:, k0]
        else:  # select with where, not full * mask: 0 * inf would turn one buffered inf into NaN
            y = ops.sum1(ops.where(c.mask > 0, full, c.zero))
        return DelayState(full[:, :depth]), y

    return Kernel(prepare, init, run, state=DelayState((depth,) + shape))


__all__ = ["DelayCoeffs", "DelayState", "delay", "delay_steps"]
