"""A graph ready to run, and the one time loop every backend runs.

A :class:`Program` is a graph's plan with each node's :class:`~nirbridge.kernels.Kernel` built for
one :class:`~nirbridge.dynamics.Dynamics` and one backend. The functions below are everything a
backend needs beyond its array operations (:class:`~nirbridge.kernels.Ops`) and its way to iterate:

* :func:`prepare`: every node's coefficients from the params pytree, once per run;
* :func:`init_carry`: the state at step 0, from the prepared coefficients (so parameter-dependent
  initial values follow the parameters, differentiably);
* :func:`graph_step`: one step of the whole graph (nodes in plan order, each node's input the sum
  of its sources, a recurrent source giving its previous-step output);
* :func:`run_loop`: THE time loop: hoisted stateless nodes over all ``T*B`` rows first, then
  ``iterate(body, coeffs, carry, xs, T)``, the backend's way to repeat a step (a Python loop,
  ``lax.scan``, compiled chunks), and what was recorded, laid out as :func:`nirbridge.simulate`
  returns it.

Inside the loop the carry is ``{"nodes": {node: state NamedTuple}, "prev": {node: array}}``; the
public state (what ``init_state`` returns and ``run`` takes) has a dict per node instead
(:func:`export_state`, :func:`import_state`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .dynamics import Dynamics
from .errors import DynamicsError, InputError, ParameterError, node_error
from .graph import Graph, Step, check_graph
from .kernels import Kernel, NoState, build_kernel
from .nodes import PARAM_KINDS

__all__ = ["Program", "build_program", "check_graph", "check_kinds", "export_state", "float_params", "graph_step",
           "import_state", "init_carry", "normalize_inputs", "param_kinds", "parse_record", "prepare", "python_loop",
           "resolve_dtype", "run_loop", "run_stateless", "state_vars", "structure_key", "write_back"]


@dataclass(frozen=True, eq=False)
class Program:
    """A graph's plan with every node's kernel built for one :class:`~nirbridge.dynamics.Dynamics`
    and one backend (build it with :func:`build_program`).

    Immutable and framework-free: the backends hold one and run it with their own ``ops``.
    """

    graph: Graph
    dynamics: Dynamics
    steps: tuple[Step, ...]
    kernels: Mapping[str, Kernel]
    recurrent_sources: tuple[str, ...]
    hoistable: frozenset[str]  # stateless nodes that depend only on graph inputs, through forward edges
    # forward edges (source, target) that carry the source's previous-step output: Dynamics(output_delay=1)
    delayed_edges: frozenset[tuple[str, str]] = frozenset()
    backend: str = "reference"
    # derived: node -> ((source, carries the source's previous-step output?), ...), read by graph_step
    feeds: Mapping[str, tuple[tuple[str, bool], ...]] = field(init=False, repr=False, compare=False)
    # derived: loop bodies by what they record (run_loop keeps one function per choice, so a backend that
    # compiles the body, torch.compile, sees the same function again)
    _bodies: dict = field(init=False, repr=False, compare=False, default_factory=dict)

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

    @property
    def stateful(self) -> tuple[str, ...]:
        """The nodes that carry state, in plan order (the keys of ``state["nodes"]``)."""
        return tuple(s.name for s in self.steps if self.kernels[s.name].state._fields)


def build_program(graph: Graph, dynamics: Dynamics, backend: str = "reference") -> Program:
    """Build every node's kernel for ``dynamics`` (``backend``'s override of a node type, else the
    shared one); raises if the graph cannot run with these dynamics (e.g. a Delay that is not a
    whole number of steps)."""
    if not isinstance(dynamics, Dynamics):
        raise DynamicsError(
            f"expected a nirbridge.Dynamics, got {type(dynamics).__name__}. Fix: pass Dynamics(dt=...)"
        )
    dynamics.check_graph(graph)  # by_node names; a preset's exporter signatures (warnings)
    plan = graph.plan
    kernels = {s.name: build_kernel(s, dynamics, backend) for s in plan.steps}
    delayed = _delayed_edges(plan, dynamics)
    rec_src = tuple(sorted({a for a, _ in plan.recurrent} | {a for a, _ in delayed}))
    hoist: set[str] = set()
    for s in plan.steps:
        if s.role != "compute" or kernels[s.name].state._fields:
            continue
        # a delayed edge carries the previous step's output, like a recurrent one: not hoistable
        if all(not rec and (src, s.name) not in delayed and (src in plan.inputs or src in hoist)
               for src, rec in s.sources):
            hoist.add(s.name)
    return Program(graph, dynamics, plan.steps, kernels, rec_src, frozenset(hoist), delayed, backend)


def _delayed_edges(plan, dynamics) -> frozenset[tuple[str, str]]:
    """``Dynamics(output_delay=1)``: the edges leaving a spiking node towards nodes outside its
    cycles carry its previous-step output. An edge back into a cycle through the node is not
    delayed again: the cycle's recurrent edge already carries the previous step's spike (Spyx's
    recurrent layers feed back the spike of the previous step and emit it one step late)."""
    delayed = [s.name for s in plan.steps
               if s.node.spec.spiking and dynamics.for_node(s.name, s.node.type).output_delay]
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


# ---------------------------------------------------------------------------- parameters and state
def float_params(step: Step) -> dict[str, np.ndarray]:
    """``{field: array}`` of a node's floating-point NIR parameters as the graph holds them
    (original dtypes; fields left None are left out)."""
    spec = step.node.spec
    return {f: np.asarray(step.node.params[f]) for f in spec.float_params
            if step.node.params.get(f) is not None}


def param_kinds(prog: Program) -> dict[str, dict[str, str]]:
    """``{node: {field: kind}}`` for every float parameter (the structure of a params pytree), the
    kinds of :data:`nirbridge.nodes.PARAM_KINDS`: ``"weight"``, ``"time_constant"``, ``"gain"``,
    ``"voltage"``, ``"threshold"``, ``"structure"``."""
    return {s.name: {f: s.node.spec.param_kinds[f] for f in float_params(s)} for s in prog.steps if float_params(s)}


def check_kinds(kinds: Any) -> tuple[str, ...]:
    """``kinds`` (one kind or several) checked against :data:`nirbridge.nodes.PARAM_KINDS`."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    bad = [k for k in kinds if k not in PARAM_KINDS]
    if bad or not kinds:
        raise InputError(f"parameter kinds {bad or list(kinds)} are not among {list(PARAM_KINDS)}. "
                         "Fix: e.g. 'weight' (connection weights and biases) or ('weight', 'threshold')")
    return kinds


