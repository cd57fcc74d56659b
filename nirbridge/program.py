"""One time step of a whole graph, shared by every backend.

A :class:`Program` is a graph's plan with each node's kernel and static configuration resolved
for one :class:`~nirbridge.dynamics.Dynamics`. :func:`graph_step` advances it one step given a
backend's ``ops``: nodes run in plan order, each node's input is the sum of its sources (a
recurrent source gives its previous-step output), and states advance. Backends differ only in how
they loop over time (a Python loop, ``lax.scan``) and in ``ops``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .dynamics import Dynamics
from .errors import DynamicsError, GraphError, InputError, ParameterError, node_error
from .graph import Graph, Step
from .kernels import Kernel, get_kernel

__all__ = ["Program", "build_program", "check_graph", "float_params", "graph_step", "init_state", "prepare",
           "parse_record", "normalize_inputs", "resolve_dtype", "run_stateless", "write_back"]


@dataclass(frozen=True)
class Program:
    """A graph's plan with every node's kernel and static configuration resolved for one
    :class:`~nirbridge.dynamics.Dynamics` and one backend (build it with :func:`build_program`).

    Immutable and framework-free: the backends hold one and run it with their own ``ops``.
    """

    graph: Graph
    dynamics: Dynamics
    steps: tuple[Step, ...]
    kernels: Mapping[str, Kernel]
    static: Mapping[str, dict]
    recurrent_sources: tuple[str, ...]
    hoistable: frozenset[str]  # stateless nodes that depend only on graph inputs, through forward edges
    # recurrent source -> its step-0 output (output shape, float64), for Dynamics(recurrent_start="rest")
    recurrent_init: Mapping[str, np.ndarray] = field(default_factory=dict)
    # forward edges (source, target) that carry the source's previous-step output: Dynamics(output_delay=1)
    delayed_edges: frozenset[tuple[str, str]] = frozenset()
    # derived: node -> ((source, carries the source's previous-step output?), ...), read by graph_step
    feeds: Mapping[str, tuple[tuple[str, bool], ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        feeds = {s.name: tuple((src, rec or (src, s.name) in self.delayed_edges) for src, rec in s.sources)
                 for s in self.steps}
        object.__setattr__(self, "feeds", feeds)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The graph's input names (the keys of a dict input)."""
        return self.graph.plan.inputs

    @property
    def outputs(self) -> tuple[str, ...]:
        """The graph's output names (the keys of every result)."""
        return self.graph.plan.outputs


def check_graph(graph: Any, caller: str) -> None:
    """Raise :class:`~nirbridge.errors.GraphError` unless ``graph`` is a :class:`~nirbridge.graph.Graph`;
    ``caller`` is the public function the message names (``"simulate"``)."""
    if not isinstance(graph, Graph):
        raise GraphError(f"{caller}() takes a nirbridge.Graph, got {type(graph).__name__}. "
                         "Fix: nb.load(path) or nb.Graph.from_nir(nir_graph)")


def build_program(graph: Graph, dynamics: Dynamics, backend: str) -> Program:
    """Resolve every node's kernel (``backend``'s override, else the shared one) and static
    configuration for ``dynamics``; raises if the graph cannot run with these dynamics (e.g. a
    Delay that is not a whole number of steps)."""
    if not isinstance(dynamics, Dynamics):
        raise DynamicsError(
            f"expected a nirbridge.Dynamics, got {type(dynamics).__name__}. Fix: pass Dynamics(dt=...)"
        )
    plan = graph.plan
    kernels, static = {}, {}
    for s in plan.steps:
        k = get_kernel(s.node.type, backend, s.name)
        kernels[s.name] = k
        static[s.name] = k.static(s, dynamics)
    delayed = _delayed_edges(plan, dynamics)
    rec_src = tuple(sorted({a for a, _ in plan.recurrent} | {a for a, _ in delayed}))
    hoist: set[str] = set()
    for s in plan.steps:
        if s.role != "compute" or s.node.spec.stateful:
            continue
        # a delayed edge carries the previous step's output, like a recurrent one: not hoistable
        if all(not rec and (src, s.name) not in delayed and (src in plan.inputs or src in hoist)
               for src, rec in s.sources):
            hoist.add(s.name)
    rec_init = _rest_outputs(plan, kernels, static, dynamics, rec_src) if dynamics.recurrent_start == "rest" else {}
    return Program(graph, dynamics, plan.steps, kernels, static, rec_src, frozenset(hoist), rec_init, delayed)


