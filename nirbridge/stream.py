r"""Long runs with bounded memory: a sequence run in time chunks, the state carried from chunk to chunk.

:func:`stream` runs a graph on the JAX backend over a sequence of any length, ``chunk`` steps at a
time, and keeps only what you ask for (the *reducers*), so memory stays flat in the number of
steps T:

* ``"count"``: per output (and recorded node or state), the sum over time of its values, ``(B,
  *shape)`` float64 (for a spiking output: its spike counts, exact at any T);
* ``"rate"``: ``count / T``, the mean per step (spikes per step for a spiking output);
* ``"last"``: the final state (the layout of :meth:`~nirbridge.backends.jax.JaxModel.init_state`,
  NumPy arrays), to continue later with ``state=``;
* ``"trace"``: the whole ``(T, B, ...)`` sequence of each output and recorded entry, or with
  ``trace={key: index}`` only a recorded subset, ``y_t[index]`` per step (e.g. ``np.s_[:, :10]``,
  the first ten neurons of every batch row). A full trace grows with T: keep a subset for long runs.

The input is a ``(T, B, *shape)`` array (or ``{input name: array}``), cut into chunks, or any
iterable of chunks ``(t_i, B, *shape)`` (arrays or dicts), pulled one at a time, so the sequence
need not fit in memory (a generator reading a file or drawing Poisson spikes). Each chunk runs as
one compiled call (the program is compiled once per chunk length, and once for the first chunk,
which starts from the initial state inside the compiled program); the reductions happen inside
it, and the next chunk is sent only after the previous one is done. ``progress=True`` shows a bar
over chunks (time steps, when T is known).

:func:`nirbridge.simulate` with ``chunk=`` runs through here and returns what ``simulate`` returns
(the full traces, so it bounds the compiled program's working memory, not the result's).

>>> import nir, numpy as np
>>> import nirbridge as nb
>>> from nirbridge.stream import stream
>>> g = nb.Graph.from_nir(nir.NIRGraph.from_list(
...     nir.LIF(tau=np.array([1e-3]), r=np.array([1.0]), v_leak=np.array([0.0]),
...             v_threshold=np.array([0.25]), v_reset=np.array([0.0]))))
>>> out = stream(g, np.ones((10, 1, 1), np.float32), nb.Dynamics(dt=1e-4), chunk=4, keep=("count", "rate"))
>>> out["count"]["output"].tolist(), out["rate"]["output"].tolist(), out["steps"]
([[3.0]], [[0.3]], 10)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from ._util import progress_bar
from .errors import InputError
from .io import as_graph

__all__ = ["REDUCERS", "stream"]

#: The reducers :func:`stream` knows (``keep=``).
REDUCERS = ("count", "rate", "last", "trace")


def _check_keep(keep: Any) -> tuple[str, ...]:
    if isinstance(keep, str):
        keep = (keep,)
    try:
        keep = tuple(keep)
    except TypeError:
        keep = (keep,)
    bad = [k for k in keep if not isinstance(k, str) or k not in REDUCERS]
    if bad or not keep:
        raise InputError(f"keep={keep!r} names no known reducer ({bad!r} unknown). Fix: keep is some of "
                         f"{list(REDUCERS)}, e.g. keep=('count', 'last')")
    return tuple(dict.fromkeys(keep))


def _check_chunk(chunk: Any) -> int:
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or int(chunk) < 1:
        raise InputError(f"chunk={chunk!r} is not a whole number of steps >= 1. Fix: e.g. chunk=1000")
    return int(chunk)  # a Python int: a NumPy integer as a static value would recompile every call


def _chunks_of(x: Any, chunk: int) -> tuple[Iterator, int | None]:
    """The chunks of ``x`` and the total length (None: unknown, an iterator)."""
    if isinstance(x, Mapping) or hasattr(x, "shape"):
        arrays = dict(x) if isinstance(x, Mapping) else None
        first = next(iter(arrays.values())) if arrays else x
        if not hasattr(first, "shape") or len(first.shape) < 2:
            raise InputError(f"input has shape {getattr(first, 'shape', None)}; expected (T, B, *shape). "
                             "Fix: pass a time-major array, or an iterable of (t, B, *shape) chunks")
        T = int(first.shape[0])
        if arrays is None:
            return (x[t: t + chunk] for t in range(0, T, chunk)), T
        return ({k: v[t: t + chunk] for k, v in arrays.items()} for t in range(0, T, chunk)), T
    if isinstance(x, (str, bytes)) or not isinstance(x, Iterable):
        raise InputError(f"input of type {type(x).__name__} is neither an array (T, B, *shape), a dict of them, "
                         "nor an iterable of chunks. Fix: pass one of those")
    return iter(x), None


def _index_key(index: Any) -> str:
    return repr(index)


def _reducer(model, record: tuple, keep: tuple, trace: Mapping | None, with_state: bool):
    """The compiled function of one chunk: ``(params, inputs, state) -> (sums, traces, state)``; kept
    with the model's compiled programs (one per record set, reducers and subset)."""
    import jax
    import jax.numpy as jnp

    from .backends.jax import Outputs

    core = model._core
    tkey = None if trace is None else tuple((repr(k), _index_key(v)) for k, v in trace.items())
    key = ("stream", record, keep, tkey, with_state)
    fn = core._jitted.get(key)
    if fn is None:
        run = core.traced_run
        sums_wanted = "count" in keep or "rate" in keep
        subset = dict(trace) if trace is not None else None

        def chunk_fn(params, inputs, state):
            outs, new_state = run(params, inputs, state if with_state else None, record=record)
            sums = {k: jnp.sum(v, axis=0) for k, v in outs.items()} if sums_wanted else {}
            if "trace" not in keep:
                traces = {}
            elif subset is None:
                traces = dict(outs)
            else:
                traces = {k: outs[k][(slice(None),) + (idx if isinstance(idx, tuple) else (idx,))]
                          for k, idx in subset.items()}
            return Outputs(sums), Outputs(traces), new_state

        fn = jax.jit(chunk_fn)
        core._jitted[key] = fn
    return fn