def prepare(ops, prog: Program, params: Mapping[str, Mapping[str, Any]]) -> dict:
    """Per-run coefficients of every node from the params pytree ``{node: {field: array}}``."""
    return {s.name: prog.kernels[s.name].prepare(ops, params.get(s.name, {})) for s in prog.steps}


def init_carry(ops, prog: Program, coeffs: Mapping, batch: int, dtype) -> dict:
    """The carry at step 0 for a batch: every stateful node's state from its kernel's ``init``, and
    the step-0 value of each recurrent (or delayed) edge: zeros, or with
    ``Dynamics(recurrent_start="rest")`` the source's output for the network at rest, computed from
    the coefficients (e.g. a recurrent Affine's bias), so it follows the parameters."""
    nodes = {}
    for s in prog.steps:
        k = prog.kernels[s.name]
        if k.state._fields:
            nodes[s.name] = k.init(ops, coeffs[s.name], batch, dtype)
    rest = _rest_outputs(ops, prog, coeffs, dtype) if prog.dynamics.recurrent_start == "rest" else {}
    prev = {}
    for a in prog.recurrent_sources:
        z = ops.zeros((batch,) + tuple(prog.graph.plan[a].output_shape), dtype)
        prev[a] = z + rest[a] if rest.get(a) is not None else z
    return {"nodes": nodes, "prev": prev}


def _rest_outputs(ops, prog: Program, coeffs: Mapping, dtype) -> dict:
    """The output (batch of 1) of each stateless recurrent source for the network at rest: graph
    inputs and stateful nodes give 0, a stateless node its output for the sum of its sources'
    rest outputs."""
    plan = prog.graph.plan
    memo: dict[str, Any] = {}

    def rest(name: str):  # None: zeros
        if name in memo:
            return memo[name]
        s = plan[name]
        memo[name] = None  # a stateless node has no stateless cycle through it (Graph checks)
        if s.role == "input" or prog.kernels[name].state._fields:
            return None
        x = ops.zeros((1,) + tuple(s.input_shape), dtype)
        for src, _ in s.sources:
            r = rest(src)
            if r is not None:
                x = x + r
        memo[name] = prog.kernels[name].step(ops, coeffs[name], NoState(), x)[1]
        return memo[name]

    return {a: rest(a) for a in prog.recurrent_sources}


