"""The arguments of :func:`nirbridge.simulate`, checked once before any backend sees them.

Every backend then gets the same, well-formed arguments, so an input one backend would take and
another refuse (a list, a torch tensor, a bool array, ``record=[(['lif'], 'v')]``,
``backend=[...]``) gives one :class:`~nirbridge.errors.NirBridgeError` naming the argument, in
every backend alike. :func:`first_non_finite` finds where a run first went NaN or infinite
(``simulate(..., check_finite=True)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .dynamics import Dynamics
from .errors import DynamicsError, InputError, NonFiniteError, UnsupportedError, node_error
from .graph import Graph
from .io import as_graph

__all__ = ["check_simulate_args", "finite_run", "first_non_finite", "raise_if_not_finite"]

def check_simulate_args(graph: Any, x: Any, dynamics: Any, backend: Any, record: Any, dtype: Any,
                        progress: Any, check_finite: Any) -> tuple[Graph, Any, Any, Any]:
    """``(graph, x, record, dtype)`` for the backend: the graph as a :class:`Graph`, the input as
    NumPy arrays (a ``(T, B, *shape)`` array or ``{input name: array}``), ``record`` as a list of
    node names and ``(node, variable)`` pairs (or ``"all"``/None), ``dtype`` as a name."""
    g = as_graph(graph, "simulate")
    if not isinstance(dynamics, Dynamics):
        raise DynamicsError(f"simulate() expected a nirbridge.Dynamics, got {type(dynamics).__name__}. "
                            "Fix: nb.Dynamics(dt=...) or nb.Dynamics.preset(name, ...)")
    if not isinstance(backend, str):
        raise UnsupportedError(f"simulate(backend=...) takes a backend name, got {type(backend).__name__} "
                               f"{backend!r:.60}. Fix: backend='reference', 'jax' or 'torch'")
    for name, v in (("progress", progress), ("check_finite", check_finite)):
        if not isinstance(v, (bool, np.bool_)):
            raise InputError(f"simulate({name}=...) takes True or False, got {v!r:.60}. Fix: pass a bool")
    return g, _inputs(g, x), _record(g, record), dtype  # the backends check dtype, with one message


def _record(g: Graph, record: Any) -> Any:
    if record is None or (isinstance(record, str) and record == "all"):
        return record
    entries = [record] if isinstance(record, (str, tuple)) else record
    fix = "Fix: record=[node name, (node name, state variable), ...] or record='all'"
    if not isinstance(entries, (list, tuple)):
        raise InputError(f"record={record!r:.60} is not a list of nodes and states. {fix}")
    out: list = []
    plan = g.plan
    for r in entries:
        if isinstance(r, str):
            node = r
        elif isinstance(r, tuple) and len(r) == 2 and all(isinstance(a, str) for a in r):
            node = r[0]
        elif isinstance(r, tuple):
            raise InputError(f"record entry {r!r:.60} is not (node, state variable) as two strings. {fix}")
        else:
            raise InputError(f"record entry {r!r:.60} is neither a node name nor a (node, state variable) tuple. {fix}")
        if node not in plan and isinstance(r, tuple):
            raise InputError(f"record entry {r!r} is not (node, state variable) of a node in the graph. "
                             f"Fix: nodes are {list(plan.names)[:20]}")
        if node not in plan:
            raise InputError(f"cannot record {node!r}: no such node. Fix: nodes are {list(plan.names)[:20]}")
        out.append((str(r[0]), str(r[1])) if isinstance(r, tuple) else str(r))
    return out


def _inputs(g: Graph, x: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _array(str(k), v) for k, v in x.items()}
    names = g.plan.inputs
    return _array(names[0] if len(names) == 1 else "x", x)


def _array(name: str, v: Any) -> np.ndarray:
    if hasattr(v, "detach") and hasattr(v, "numpy"):  # a torch tensor
        try:
            v = v.detach().cpu().numpy()
        except (TypeError, RuntimeError) as e:
            raise InputError(f"input {name!r}: the tensor cannot become a NumPy array ({e}). "
                             "Fix: pass a float32 or float64 tensor") from None
    try:
        a = np.asarray(v)
    except (ValueError, TypeError, OverflowError) as e:
        raise InputError(f"input {name!r} is not a rectangular array of numbers ({e}). "
                         "Fix: pass an array of shape (T, B, *shape)") from None
    if a.dtype.kind not in "biuf":
        raise InputError(f"input {name!r} has dtype {a.dtype}; expected numbers "
                         "(bool, int or float). Fix: pass a float array")
    # shapes are checked by program.normalize_inputs, which every backend runs
    return a


def first_non_finite(g: Graph, out: Mapping) -> tuple[str, int, str] | None:
    """``(node, step, what)`` of the first value in a ``record="all"`` result that is NaN or
    infinite: the earliest step, and among nodes at that step the first in execution order."""
    best = None
    for s in g.plan.steps:
        for key in [s.name, *[k for k in out if isinstance(k, tuple) and k[0] == s.name]]:
            if key not in out:
                continue
            a = np.asarray(out[key])
            if a.dtype.kind != "f":
                continue
            bad = ~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1)
            if bad.any():
                t = int(np.argmax(bad))
                if best is None or t < best[1]:
                    what = "output" if isinstance(key, str) else f"state {key[1]!r}"
                    best = (s.name, t, what)
    return best


def raise_if_not_finite(g: Graph, out: Mapping) -> None:
    """Raise :class:`~nirbridge.errors.NonFiniteError` naming the first node and step where the run
    (recorded with ``record="all"``) went NaN or infinite."""
    hit = first_non_finite(g, out)
    if hit is None:
        return
    node, step, what = hit
    err = node_error(NonFiniteError, node, what, f"the simulation went non-finite (NaN or inf) at step {step}",
                     "check the parameters and the input scale, or simulate in float64")
    err.node, err.step = node, step
    raise err


def finite_run(bk: Any, g: Graph, dynamics: Dynamics, x: Any, record: Any, dtype: Any, progress: bool) -> dict:
    """Run with every node recorded, raise if anything went non-finite, else return what
    ``record`` asked for (and the outputs)."""
    with np.errstate(over="ignore", invalid="ignore"):  # this check reports non-finite values itself
        out = bk.simulate(g, dynamics, x, record="all", dtype=dtype, progress=progress)
    raise_if_not_finite(g, out)
    if record == "all":
        return out
    keep = set(g.plan.outputs) | set(record or ())
    return {k: v for k, v in out.items() if k in keep}
