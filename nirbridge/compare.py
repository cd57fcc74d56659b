r"""Cross-framework equivalence: run one graph in several backends and compare every number.

:func:`compare` runs the same graph, input and :class:`~nirbridge.dynamics.Dynamics` in each
backend (the NumPy ``"reference"`` first, as the baseline), records every node's output and every
state variable, and compares each backend against the baseline, element by element, at every time
step. The :class:`Report` says whether they agree (``report.ok``), how far apart each node and state
variable is (max absolute and max relative error), how many spikes differ on spiking nodes, the
first time step and node where a backend leaves the baseline, and how long each backend took.

An element agrees when ``|y - y_ref| <= atol + rtol * |y_ref|`` (NumPy's ``allclose`` rule, with
the baseline as the reference; NaN agrees only with NaN at the same place). Spikes are 0 or 1, so
on spiking nodes the same rule counts a flipped spike as a disagreement.

>>> import nir, numpy as np, nirbridge as nb
>>> g = nb.Graph.from_nir(nir.NIRGraph.from_list(
...     nir.LIF(tau=np.array([1e-3]), r=np.array([1.0]), v_leak=np.array([0.0]),
...             v_threshold=np.array([0.25]), v_reset=np.array([0.0]))))
>>> r = nb.compare(g, np.ones((5, 2, 1)), nb.Dynamics(dt=1e-4), backends=("reference", "jax"))
>>> r.ok, r.ran, r.first_divergence
(True, ['reference', 'jax'], None)
>>> r.comparisons["jax"].entry(("lif", "v")).max_abs < 1e-6
True
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._util import text_table
from .backends import DEFAULT_BACKENDS, available_backends, get_backend
from .dynamics import Dynamics
from .errors import InputError, MissingDependencyError, NotFoundError
from .graph import Graph
from .io import as_graph
from .program import build_program, resolve_dtype

__all__ = ["compare", "Report", "Comparison", "Entry", "Divergence", "default_tolerance", "spiking_nodes"]

#: Default tolerances per compute dtype: ``(atol, rtol)``. See :func:`default_tolerance`.
DEFAULT_TOLERANCE = {np.dtype(np.float32): (1e-5, 1e-5), np.dtype(np.float64): (1e-10, 1e-10)}

Key = Any  # a node name (its output) or a (node, state variable) pair


def default_tolerance(dtype: Any) -> tuple[float, float]:
    """The default ``(atol, rtol)`` for a compute dtype.

    Every backend runs the same kernels (:mod:`nirbridge.kernels`), so two backends differ only by
    rounding: the order of the sums inside a matrix product or convolution (BLAS, XLA and the
    reference's ``einsum`` each pick their own), and the last bit of ``exp``/``expm1``. Each such
    operation is off by a few units in the last place (float32: eps = 1.2e-7; float64: 2.2e-16),
    and the leaky neurons forget old errors at the rate ``exp(-dt/tau)`` instead of compounding
    them. Network values (weighted inputs, voltages near a threshold of order 1) are of order 1 to
    10, so float32 backends agree to a few times 1e-7 in practice; ``atol = 1e-5`` leaves about
    80 units in the last place at magnitude 1 for sums of a few hundred terms and long integrations
    (``I``/``IF`` accumulate rounding linearly in time), and ``rtol = 1e-5`` scales the same
    allowance to large values (a membrane voltage of -300 in an unregularised network). float64
    has 2**29 times finer rounding; ``1e-10`` keeps the same kind of headroom (about 5e5 units in
    the last place at magnitude 1), small enough that any real discrepancy, e.g. one ``dt`` too
    many in a decay factor (an error of order ``dt/tau``, 1e-3 and more), still fails by orders
    of magnitude.

    >>> default_tolerance("float32")
    (1e-05, 1e-05)
    """
    return DEFAULT_TOLERANCE[resolve_dtype(dtype)]


@dataclass(frozen=True)
class Divergence:
    """Where a backend first leaves the baseline: time step, node (plan order breaks ties) and
    the worst element at that step."""

    backend: str
    step: int
    node: str
    var: str | None  # None for the node's output, else the state variable
    index: tuple[int, ...]  # (batch, *neuron index) of the worst element at that step
    baseline_value: float
    value: float

    @property
    def key(self) -> Key:
        """The node name, or ``(node, var)`` for a state variable."""
        return self.node if self.var is None else (self.node, self.var)

    def __str__(self) -> str:
        what = f"node {self.node!r}" + (f" state {self.var!r}" if self.var else " output")
        return (f"{self.backend} first diverges at step {self.step}, {what}, element {list(self.index)}: "
                f"baseline {self.baseline_value:.9g}, {self.backend} {self.value:.9g}")


@dataclass(frozen=True)
class Entry:
    """One node output or state variable, one backend against the baseline."""

    key: Key
    max_abs: float  # max |y - y_ref|
    max_rel: float  # max |y - y_ref| / max(|y_ref|, atol)
    spikes_differ: int | None  # number of (t, b, neuron) places with a different spike; None if not spiking
    first_step: int | None  # first time step with an element out of tolerance; None if all agree
    problem: str | None = None  # a structural mismatch (missing, wrong shape) instead of numbers

    @property
    def ok(self) -> bool:
        """Every element within tolerance at every step, and no structural mismatch."""
        return self.problem is None and self.first_step is None

    @property
    def label(self) -> str:
        """The key as the report prints it (``node`` or ``node:var``)."""
        return self.key if isinstance(self.key, str) else f"{self.key[0]}:{self.key[1]}"


@dataclass(frozen=True)
class Comparison:
    """One backend against the baseline: an :class:`Entry` per node output and state variable."""

    baseline: str
    backend: str
    entries: tuple[Entry, ...]
    first_divergence: Divergence | None

    @property
    def ok(self) -> bool:
        """Every entry agrees."""
        return all(e.ok for e in self.entries)

    @property
    def max_abs(self) -> float:
        """The largest absolute error over all entries."""
        return max((e.max_abs for e in self.entries), default=0.0)

    @property
    def spikes_differ(self) -> int:
        """The number of spikes that differ, over all spiking entries."""
        return sum(e.spikes_differ or 0 for e in self.entries)

    def entry(self, key: Key) -> Entry:
        """The entry of a node name or ``(node, var)`` key."""
        for e in self.entries:
            if e.key == key:
                return e
        raise NotFoundError(f"no entry {key!r}; entries: {[e.key for e in self.entries]}")


@dataclass
class Report:
    """The result of :func:`compare`. ``str(report)`` is a readable table.

    Attributes:
        ok: True when at least two backends ran and every one agrees with the baseline on every
            recorded value within ``atol + rtol * |baseline|``.
        baseline: the backend the others are compared against: ``"reference"`` when it is listed,
            else the first listed backend that is available.
        backends: the backends asked for, in order.
        ran: the backends that ran.
        unavailable: backend -> why it could not be imported (its framework is missing).
        failed: backend -> the error it raised on this graph.
        comparisons: backend -> :class:`Comparison` against the baseline.
        first_divergence: the earliest :class:`Divergence` over all backends (None if all agree).
        timings: backend -> wall-clock seconds of its :func:`~nirbridge.simulate` call, tracing
            and compilation included (every node recorded): a rough figure, not a benchmark.
        results: backend -> the dict :func:`nirbridge.simulate` returned.
    """

    baseline: str
    backends: tuple[str, ...]
    dtype: np.dtype
    atol: float
    rtol: float
    T: int
    B: int
    plan_order: tuple[str, ...]
    ran: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    results: dict[str, dict] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """At least two backends ran, none failed, and every one agrees with the baseline."""
        return len(self.ran) >= 2 and not self.failed and all(c.ok for c in self.comparisons.values())

    @property
    def first_divergence(self) -> Divergence | None:
        """The earliest :class:`Divergence` over all backends (plan order breaks ties), or None."""
        divs = [c.first_divergence for c in self.comparisons.values() if c.first_divergence is not None]
        if not divs:
            return None
        order = {n: i for i, n in enumerate(self.plan_order)}
        return min(divs, key=lambda d: (d.step, order.get(d.node, len(order))))

    def steps_per_second(self, backend: str) -> float:
        """Simulated time steps per second of wall-clock time (the whole batch advancing one step)."""
        t = self.timings[backend]
        return self.T / t if t > 0 else float("inf")

    def __str__(self) -> str:
        return _format(self)


def compare(graph: Graph, x: Any, dynamics: Dynamics, backends: Sequence[str] = DEFAULT_BACKENDS,
            atol: float | None = None, rtol: float | None = None, record: Any = "all", dtype: Any = "float32",
            *, require: bool | Iterable[str] = ()) -> Report:
    """Run ``graph`` on ``x`` in every backend and compare them with the first one.

    Args:
        graph: a :class:`~nirbridge.Graph`.
        x: the input, as for :func:`nirbridge.simulate` (``(T, B, *shape)`` or ``{input: array}``).
        dynamics: the :class:`~nirbridge.Dynamics`.
        backends: backend names; ``"reference"`` (if listed) runs first and is the baseline,
            otherwise the first listed one that is available is.
        atol, rtol: the tolerance ``|y - y_ref| <= atol + rtol * |y_ref|``; ``None`` takes
            :func:`default_tolerance` of ``dtype`` (float32: 1e-5 and 1e-5; float64: 1e-10 and
            1e-10; the reasoning is in its docstring).
        record: what to compare besides the graph outputs: ``"all"`` (every node output and state
            variable, the default), or a list as in :func:`nirbridge.simulate`.
        dtype: the compute dtype every backend runs in, ``"float32"`` or ``"float64"``.
        require: backends that must be importable (``True``: all of them). Any other backend whose
            framework is missing is listed in ``report.unavailable`` instead of raising.

    Returns:
        a :class:`Report`. A non-baseline backend that raises on this graph is listed in
        ``report.failed`` (and the report is not ok); the baseline's errors propagate.
    """
    graph = as_graph(graph, "compare")
    names = _backend_order(backends)
    required = set(names) if require is True else set(require or ())
    unknown = required - set(names)
    if unknown:
        raise InputError(f"require={sorted(unknown)} names backends that are not in backends={list(names)}. "
                         "Fix: list them in backends too")
    dt = resolve_dtype(dtype)
    d_atol, d_rtol = default_tolerance(dt)
    atol = d_atol if atol is None else float(atol)
    rtol = d_rtol if rtol is None else float(rtol)
    if not (atol >= 0 and rtol >= 0):
        raise InputError(f"atol={atol} and rtol={rtol} must be >= 0. Fix: pass non-negative tolerances")
    prog = build_program(graph, dynamics, "reference")  # validates the graph against the dynamics once
    plan = prog.graph.plan
    report = Report(baseline=names[0], backends=names, dtype=dt, atol=atol, rtol=rtol, T=0, B=0,
                    plan_order=plan.names)

    for name in names:
        first = not report.ran and not report.failed  # the first backend that runs is the baseline
        try:
            backend = get_backend(name)
        except ImportError as e:  # MissingDependencyError, or an adapter module that is not there
            if name in required:
                if isinstance(e, MissingDependencyError):
                    raise
                raise MissingDependencyError(f"backend {name!r} cannot be imported: {e}") from e
            report.unavailable[name] = str(e)
            continue
        try:
            t0 = time.perf_counter()
            out = backend.simulate(graph, dynamics, x, record=record, dtype=dt, progress=False)
            report.timings[name] = time.perf_counter() - t0
        except Exception as e:
            if first:  # the baseline's errors are the caller's (bad input, unsupported graph)
                raise
            report.failed[name] = f"{type(e).__name__}: {e}"
            continue
        report.ran.append(name)
        report.results[name] = {k: np.asarray(v) for k, v in out.items()}
        if first:
            report.baseline = name
            some = next(iter(report.results[name].values()))
            report.T, report.B = int(some.shape[0]), int(some.shape[1])
    if not report.ran:
        raise MissingDependencyError(f"none of the backends {list(names)} can be imported: "
                                     f"{report.unavailable}. Fix: install one, e.g. pip install \"nirbridge[jax]\"")
    base = report.results[report.baseline]
    for name in report.ran[1:]:
        report.comparisons[name] = _compare_one(prog, report.baseline, name, base, report.results[name], atol, rtol)
    return report


def _backend_order(backends: Sequence[str]) -> tuple[str, ...]:
    if isinstance(backends, str):
        backends = [b for b in backends.split(",") if b.strip()]
    names = tuple(str(b).strip() for b in backends)
    if not names:
        raise InputError("compare() needs at least one backend. Fix: e.g. backends=('reference', 'jax')")
    dup = sorted({b for b in names if names.count(b) > 1})
    if dup:
        raise InputError(f"backends {dup} are listed twice. Fix: list each backend once")
    known = available_backends()
    bad = [b for b in names if b not in known]
    if bad:
        raise InputError(f"unknown backends {bad}. Fix: use some of {known}")
    if "reference" in names:
        names = ("reference",) + tuple(b for b in names if b != "reference")
    return names


def spiking_nodes(graph: Graph) -> set[str]:
    """Flat names of the nodes whose output is a spike train: spiking node types (LIF, IF, CubaLIF,
    Threshold) and the Output/identity nodes fed only by them."""
    plan = graph.plan
    out: set[str] = set()
    for s in plan.steps:
        if s.node.spec.spiking:
            out.add(s.name)
        elif s.role in ("output", "identity") and s.sources and all(a in out for a, _ in s.sources):
            out.add(s.name)
    return out


def _order_key(prog, key: Key) -> tuple[int, int]:
    plan = prog.graph.plan
    names = plan.names
    if isinstance(key, tuple):
        node, var = key
        state = plan[node].node.spec.state
        # a node updates its state, then computes its output from it: state variables come first
        return names.index(node), state.index(var) if var in state else len(state)
    return names.index(key), len(plan[key].node.spec.state) + 1


def _compare_one(prog, base_name: str, name: str, base: Mapping, other: Mapping, atol: float,
                 rtol: float) -> Comparison:
    spiking = spiking_nodes(prog.graph)
    keys = sorted(base, key=lambda k: _order_key(prog, k))
    entries = []
    first: tuple | None = None
    for key in keys:  # keys a backend returns beyond the baseline's are ignored
        is_spike = key in spiking
        ref = base[key]
        if key not in other:
            entries.append(Entry(key, float("nan"), float("nan"), None, None, f"{name} did not return it"))
            continue
        y = np.asarray(other[key])
        if y.shape != ref.shape:
            entries.append(Entry(key, float("nan"), float("nan"), None, None,
                                 f"shape {y.shape} instead of {ref.shape}"))
            continue
        r64, y64 = ref.astype(np.float64), y.astype(np.float64)
        diff = np.abs(y64 - r64)
        both_nan = np.isnan(r64) & np.isnan(y64)
        diff = np.where(both_nan, 0.0, diff)
        diff = np.where(np.isnan(diff), np.inf, diff)  # NaN on one side only: maximal disagreement
        bad = diff > atol + rtol * np.abs(np.where(both_nan, 0.0, r64))
        rel = diff / np.maximum(np.abs(np.nan_to_num(r64)), atol if atol > 0 else np.finfo(np.float64).tiny)
        T = ref.shape[0]
        flat_bad = bad.reshape(T, -1).any(axis=1)
        first_step = int(np.argmax(flat_bad)) if flat_bad.any() else None
        spikes = int(np.count_nonzero(y64 != r64)) if is_spike else None
        entries.append(Entry(key, float(diff.max(initial=0.0)), float(rel.max(initial=0.0)), spikes, first_step))
        if first_step is not None:
            cand = (first_step, _order_key(prog, key), key)
            if first is None or cand[:2] < first[:2]:
                first = cand
    div = None
    if first is not None:
        t, _, key = first
        ref, y = base[key][t].astype(np.float64), np.asarray(other[key])[t].astype(np.float64)
        d = np.abs(y - ref)
        d = np.where(np.isnan(ref) & np.isnan(y), 0.0, np.where(np.isnan(d), np.inf, d))
        idx = np.unravel_index(int(np.argmax(d)), d.shape)
        node, var = (key, None) if isinstance(key, str) else key
        div = Divergence(name, t, node, var, tuple(int(i) for i in idx), float(ref[idx]), float(y[idx]))
    return Comparison(base_name, name, tuple(entries), div)


# ------------------------------------------------------------------------------------------ display
def _num(v: float | None) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "0"
    if v != v:
        return "nan"
    return f"{v:.2e}"


def _format(r: Report) -> str:
    lines = [f"nirbridge equivalence report: T={r.T} steps, B={r.B}, {r.dtype.name}, "
             f"tolerance |y - y_ref| <= {r.atol:g} + {r.rtol:g} * |y_ref|, baseline {r.baseline!r}", ""]
    rows = [("backend", "status", "time", "steps/s", "max abs err", "spikes differ", "first divergence")]
    for b in r.backends:
        if b in r.unavailable:
            rows.append((b, "unavailable", "-", "-", "-", "-", "-"))
            continue
        if b in r.failed:
            rows.append((b, "FAILED", "-", "-", "-", "-", "-"))
            continue
        t = r.timings[b]
        sps = f"{r.steps_per_second(b):.0f}"
        tm = f"{t:.3f} s"
        if b == r.baseline:
            rows.append((b, "baseline", tm, sps, "-", "-", "-"))
            continue
        c = r.comparisons[b]
        fd = c.first_divergence
        where = "-" if fd is None else f"step {fd.step}, {fd.node}" + (f":{fd.var}" if fd.var else "")
        rows.append((b, "agrees" if c.ok else "DIFFERS", tm, sps, _num(c.max_abs), str(c.spikes_differ), where))
    lines += text_table(rows)
    for b, why in r.unavailable.items():
        lines.append(f"  {b}: unavailable: {why}")
    for b, why in r.failed.items():
        lines.append(f"  {b}: failed: {why}")
    for b, c in r.comparisons.items():
        lines += ["", f"{b} vs {r.baseline}:"]
        rows = [("node / state", "max abs", "max rel", "spikes differ", "first bad step")]
        for e in c.entries:
            if e.problem:
                rows.append((e.label, "-", "-", "-", f"MISMATCH: {e.problem}"))
                continue
            rows.append((e.label, _num(e.max_abs), _num(e.max_rel),
                         "-" if e.spikes_differ is None else str(e.spikes_differ),
                         "-" if e.first_step is None else str(e.first_step)))
        lines += ["  " + ln for ln in text_table(rows)]
        if c.first_divergence is not None:
            lines.append("  " + str(c.first_divergence))
    lines.append("")
    if r.ok:
        lines.append(f"OK: {', '.join(r.ran)} agree on every recorded value")
    elif len(r.ran) < 2 and not r.failed:
        lines.append(f"NOT CHECKED: only {r.ran} ran, nothing to compare")
    else:
        fd = r.first_divergence
        msg = "DIFFERENT: backends disagree" if fd is not None or r.failed else "DIFFERENT"
        if fd is not None:
            msg += f"; first at step {fd.step}, node {fd.node!r}" + (f" state {fd.var!r}" if fd.var else "")
            msg += f" ({fd.backend})"
        if r.failed:
            msg += f"; failed: {', '.join(r.failed)}"
        lines.append(msg)
    return "\n".join(lines)