def state_vars(prog: Program, name: str) -> tuple[str, ...]:
    """The state variables of node ``name`` (what ``record=[(name, var)]`` accepts)."""
    return tuple(prog.kernels[name].state._fields)


def export_state(carry: Mapping) -> dict:
    """The public form of a carry: ``{"nodes": {node: {var: array}}, "prev": {node: array}}``."""
    return {"nodes": {n: st._asdict() for n, st in carry["nodes"].items()}, "prev": dict(carry["prev"])}


def import_state(prog: Program, state: Any) -> dict:
    """A public state (from ``init_state`` or a previous ``run``) as the loop's carry, checked."""
    fix = "Fix: pass a state from model.init_state(batch) or from a previous run"
    if not isinstance(state, Mapping) or set(state) != {"nodes", "prev"}:
        raise InputError(f"state must be a dict with keys 'nodes' and 'prev', got {_describe(state)}. {fix}")
    nodes, prev = state["nodes"], state["prev"]
    want = prog.stateful
    if not isinstance(nodes, Mapping) or set(nodes) != set(want):
        have = sorted(nodes) if isinstance(nodes, Mapping) else _describe(nodes)
        raise InputError(f"state['nodes'] has nodes {have}, the graph's stateful nodes are {list(want)}. {fix}")
    if not isinstance(prev, Mapping) or set(prev) != set(prog.recurrent_sources):
        have = sorted(prev) if isinstance(prev, Mapping) else _describe(prev)
        raise InputError(f"state['prev'] has {have}, the graph's recurrent sources are "
                         f"{list(prog.recurrent_sources)}. {fix}")
    out = {}
    for n in want:
        spec = prog.kernels[n].state
        given = nodes[n]
        if not isinstance(given, Mapping) or set(given) != set(spec._fields):
            have = sorted(given) if isinstance(given, Mapping) else _describe(given)
            raise node_error(InputError, n, "state", f"has variables {have}, expected {list(spec._fields)}",
                             fix.removeprefix("Fix: "))
        out[n] = type(spec)(**{v: given[v] for v in spec._fields})
    return {"nodes": out, "prev": {a: prev[a] for a in prog.recurrent_sources}}


def _describe(v: Any) -> str:
    return type(v).__name__ if not isinstance(v, Mapping) else f"keys {sorted(map(str, v))}"


# ---------------------------------------------------------------------------- one step, the loop
def graph_step(ops, prog: Program, coeffs: Mapping, carry: Mapping, inputs_t: Mapping,
               skip: Collection[str] = frozenset()):
    """Advance the graph one step. ``inputs_t`` maps input names (and any precomputed, hoisted
    node in ``skip``) to ``(batch, *shape)`` arrays. Returns ``(carry, outputs)`` where
    ``outputs`` maps every node's flat name to its output at this step."""
    outs: dict[str, Any] = {}
    nodes = dict(carry["nodes"])
    prev = carry["prev"]
    kernels, feeds = prog.kernels, prog.feeds
    for s in prog.steps:
        name = s.name
        if s.role == "input" or name in skip:
            outs[name] = inputs_t[name]
            continue
        x = None
        for src, from_prev in feeds[name]:
            v = prev[src] if from_prev else outs[src]
            x = v if x is None else x + v
        st = nodes.get(name)
        new, y = kernels[name].step(ops, coeffs[name], NoState() if st is None else st, x)
        if st is not None:
            nodes[name] = new
        outs[name] = y
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
        rows[s.name] = prog.kernels[s.name].step(ops, coeffs[s.name], NoState(), x)[1]
    return rows


#: ``iterate(body, coeffs, carry, xs, T) -> (carry, ys)``: a backend's way to repeat
#: ``body(coeffs, carry, xs_t) -> (carry, ys_t)`` over the leading (time) axis of every array in
#: the dict ``xs``, stacking each element of the tuple ``ys_t`` along a new leading axis.
Iterate = Callable[[Callable, Any, Any, Mapping, int], tuple[Any, tuple]]


def python_loop(stack, bar=None) -> Iterate:
    """An ``iterate`` for :func:`~nirbridge.program.run_loop`: a Python loop over time steps whose
    per-step outputs are stacked with ``stack`` (``np.stack``, ``torch.stack``); ``bar`` (a tqdm
    bar or None) advances once per step."""

    def iterate(body, coeffs, carry, xs, T):
        cols = {n: list(a) for n, a in xs.items()}  # the steps, taken once (no per-step indexing)
        ys: list[tuple] = []
        for t in range(T):
            carry, y = body(coeffs, carry, {n: c[t] for n, c in cols.items()})
            ys.append(y)
            if bar is not None:
                bar.update(1)
        return carry, tuple(stack([y[i] for y in ys]) for i in range(len(ys[0])))

    return iterate