def stream(graph: Any, x: Any, dynamics: Any, *, chunk: int = 1000, keep: Any = ("count", "last"),
           record: Any = None, trace: Mapping | None = None, state: Mapping | None = None,
           dtype: Any = "float32", progress: bool = False, sharding: Any = None, **options: Any) -> dict:
    """Run ``graph`` over a long sequence in chunks of ``chunk`` steps, keeping only the reductions in ``keep``.

    Args:
        graph: a :class:`~nirbridge.graph.Graph`, ``nir.NIRGraph`` or ``.nir`` path.
        x: ``(T, B, *shape)`` (or ``{input name: array}``), or an iterable of chunks ``(t_i, B, *shape)``
            (arrays or dicts), which may be a generator: chunks are pulled one at a time.
        dynamics: the :class:`~nirbridge.dynamics.Dynamics`.
        chunk: steps per compiled call when ``x`` is an array (an iterable's chunks keep their own
            lengths; each distinct length compiles once).
        keep: some of :data:`REDUCERS`: ``"count"``, ``"rate"``, ``"last"``, ``"trace"``.
        record: nodes and ``(node, var)`` states reduced besides the outputs (as in
            :func:`nirbridge.simulate`).
        trace: ``{key: index}``: with ``"trace"`` in ``keep``, keep only ``y_t[index]`` of these keys
            (outputs, recorded nodes or states); default: every output and recorded entry, whole.
        state: continue from this state (a ``"last"`` of an earlier run); default the initial state.
        dtype: the compute dtype.
        progress: a progress bar over the chunks.
        sharding: a :class:`jax.sharding.Sharding` (or a Mesh, see :func:`nirbridge.parallel.batch_sharding`)
            to place each chunk with: the batch split over devices.
        **options: options of :func:`nirbridge.to_jax` (hoist, unroll, layout).

    Returns:
        ``{"steps": T, "count": {key: (B, *shape)}, "rate": {...}, "last": state, "trace": {key: array}}``,
        with the entries of ``keep``; keys as in :func:`nirbridge.simulate`.
    """
    from .backends.jax import compiled_model

    keep = _check_keep(keep)
    chunk = _check_chunk(chunk)
    graph = as_graph(graph, "stream")
    model = compiled_model(graph, dynamics, dtype=dtype, **options)
    from .program import normalize_inputs, parse_record

    rec = parse_record(model.program, record)
    keys = (*dict.fromkeys([*model.program.outputs, *rec[0]]), *rec[1])
    if trace is not None:
        if not isinstance(trace, Mapping):
            raise InputError(f"trace={trace!r} is not a dict {{key: index}}. "
                             "Fix: e.g. trace={'output': np.s_[:, :10]}")
        unknown = [k for k in trace if k not in keys]
        if unknown:
            raise InputError(f"trace keys {unknown!r} are neither outputs nor recorded. Fix: pick from {list(keys)}, "
                             "or add them to record=")
    place = _placer(sharding)
    params = model.params if sharding is None else place(model.params, replicate=True)
    chunks, total = _chunks_of(x, chunk)
    bar = progress_bar(total, progress, "jax, in chunks")
    sums: dict = {}
    parts: dict = {}
    steps = 0
    B = None
    try:
        for piece in chunks:
            inputs, t, b = normalize_inputs(model.program, piece, convert=None)
            if B is not None and b != B:
                raise InputError(f"chunk at step {steps} has batch {b}, earlier chunks {B}. Fix: keep one batch size")
            B = b
            if sharding is not None:
                inputs = place(inputs)
            fn = _reducer(model, rec, keep, trace, state is not None)
            s, tr, state = fn(params, inputs, state)
            # wait for this chunk before pulling the next: otherwise inputs queue up on the device
            for k, v in s.items():
                v = np.asarray(v, dtype=np.float64)
                sums[k] = v if k not in sums else sums[k] + v
            for k, v in tr.items():
                parts.setdefault(k, []).append(np.asarray(v))
            if not s and not tr:
                import jax

                jax.block_until_ready(state)
            steps += t
            if bar is not None:
                bar.update(t)
    finally:
        if bar is not None:
            bar.close()
    if steps == 0:
        raise InputError("the input has no time steps (an empty iterator?). Fix: give at least one chunk")
    out: dict = {"steps": steps}
    if "count" in keep:
        out["count"] = sums
    if "rate" in keep:
        out["rate"] = {k: v / steps for k, v in sums.items()}
    if "last" in keep:
        import jax

        out["last"] = jax.tree.map(np.asarray, state) if sharding is None else _gathered(state)
    if "trace" in keep:
        out["trace"] = {k: np.concatenate(v) if len(v) > 1 else v[0] for k, v in parts.items()}
    return out


def _placer(sharding: Any):
    """A function placing input chunks (and, with ``replicate=True``, parameters) for ``sharding``."""
    if sharding is None:
        return lambda tree, replicate=False: tree
    from .parallel import batch_sharding, place_batch, replicated

    sharding = batch_sharding(sharding)

    def place(tree, replicate=False):
        return replicated(tree, sharding) if replicate else place_batch(tree, sharding)

    return place


def _gathered(tree: Any) -> Any:
    import jax

    return jax.tree.map(np.asarray, tree)


def simulate_chunked(graph: Any, dynamics: Any, x: Any, *, chunk: int | None, record: Any = None,
                     dtype: Any = "float32", progress: bool = False, sharding: Any = None) -> dict:
    """What :func:`nirbridge.simulate` returns, computed ``chunk`` steps at a time (JAX backend)."""
    if chunk is None:  # sharding only: the whole sequence in one call
        chunk = 1 << 40
    out = stream(graph, x, dynamics, chunk=chunk, keep=("trace",), record=record, dtype=dtype, progress=progress,
                 sharding=sharding)
    return out["trace"]

