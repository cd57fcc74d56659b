"""Helpers for your own test suite: prove that backends compute the same numbers for your graph.

>>> import nir, numpy as np, nirbridge as nb
>>> from nirbridge.testing import assert_equivalent
>>> g = nb.Graph.from_nir(nir.NIRGraph.from_list(
...     nir.LIF(tau=np.array([1e-3]), r=np.array([1.0]), v_leak=np.array([0.0]),
...             v_threshold=np.array([0.25]), v_reset=np.array([0.0]))))
>>> report = assert_equivalent(g, np.ones((5, 2, 1)), nb.Dynamics(dt=1e-4), backends=("reference", "jax"))
>>> report.ok
True

In a pytest file (``jax`` and ``torch`` must be installed, or the test fails saying which is
missing; pass ``require=False`` to skip missing ones instead, still needing ``min_backends`` runs)::

    def test_my_network_is_the_same_everywhere():
        g = nb.load("my_net.nir")
        x = nirbridge.testing.random_spikes(g, T=200, B=4, p=0.1, seed=0)
        assert_equivalent(g, x, nb.Dynamics(dt=1e-4), backends=("reference", "jax", "torch"))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .backends import DEFAULT_BACKENDS
from .compare import Report, compare
from .dynamics import Dynamics
from .errors import InputError
from .graph import Graph

__all__ = ["assert_equivalent", "random_spikes"]


def assert_equivalent(graph: Graph, x: Any, dynamics: Dynamics,
                      backends: Sequence[str] = DEFAULT_BACKENDS, *,
                      require: bool | Iterable[str] = True, min_backends: int = 2, **kw: Any) -> Report:
    """Raise ``AssertionError`` with the report table unless every backend agrees.

    Runs :func:`nirbridge.compare` with the same arguments (``atol``, ``rtol``, ``record``,
    ``dtype`` pass through ``**kw``). By default every listed backend must be importable
    (``require=True``), so a missing framework fails the test instead of passing silently;
    with ``require=False`` missing backends are skipped, but at least ``min_backends`` must run.

    Returns the :class:`~nirbridge.compare.Report` when they agree.
    """
    report = compare(graph, x, dynamics, backends=backends, require=require, **kw)
    if len(report.ran) < min_backends:
        raise AssertionError(f"only {len(report.ran)} backend(s) ran ({report.ran}), fewer than "
                             f"min_backends={min_backends}; nothing was proven\n\n{report}")
    if report.failed or any(not c.ok for c in report.comparisons.values()):
        raise AssertionError(f"backends disagree\n\n{report}")
    return report


def random_spikes(graph: Graph, T: int, B: int, p: float, seed: int = 0, dtype: Any = np.float32) -> Any:
    """Bernoulli(p) spike input for every input of ``graph``: an array ``(T, B, *shape)`` for a graph
    with one input, else ``{input name: array}``. Seeded: the same seed gives the same spikes.

    >>> import nir, numpy as np, nirbridge as nb
    >>> g = nb.Graph.from_nir(nir.NIRGraph.from_list(nir.Affine(weight=np.ones((2, 3)), bias=np.zeros(2))))
    >>> random_spikes(g, T=4, B=2, p=0.5, seed=0).shape
    (4, 2, 3)
    """
    T, B, p = int(T), int(B), float(p)
    if T < 1 or B < 1:
        raise InputError(f"random spikes need T >= 1 and B >= 1, got T={T}, B={B}. Fix: e.g. T=100, B=4")
    if not 0.0 <= p <= 1.0:
        raise InputError(f"spike probability p={p} is not in [0, 1]. Fix: e.g. p=0.1")
    rng = np.random.default_rng(seed)
    plan = graph.plan
    out = {n: (rng.random((T, B) + tuple(plan[n].output_shape)) < p).astype(dtype) for n in plan.inputs}
    return next(iter(out.values())) if len(out) == 1 else out