def _delayed_edges(plan, dynamics) -> frozenset[tuple[str, str]]:
    """``Dynamics(output_delay=1)``: the edges leaving a spiking node towards nodes outside its
    cycles carry its previous-step output. An edge back into a cycle through the node is not
    delayed again: the cycle's recurrent edge already carries the previous step's spike (Spyx's
    recurrent layers feed back the spike of the previous step and emit it one step late)."""
    delayed = [s.name for s in plan.steps
               if s.node.spec.spiking and dynamics.for_type(s.node.type).output_delay]
    if not delayed:
        return frozenset()
    succ: dict[str, list[str]] = {s.name: [] for s in plan.steps}
    for s in plan.steps:
        for src, _ in s.sources:
            succ[src].append(s.name)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = {start}, [start]
        while todo:
            n = todo.pop()
            if n == goal:
                return True
            for m in succ[n]:
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return False

    return frozenset((a, b) for a in delayed for b in succ[a] if not reaches(b, a))


def _rest_outputs(plan, kernels, static, dynamics, sources) -> dict[str, np.ndarray]:
    """The output of each stateless recurrent source for the network at rest: graph inputs and
    stateful nodes give 0, stateless nodes their output for the sum of their sources' rest outputs
    (e.g. a recurrent Affine gives its bias). Computed once, in float64, with the NumPy kernels."""
    from .reference import NumpyOps  # the reference imports this module

    ops = NumpyOps()
    memo: dict[str, np.ndarray | None] = {}

    def rest(name: str) -> np.ndarray | None:  # None: zeros
        if name in memo:
            return memo[name]
        s = plan[name]
        memo[name] = None  # a stateless node has no stateless cycle through it (Graph checks)
        if s.role == "input" or s.node.spec.stateful:
            return None
        x = np.zeros((1,) + tuple(s.input_shape))
        for src, _ in s.sources:
            r = rest(src)
            if r is not None:
                x = x + r
        params = {k: v.astype(np.float64) for k, v in float_params(s).items()}
        c = kernels[name].prepare(ops, params, static[name], dynamics)
        _, y = kernels[name].step(ops, c, static[name], {}, x)
        y = np.asarray(y, dtype=np.float64)
        memo[name] = y if np.any(y != 0) else None
        return memo[name]

    out = {}
    for a in sources:
        r = rest(a)
        if r is not None:
            out[a] = r[0]
    return out


def float_params(step: Step) -> dict[str, np.ndarray]:
    """``{field: array}`` of a node's floating-point NIR parameters as the graph holds them
    (original dtypes; fields left None are left out)."""
    spec = step.node.spec
    return {f: np.asarray(step.node.params[f]) for f in spec.float_params
            if step.node.params.get(f) is not None}


def prepare(ops, prog: Program, params: Mapping[str, Mapping[str, Any]]) -> dict:
    """Per-run coefficients of every node from the params pytree ``{node: {field: array}}``."""
    return {s.name: prog.kernels[s.name].prepare(ops, params.get(s.name, {}), prog.static[s.name], prog.dynamics)
            for s in prog.steps}


def init_state(ops, prog: Program, batch: int, dtype) -> dict:
    """The state at step 0 for a batch: ``{"nodes": {node: {var: array}}, "prev": {recurrent or
    delayed source: its step-0 output}}`` (zeros unless the Dynamics say otherwise)."""
    nodes = {}
    for s in prog.steps:
        st = prog.kernels[s.name].init(ops, prog.static[s.name], (batch,), dtype)
        if st:
            nodes[s.name] = st
    prev = {}
    for a in prog.recurrent_sources:
        z = ops.zeros((batch,) + tuple(prog.graph.plan[a].output_shape), dtype)
        start = prog.recurrent_init.get(a)
        prev[a] = z if start is None else z + ops.const(start, like=z)
    return {"nodes": nodes, "prev": prev}