def run_loop(ops, prog: Program, coeffs: Mapping, carry: Mapping, inputs: Mapping, *, iterate: Iterate,
             record: tuple[tuple, tuple] = ((), ()), hoisted: Collection[str] = frozenset(),
             block: int | None = None) -> tuple[dict, Any]:
    """Run a whole sequence: the one time loop of every backend.

    ``inputs`` maps input names to ``(T, B, *shape)`` arrays (in the compute dtype); ``record`` is
    :func:`parse_record`'s ``(nodes, states)``. The ``hoisted`` stateless nodes (a subset of
    :attr:`Program.hoistable`) run over many rows at once, outside the step: over all ``T*B`` rows
    before the loop, or with ``block=k`` once per block of ``k`` steps (``k*B`` rows), the blocks
    themselves iterated (``iterate`` over blocks, and within a block over its steps; a last
    partial block runs after them). Every other node runs in the step. Returns ``(results,
    carry)``: ``results`` maps each output name, each recorded node and each recorded ``(node,
    var)`` to its ``(T, B, ...)`` array.
    """
    rec_nodes, rec_states = record
    T = int(next(iter(inputs.values())).shape[0])
    keys = tuple(dict.fromkeys([*prog.outputs, *rec_nodes]))
    hoisted = frozenset(hoisted)
    # what the step needs from outside it: sources of the nodes run in it, recorded nodes
    needed = set(keys) | set(prog.recurrent_sources)
    for s in prog.steps:
        if s.role != "input" and s.name not in hoisted:
            needed.update(src for src, _ in s.sources)
    given = [*inputs, *sorted(hoisted)]
    unused = dict.fromkeys(n for n in given if n not in needed)  # graph_step copies them without reading them
    looped = tuple(k for k in keys if k not in hoisted)
    from_rows = tuple(k for k in keys if k in hoisted)
    states = tuple(rec_states)
    bkey = (ops, looped, states, hoisted, tuple(unused))
    body = prog._bodies.get(bkey)
    if body is None:

        # a node whose spike leaves one step late (output_delay) is recorded as it leaves: the previous step's
        lagged = {a for a, _ in prog.delayed_edges}

        def body(coeffs, carry, xs_t):
            before = carry["prev"]
            carry, outs = graph_step(ops, prog, coeffs, carry, {**xs_t, **unused}, skip=hoisted)
            return carry, (tuple(before[k] if k in lagged else outs[k] for k in looped)
                           + tuple(getattr(carry["nodes"][n], v) for n, v in states))

        prog._bodies[bkey] = body

    def segment(coeffs, carry, seq, n):
        """``n`` steps from ``seq`` (``{input: (n, B, ...)}``): the hoisted nodes over their ``n*B``
        rows, then the step ``n`` times. Returns the recorded hoisted values, then the step's."""
        full = {}
        if hoisted:
            B = next(iter(seq.values())).shape[1]
            rows = {k: a.reshape((n * B,) + tuple(a.shape[2:])) for k, a in seq.items()}
            rows = run_stateless(ops, prog, coeffs, rows, hoisted)
            full = {k: rows[k].reshape((n, B) + tuple(rows[k].shape[1:])) for k in hoisted}
        everything = {**seq, **full}
        carry, ys = iterate(body, coeffs, carry, {k: everything[k] for k in sorted(everything) if k in needed}, n)
        return carry, tuple(full[k] for k in from_rows) + tuple(ys)

    if not hoisted or block is None or block >= T:
        carry, out = segment(coeffs, carry, inputs, T)
    else:
        n_blocks, tail = divmod(T, int(block))
        head = n_blocks * block
        blocks = {k: a[:head].reshape((n_blocks, block) + tuple(a.shape[1:])) for k, a in inputs.items()}
        carry, out = iterate(lambda c, carry, xs: segment(c, carry, xs, block), coeffs, carry, blocks, n_blocks)
        out = tuple(y.reshape((head,) + tuple(y.shape[2:])) for y in out)
        if tail:
            carry, rest = segment(coeffs, carry, {k: a[head:] for k, a in inputs.items()}, tail)
            out = tuple(ops.concat0([a, b]) for a, b in zip(out, rest))
    results = dict(zip(from_rows + looped + states, out))
    return {k: results[k] for k in (*keys, *states)}, carry


# ---------------------------------------------------------------------------- back to the graph
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


