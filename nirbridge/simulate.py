"""``simulate``: run a graph with one backend and get NumPy arrays back."""

from __future__ import annotations

from typing import Any

from .backends import get_backend
from .dynamics import Dynamics
from .errors import UnsupportedError
from .validate import check_simulate_args, finite_run

__all__ = ["simulate"]


def simulate(graph: Any, x: Any, dynamics: Dynamics, backend: str = "reference", *,
             record: Any = None, dtype: Any = "float32", progress: bool = False,
             check_finite: bool = False, chunk: int | None = None, sharding: Any = None) -> dict:
    """Simulate ``graph`` on input ``x`` with ``dynamics``, in one backend.

    Args:
        graph: a :class:`Graph` (from :func:`load` or :meth:`Graph.from_nir`), a ``nir.NIRGraph``
            or the path of a ``.nir`` file.
        x: time-major input ``(T, B, *input_shape)`` for a graph with one input, or
            ``{input name: array}``.
        dynamics: the :class:`Dynamics` (dt, method, reset, ...).
        backend: ``"reference"`` (NumPy), ``"jax"`` or ``"torch"``.
        record: node names whose outputs to return as well, ``(node, "v")`` pairs for state
            variables, or ``"all"``.
        dtype: ``"float32"`` (default) or ``"float64"``.
        progress: show a progress bar over time steps (reference and torch backends; with
            ``chunk``, over chunks).
        check_finite: raise :class:`~nirbridge.errors.NonFiniteError` naming the first node and
            time step whose output or state went NaN or infinite (the run records every node).
        chunk: run ``chunk`` steps per compiled call, carrying the state (JAX backend; see
            :mod:`nirbridge.stream`, whose :func:`~nirbridge.stream.stream` keeps only reductions
            and so runs any length in flat memory).
        sharding: split the batch over devices (JAX backend): a ``jax.sharding.Mesh``, a
            sequence of devices or a ``Sharding`` (see :func:`nirbridge.parallel.batch_sharding`).

    Repeated calls are cheap: the JAX backend compiles a graph's program once per structure
    (nodes, edges, shapes, Dynamics, dtype) and runs later calls, with new parameter values
    too, on the compiled program (see :func:`nirbridge.backends.jax.compiled_model`).

    Returns:
        ``{output name: (T, B, *shape) array}``, plus one entry per recorded node (keyed by
        name) and per recorded state (keyed by ``(node, var)``), all NumPy arrays.

    >>> import nir, numpy as np, nirbridge as nb
    >>> g = nb.Graph.from_nir(nir.NIRGraph.from_list(
    ...     nir.LIF(tau=np.array([1e-3]), r=np.array([1.0]), v_leak=np.array([0.0]),
    ...             v_threshold=np.array([0.25]), v_reset=np.array([0.0]))))
    >>> out = nb.simulate(g, np.ones((4, 1, 1)), nb.Dynamics(dt=1e-4), record=[("lif", "v")])
    >>> out["output"][:, 0, 0].tolist()
    [0.0, 0.0, 1.0, 0.0]
    >>> [round(float(v), 4) for v in out[("lif", "v")][:, 0, 0]]
    [0.1, 0.19, 0.0, 0.1]
    """
    graph, x, record, dtype = check_simulate_args(graph, x, dynamics, backend, record, dtype, progress, check_finite)
    if check_finite and (chunk is not None or sharding is not None):
        raise UnsupportedError("check_finite=True records every node, which chunk= and sharding= runs do not "
                               "keep. Fix: run a shorter piece with check_finite=True, without chunk/sharding")
    if check_finite:
        return finite_run(get_backend(backend), graph, dynamics, x, record, dtype, progress)
    if chunk is not None or sharding is not None:
        from .stream import simulate_chunked

        if backend != "jax":
            raise UnsupportedError(f"chunk= and sharding= run on the JAX backend, not {backend!r}. "
                                   "Fix: pass backend='jax'")
        return simulate_chunked(graph, dynamics, x, chunk=chunk, record=record, dtype=dtype, progress=progress,
                                sharding=sharding)
    return get_backend(backend).simulate(graph, dynamics, x, record=record, dtype=dtype, progress=progress)