def graph_step(ops, prog: Program, coeffs: Mapping, state: Mapping, inputs_t: Mapping,
               skip: frozenset = frozenset()):
    """Advance the graph one step. ``inputs_t`` maps input names (and any precomputed, hoisted
    node in ``skip``) to ``(batch, *shape)`` arrays. Returns ``(new_state, outputs)`` where
    ``outputs`` maps every node's flat name to its output at this step."""
    outs: dict[str, Any] = {}
    nodes = dict(state["nodes"])
    prev = state["prev"]
    for s in prog.steps:
        if s.role == "input" or s.name in skip:
            outs[s.name] = inputs_t[s.name]
            continue
        x = None
        for src, from_prev in prog.feeds[s.name]:
            v = prev[src] if from_prev else outs[src]
            x = v if x is None else x + v
        new, y = prog.kernels[s.name].step(ops, coeffs[s.name], prog.static[s.name], nodes.get(s.name, {}), x)
        if new:
            nodes[s.name] = new
        outs[s.name] = y
    return {"nodes": nodes, "prev": {a: outs[a] for a in prog.recurrent_sources}}, outs


def run_stateless(ops, prog: Program, coeffs: Mapping, rows: dict, names: Collection[str]) -> dict:
    """Run the stateless nodes ``names`` (e.g. :attr:`Program.hoistable`), in plan order, on
    arrays whose leading axis is any number of rows (all ``T*B`` time steps and batch rows at
    once). ``rows`` maps every source they read to its rows; their outputs are added to it."""
    for s in prog.steps:
        if s.name not in names:
            continue
        x = None
        for src, _ in s.sources:
            x = rows[src] if x is None else x + rows[src]
        _, rows[s.name] = prog.kernels[s.name].step(ops, coeffs[s.name], prog.static[s.name], {}, x)
    return rows


def write_back(prog: Program, values: Mapping[str, Mapping[str, Any]], unchanged: Callable[[Any, np.ndarray], bool],
               to_numpy: Callable[[Any], np.ndarray] = np.asarray) -> Graph:
    """The program's graph with (trained) parameter values written back, bit-exact.

    ``values`` is ``{flat node name: {field: backend array}}``; nodes and fields left out keep
    their values. A value for which ``unchanged(value, original array)`` holds (the backend's copy
    of the original, untouched) keeps the original array, dtype included (e.g. float64 neuron
    parameters of a float32 model). Any other is stored cast to the original dtype; an integer
    parameter whose new values are not whole numbers raises :class:`~nirbridge.errors.ParameterError`.
    """
    plan = prog.graph.plan
    changes: dict[str, dict[str, np.ndarray]] = {}
    for name, fields in values.items():
        originals = float_params(plan[name]) if name in plan else {}
        if not originals:
            have = sorted(s.name for s in plan.steps if float_params(s))
            raise node_error(ParameterError, name, None, "the graph has no node with float parameters of this name",
                             f"use one of {have}")
        for f, value in (fields or {}).items():
            if f not in originals:
                raise node_error(ParameterError, name, f, f"{plan[name].node.type} has no float parameter {f!r}",
                                 f"use one of {sorted(originals)}")
            orig = originals[f]
            if tuple(np.shape(value)) != orig.shape:
                raise node_error(ParameterError, name, f, f"has shape {tuple(np.shape(value))}, the graph's has "
                                 f"{orig.shape}", "keep the parameter shapes")
            if unchanged(value, orig):
                continue
            new = to_numpy(value)
            out = new.astype(orig.dtype)
            if orig.dtype.kind != "f" and not np.array_equal(out.astype(new.dtype), new):
                raise node_error(ParameterError, name, f,
                                 f"the graph stores it as {orig.dtype} but the new values are not whole numbers",
                                 f"round the values, or give the graph a float {f}")
            changes.setdefault(name, {})[f] = out
    return prog.graph.replace_params(changes)


def resolve_dtype(dtype: Any) -> np.dtype:
    """``dtype`` (None: float32) as a NumPy dtype; only float32 and float64 are accepted."""
    try:
        dt = np.dtype(dtype if dtype is not None else np.float32)
    except TypeError:
        raise InputError(f"dtype {dtype!r} is not a dtype. Fix: use float32 (default) or float64") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InputError(f"dtype {dt} is not supported. Fix: use float32 (default) or float64")
    return dt


