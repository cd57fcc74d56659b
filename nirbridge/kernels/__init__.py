"""The discrete update of every node type, written once for every backend.

Each node type registers a *factory* ``(step, dynamics) -> Kernel`` (:mod:`nirbridge.kernels.base`):
the factory resolves the :class:`~nirbridge.dynamics.Dynamics` choices for that node into closures
and returns a typed :class:`Kernel` with ``prepare`` (parameters -> coefficients, once per run),
``init`` (the state at step 0, from the coefficients) and ``step`` (one time step), its declared
state and its layout class. ``ops`` is the backend's small array namespace (:class:`Ops`): the
NumPy reference, JAX and torch each implement it, so the arithmetic is literally the same in
every backend. The equations are in :mod:`nirbridge.dynamics`.

* :mod:`~nirbridge.kernels.layers`: Input/Output, Affine, Linear, Scale, Threshold, Flatten,
  Conv1d, Conv2d, SumPool2d, AvgPool2d;
* :mod:`~nirbridge.kernels.neurons`: LI, LIF, I, IF, CubaLI, CubaLIF;
* :mod:`~nirbridge.kernels.delay`: Delay.
"""

from __future__ import annotations

from . import delay, layers, neurons
from .base import (
    KERNELS,
    LAYOUTS,
    OVERRIDES,
    Kernel,
    KernelFactory,
    NamespaceOps,
    NoCoeffs,
    NoState,
    Ops,
    build_kernel,
    kernel_factory,
    register_kernel,
    surrogate_derivative,
)

__all__ = ["KERNELS", "LAYOUTS", "OVERRIDES", "Kernel", "KernelFactory", "NamespaceOps", "NoCoeffs", "NoState", "Ops",
           "build_kernel", "delay", "kernel_factory", "layers", "neurons", "register_kernel", "surrogate_derivative"]