def structure_key(graph: Graph) -> tuple:
    """What a compiled program of ``graph`` depends on besides the parameter values: node names,
    types, roles, edges and shapes, every non-float field (conv geometry, ...), the dtype and shape
    of every float parameter, and the values of structural ones (a Delay's delay). Two graphs with
    the same key run the same compiled program with their own parameters as arguments."""
    parts = []
    for s in graph.plan.steps:
        spec = s.node.spec
        fixed = tuple((f, _value_key(v)) for f, v in s.node.params.items() if f not in spec.float_params)
        floats = tuple((f, a.dtype.str, a.shape, a.tobytes() if spec.param_kinds[f] == "structure" else None)
                       for f, a in float_params(s).items())
        parts.append((s.name, s.node.type, s.role, s.sources, s.input_shape, s.output_shape, fixed, floats))
    return tuple(parts)


def _value_key(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, Mapping):
        return tuple(sorted((str(k), _value_key(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_value_key(x) for x in v)
    if isinstance(v, np.generic):
        return ("scalar", v.dtype.str, v.tobytes())
    return (type(v).__name__, repr(v))


# ---------------------------------------------------------------------------- arguments
def resolve_dtype(dtype: Any) -> np.dtype:
    """``dtype`` (None: float32) as a NumPy dtype; only float32 and float64 are accepted."""
    try:
        dt = np.dtype(dtype if dtype is not None else np.float32)
    except TypeError:
        raise InputError(f"dtype {dtype!r} is not a dtype. Fix: use float32 (default) or float64") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InputError(f"dtype {dt} is not supported. Fix: use float32 (default) or float64")
    return dt


def normalize_inputs(prog: Program, x: Any, dtype: np.dtype | None = None, *,
                     convert: Callable[[Any, Any], Any] | None = np.asarray) -> tuple[dict, int, int]:
    """Check the input against the graph's inputs: ``(T, B, *shape)`` or ``{name: array}``.

    Returns ``({name: array}, T, B)``. ``convert(value, dtype)`` turns each value into the
    backend's array in the compute dtype; ``convert=None`` keeps each array as given (a backend
    that casts inside its compiled program).
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
        if shape[0] < 1 or shape[1] < 1:
            raise InputError(f"input {n!r} has shape {shape}: T and B must be at least 1. "
                             "Fix: give at least one time step and one batch entry")
        if tb is not None and shape[:2] != tb:
            raise InputError(f"inputs disagree on (T, B): {tb} vs {shape[:2]} for {n!r}. Fix: use one T and B")
        tb = shape[:2]
        kind = getattr(getattr(v, "dtype", None), "kind", None)
        if kind is None:  # a torch tensor's dtype has no kind
            kind = "f" if getattr(v, "is_floating_point", lambda: True)() else "i"
        if kind not in "biuf":
            raise InputError(f"input {n!r} has dtype {v.dtype}; expected numbers. Fix: pass a float array")
        if shape[0] < 1 or shape[1] < 1:
            raise InputError(f"input {n!r} has shape {shape}: T and B must be at least 1. "
                             "Fix: give at least one time step and one batch row")
        out[n] = v if convert is None else convert(v, dtype)
    return out, int(tb[0]), int(tb[1])


def parse_record(prog: Program, record: Any) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Split ``record`` into node names (outputs) and ``(node, state variable)`` pairs.

    ``record="all"`` means every node's output and every state variable.
    """
    plan = prog.graph.plan
    if record is None:
        return (), ()
    if isinstance(record, str) and record == "all":
        nodes = tuple(s.name for s in plan.steps)
        states = tuple((s.name, v) for s in plan.steps for v in state_vars(prog, s.name))
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
            if len(r) != 2 or not isinstance(r[0], str) or not isinstance(r[1], str) or r[0] not in plan:
                raise InputError(f"record entry {r!r} is not (node, state variable) of a node in the graph. "
                                 f"Fix: nodes are {list(plan.names)}")
            vars_ = state_vars(prog, r[0])
            if r[1] not in vars_:
                raise InputError(f"node {r[0]!r} ({plan[r[0]].node.type}) has no state variable {r[1]!r}; "
                                 f"it has {list(vars_)}. Fix: record one of those, or the node's output by name")
            states.append((r[0], r[1]))
        else:
            if r not in plan:
                raise InputError(f"cannot record {r!r}: no such node. Fix: nodes are {list(plan.names)}")
            nodes.append(r)
    return tuple(dict.fromkeys(nodes)), tuple(dict.fromkeys(states))