def normalize_inputs(prog: Program, x: Any, dtype: np.dtype, *, convert=np.asarray) -> tuple[dict, int, int]:
    """Check the input against the graph's inputs: ``(T, B, *shape)`` or ``{name: array}``.

    Returns ``({name: array}, T, B)``. ``convert`` turns each value into the backend's array.
    """
    names = prog.inputs
    if isinstance(x, Mapping):
        missing = [n for n in names if n not in x]
        extra = [k for k in x if k not in names]
        if missing or extra:
            raise InputError(f"input dict has keys {list(x)} but the graph's inputs are {list(names)}. "
                             "Fix: give one array per Input node, keyed by its name")
        items = dict(x)
    else:
        if len(names) != 1:
            raise InputError(f"the graph has {len(names)} inputs {list(names)}; pass a dict "
                             "{name: array of shape (T, B, *shape)}")
        items = {names[0]: x}
    out, tb = {}, None
    for n, v in items.items():
        if not hasattr(v, "shape"):  # a (nested) list or a scalar: check it as a NumPy array
            try:
                v = np.asarray(v)
            except ValueError as e:
                raise InputError(f"input {n!r} is not a rectangular array ({e}). "
                                 "Fix: pass an array of shape (T, B, *shape)") from None
        shape = tuple(v.shape)
        want = tuple(prog.graph.plan[n].output_shape)
        if len(shape) != len(want) + 2 or shape[2:] != want:
            raise InputError(f"input {n!r} has shape {shape}; expected (T, B, {', '.join(map(str, want))}) "
                             "(time-major). Fix: reshape, or move the batch axis with x.transpose(1, 0, ...)")
        if tb is not None and shape[:2] != tb:
            raise InputError(f"inputs disagree on (T, B): {tb} vs {shape[:2]} for {n!r}. Fix: use one T and B")
        tb = shape[:2]
        kind = getattr(getattr(v, "dtype", None), "kind", None)
        if kind is not None and kind not in "biuf":
            raise InputError(f"input {n!r} has dtype {v.dtype}; expected numbers. Fix: pass a float array")
        if shape[0] < 1 or shape[1] < 1:
            raise InputError(f"input {n!r} has shape {shape}: T and B must be at least 1. "
                             "Fix: give at least one time step and one batch row")
        out[n] = convert(v, dtype)
    return out, tb[0], tb[1]


def parse_record(prog: Program, record: Any) -> tuple[list[str], list[tuple[str, str]]]:
    """Split ``record`` into node names (outputs) and ``(node, state variable)`` pairs.

    ``record="all"`` means every node's output and every state variable.
    """
    plan = prog.graph.plan
    if record is None:
        return [], []
    if isinstance(record, str) and record == "all":
        nodes = [s.name for s in plan.steps]
        states = [(s.name, v) for s in plan.steps for v in _state_vars(prog, s.name)]
        return nodes, states
    if isinstance(record, (str, tuple)):
        record = [record]
    fix = "Fix: record=[node name, (node name, state variable), ...] or record='all'"
    try:
        record = list(record)
    except TypeError:
        raise InputError(f"record={record!r} is not a list of nodes and states. {fix}") from None
    nodes, states = [], []
    for r in record:
        if not isinstance(r, (str, tuple)):
            raise InputError(f"record entry {r!r} is neither a node name nor a (node, state variable) tuple. {fix}")
        if isinstance(r, tuple):
            if len(r) != 2 or r[0] not in plan:
                raise InputError(f"record entry {r!r} is not (node, state variable) of a node in the graph. "
                                 f"Fix: nodes are {list(plan.names)}")
            vars_ = _state_vars(prog, r[0])
            if r[1] not in vars_:
                raise InputError(f"node {r[0]!r} ({plan[r[0]].node.type}) has no state variable {r[1]!r}; "
                                 f"it has {list(vars_)}. Fix: record one of those, or the node's output by name")
            states.append((r[0], r[1]))
        else:
            if r not in plan:
                raise InputError(f"cannot record {r!r}: no such node. Fix: nodes are {list(plan.names)}")
            nodes.append(r)
    return nodes, states


def _state_vars(prog: Program, name: str) -> tuple[str, ...]:
    s = prog.graph.plan[name]
    vars_ = s.node.spec.state
    if s.node.type == "Delay" and prog.static[name]["depth"] == 0:
        return ()
    return vars_
