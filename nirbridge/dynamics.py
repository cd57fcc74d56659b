r"""Dynamics: the discretisation choices NIR leaves open, made explicit.

A NIR file stores continuous-time equations and parameters only: no time step, no integration
scheme, no reset rule, no spike comparison, no update order. :class:`Dynamics` names each choice,
and every backend (reference, JAX, torch) implements exactly the updates below, written once in
:mod:`nirbridge.kernels`. With ``a = exp(-dt/tau)`` and ``k = dt/tau``:

===========  ======================================  ==========================================
node         ``method="euler"``                       ``method="exact"`` (zero-order hold on x)
===========  ======================================  ==========================================
LI / LIF     ``v += k (v_leak - v + r x)``            ``v = u + (v - u) a``, ``u = v_leak + r x``
I / IF       ``v += dt r x``                          same (exact for a held input)
CubaLI(F)    ``i += k_s (w_in x - i)``, then          ``i = w_in x + (i - w_in x) a_s``, and ``v``
             ``v += k_m (v_leak - v + r i')``         the exact solution of the coupled system
Threshold    ``z = [x > threshold]``                  same
Delay        ``y[t] = x[t - round(delay/dt)]``        same
===========  ======================================  ==========================================

``i'`` is the current *before* this step's update with ``synapse="simultaneous"`` (NIR's own
reference implementation) and *after* it with ``synapse="current_first"`` (snnTorch, Norse,
Spyx and every other library). With ``method="exact"``, ``"simultaneous"`` is the exact
solution of the two coupled equations over one step, and ``"current_first"`` updates ``i``
exactly and then ``v`` with ``i`` held at its new value.

Spiking nodes (LIF, IF, CubaLIF) then test the *updated* voltage: ``z = [v > v_threshold]`` (or
``>=`` with ``threshold=">="``), a spike is 1 for one step (not 1/dt), and the reset happens in
the same step: ``reset="zero"`` sets ``v = v_reset`` (NIR 1.0.8), ``reset="subtract"`` sets
``v = v - v_threshold``. Every state starts at zero.

Library conventions (each default below keeps the behaviour above; :mod:`nirbridge.presets`
combines them into one preset per library):

* ``input_gain="unit"`` (Spyx): ``r`` and ``w_in`` are ignored and the input enters unscaled
  after the decay: ``v = v + k (v_leak - v) + x`` (exact: ``v = v_leak + (v - v_leak) a + x``),
  ``i = i - k_s i + x`` (exact: ``i = a_s i + x``); I/IF: ``v += x``. ``"nir"`` (default) scales
  it as the table says.
* ``voltage="pre"`` (snnTorch, Spyx): the state (and what ``record=[(node, "v")]`` reports) is
  the voltage *before* this step's reset; the reset of a spike is applied at the start of the
  next step, before its update, so the spikes are those of ``"post"`` (default: the state is the
  voltage after the reset). The previous spike is recomputed from the stored voltage.
* ``reset_timing="late"`` (snnTorch's ``reset_delay=True``): the reset of the spike of step t-1
  is applied in step t *after* the update: ``v[t] = update(v[t-1], x[t]) - v_threshold z[t-1]``
  (``reset="zero"``: ``v[t] = v_reset`` where ``z[t-1]``, the new input dropped too). It keeps the
  pre-reset voltage, so it implies ``voltage="pre"``. ``"same"`` (default) resets in the step of
  the spike.
* ``spikes="count"`` (Sinabs' MultiSpike): a spiking node emits the number of thresholds the
  voltage holds, ``n = floor(v / v_threshold)`` where ``v >= v_threshold`` (with ``">"``:
  ``max(ceil(v / v_threshold) - 1, 1)`` where ``v > v_threshold``), and ``reset="subtract"``
  subtracts ``n v_threshold``. ``"single"`` (default): 0 or 1.
* ``output_delay=1`` (Spyx): a spiking node's spike reaches the nodes after it one step later
  (0 at step 0). An edge that leads back into a cycle through the node is not delayed again (the
  cycle's recurrent edge already carries the previous step's spike, as in Spyx's recurrent
  layers). ``record=[node]`` gives the spike as it leaves the node, one step late (what Spyx's
  layer returns); ``record=[(node, "v")]`` the voltage of this step.
* ``v_init="v_leak"`` (Norse) or ``"v_reset"`` (SpikingJelly): the voltage starts at that
  parameter of the node (as the graph holds it when the program is built; a node without that
  parameter starts at 0). ``"zero"`` (default). Currents always start at 0.
* ``recurrent_start="rest"`` (snnTorch): a recurrent edge from a stateless node carries, at step
  0, that node's output for the network at rest (zero input, every stateful node emitting 0),
  e.g. the bias of a recurrent Affine. ``"zero"`` (default): zeros, the NIR cycle convention.
* ``by_type={"CubaLIF": {"reset_timing": "same"}}``: settings for one node type only (Spyx
  places the reset differently in LIF and CuBaLIF).
* ``by_node={"1": {"reset": "zero"}}``: settings for one node only, by its flat (dotted) name
  (a model whose layers differ). ``by_node`` wins over ``by_type``. An unknown node type is an
  error when the Dynamics is made, an unknown node name when a program is built for a graph; both
  errors name the valid ones.

Gradients: the spike's derivative is replaced by a surrogate, ``surrogate="fast_sigmoid"``
(``1 / (1 + slope |v - v_threshold|)^2``, slope 25, as in snnTorch) by default, or
``"sigmoid"`` (``slope s (1 - s)`` with ``s = sigmoid(slope (v - v_threshold))``), or
``"straight_through"`` (derivative 1). The forward values never depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import DynamicsError

__all__ = ["Dynamics", "SURROGATES"]

METHODS = ("euler", "exact")
RESETS = ("zero", "subtract")
THRESHOLDS = (">", ">=")
SYNAPSES = ("simultaneous", "current_first")
SURROGATES = ("fast_sigmoid", "sigmoid", "straight_through")
RESET_TIMINGS = ("same", "late")
VOLTAGES = ("post", "pre")
SPIKES = ("single", "count")
V_INITS = ("zero", "v_leak", "v_reset")
RECURRENT_STARTS = ("zero", "rest")
INPUT_GAINS = ("nir", "unit")
OUTPUT_DELAYS = (0, 1)

# every choice-valued setting and its allowed values
_CHOICES = {"method": METHODS, "reset": RESETS, "threshold": THRESHOLDS, "synapse": SYNAPSES,
            "surrogate": SURROGATES, "reset_timing": RESET_TIMINGS, "voltage": VOLTAGES, "spikes": SPIKES,
            "v_init": V_INITS, "recurrent_start": RECURRENT_STARTS, "input_gain": INPUT_GAINS,
            "output_delay": OUTPUT_DELAYS}
# the settings one node type can override with ``by_type``
_PER_TYPE = ("method", "reset", "threshold", "synapse", "reset_timing", "voltage", "spikes", "v_init",
             "input_gain", "output_delay")
# the newer settings and their defaults: the repr shows them only when they differ
_DEFAULTS = {"reset_timing": "same", "voltage": None, "output_delay": 0, "spikes": "single", "v_init": "zero",
             "recurrent_start": "zero", "input_gain": "nir"}


@dataclass(frozen=True)
class Dynamics:
    """How to turn NIR's continuous-time equations into discrete steps.

    Args:
        dt: the time step in seconds (required, > 0). There is no default on purpose: every
            library assumes another one (snnTorch 1e-4, Norse 1e-3, Sinabs 1 step).
        method: ``"euler"`` (forward Euler) or ``"exact"`` (zero-order hold on the input).
        reset: ``"zero"`` (``v = v_reset``) or ``"subtract"`` (``v -= v_threshold``).
        threshold: ``">"`` or ``">="``, the spike test on the updated voltage.
        synapse: ``"simultaneous"`` or ``"current_first"`` (CubaLI/CubaLIF update order).
        surrogate: the spike's surrogate derivative, one of :data:`SURROGATES`.
        surrogate_slope: the surrogate's slope parameter.
        reset_timing: ``"same"`` (reset in the step of the spike) or ``"late"`` (snnTorch: the
            reset of step t-1's spike is applied in step t, after the update).
        voltage: ``"post"`` or ``"pre"``: the state holds the voltage after or before this
            step's reset (default ``None``: ``"post"``, or ``"pre"`` with ``reset_timing="late"``).
        output_delay: 0, or 1 (Spyx): spiking nodes emit their spike one step later.
        spikes: ``"single"`` (0/1) or ``"count"`` (Sinabs: several spikes per step).
        v_init: the initial voltage: ``"zero"``, ``"v_leak"`` (Norse) or ``"v_reset"`` (SpikingJelly).
        recurrent_start: ``"zero"`` or ``"rest"`` (snnTorch: a recurrent Affine gives its bias at step 0).
        input_gain: ``"nir"`` (the input is scaled by ``r``, ``w_in``) or ``"unit"`` (Spyx: they are ignored).
        by_type: ``{node type: {setting: value}}``: settings that differ for one node type.
        by_node: ``{node name: {setting: value}}``: settings that differ for one node (its flat,
            dotted name as in ``graph.plan``); applied after ``by_type``.

    The module docstring states every update; :meth:`preset` gives each library's settings.

    >>> Dynamics(dt=1e-4)
    Dynamics(dt=0.0001, method='euler', reset='zero', threshold='>', synapse='simultaneous')
    >>> Dynamics(dt=1e-4, reset="subtract", reset_timing="late")
    Dynamics(dt=0.0001, method='euler', reset='subtract', threshold='>', synapse='simultaneous', reset_timing='late')
    """

    dt: float
    method: str = "euler"
    reset: str = "zero"
    threshold: str = ">"
    synapse: str = "simultaneous"
    surrogate: str = "fast_sigmoid"
    surrogate_slope: float = field(default=25.0)
    reset_timing: str = "same"
    voltage: str | None = None
    output_delay: int = 0
    spikes: str = "single"
    v_init: str = "zero"
    recurrent_start: str = "zero"
    input_gain: str = "nir"
    by_type: Any = ()
    by_node: Any = ()
    #: where these Dynamics come from: ``None``, or set by :meth:`preset` / ``import_graph`` (the
    #: library, the library options stated, whether the graph was checked); not compared or shown
    origin: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        try:
            self._validate()
        except DynamicsError:
            raise
        except (TypeError, ValueError, OverflowError, ArithmeticError) as e:  # a value no check foresaw
            raise DynamicsError(f"Dynamics(...) got a value it cannot use ({type(e).__name__}: {e}). "
                                "Fix: give dt as a number of seconds and every other setting as one of the "
                                "documented choices") from None

    def _validate(self) -> None:
        try:
            dt = float(self.dt)
        except (TypeError, ValueError, OverflowError):
            raise DynamicsError(
                f"Dynamics.dt must be a number of seconds, got {self.dt!r}. Fix: e.g. dt=1e-4"
            ) from None
        if not dt > 0 or dt != dt or dt == float("inf"):
            raise DynamicsError(f"Dynamics.dt must be a finite number > 0, got {self.dt!r}. Fix: e.g. dt=1e-4")
        object.__setattr__(self, "dt", dt)
        for name, allowed in _CHOICES.items():
            v = getattr(self, name)
            if name == "voltage" and v is None:
                continue
            if not _is_choice(v, allowed):
                raise DynamicsError(f"Dynamics.{name}={v!r:.80} is not one of {allowed}. Fix: pick one of them")
        object.__setattr__(self, "output_delay", int(self.output_delay))
        _check_voltage(self.reset_timing, self.voltage, "")
        try:
            slope = float(self.surrogate_slope)
        except (TypeError, ValueError, OverflowError):
            slope = float("nan")
        if not 0 < slope < float("inf"):
            raise DynamicsError(f"Dynamics.surrogate_slope must be a number > 0, got {self.surrogate_slope!r}. "
                                "Fix: e.g. surrogate_slope=25.0 (the default)")
        object.__setattr__(self, "surrogate_slope", slope)
        object.__setattr__(self, "by_type", _normalize_by_type(self))
        object.__setattr__(self, "by_node", _normalize_by_type(self, "by_node"))

    @property
    def stored_voltage(self) -> str:
        """``"post"`` or ``"pre"``: ``voltage`` with its default resolved."""
        if self.voltage is not None:
            return self.voltage
        return "pre" if self.reset_timing == "late" else "post"

    def for_node(self, name: str, node_type: str) -> Dynamics:
        """The settings for the node called ``name`` (flat name) of type ``node_type``: the one method
        every kernel asks (``by_type``, then ``by_node`` applied)."""
        d = self.for_type(node_type)
        for n, items in self.by_node:
            if n == name:
                return replace(d, by_type=(), by_node=(), **dict(items))
        return d if d is self else replace(d, by_node=())

    def for_type(self, node_type: str) -> Dynamics:
        """The settings for nodes of ``node_type``: these Dynamics with its ``by_type`` entry applied."""
        for t, items in self.by_type:
            if t == node_type:
                return replace(self, by_type=(), **dict(items))
        return self

    def check_graph(self, graph: Any) -> None:
        """Check these Dynamics against ``graph`` before a program is built: every ``by_node`` name
        must be a node of the graph (else :class:`~nirbridge.errors.DynamicsError` naming the valid
        ones), and preset Dynamics are checked against the exporter signatures nirbridge knows
        (:func:`nirbridge.presets.check_signatures`, which warns)."""
        if self.by_node:
            steps = {s.name: s.node.type for s in graph.plan.steps}
            bad = [n for n, _ in self.by_node if n not in steps]
            if bad:
                valid = [n for n, t in steps.items() if t not in ("Input", "Output")]
                raise DynamicsError(f"Dynamics.by_node names {bad}, which are not nodes of this graph; its nodes: "
                                    f"{valid}. Fix: use the flat (dotted) node names of graph.plan")
        check = _PRESET_LOOKUP.get("check")
        if check is not None and self.origin is not None:
            check(graph, self)

    def __repr__(self) -> str:
        text = (f"Dynamics(dt={self.dt!r}, method={self.method!r}, reset={self.reset!r}, "
                f"threshold={self.threshold!r}, synapse={self.synapse!r}")
        if (self.surrogate, self.surrogate_slope) != ("fast_sigmoid", 25.0):
            text += f", surrogate={self.surrogate!r}, surrogate_slope={self.surrogate_slope!r}"
        for name, default in _DEFAULTS.items():
            v = getattr(self, name)
            if v != default:
                text += f", {name}={v!r}"
        if self.by_type:
            text += f", by_type={ {t: dict(items) for t, items in self.by_type}!r}"
        if self.by_node:
            text += f", by_node={ {t: dict(items) for t, items in self.by_node}!r}"
        return text + ")"

    def replace(self, **changes: Any) -> Dynamics:
        """A copy with some fields changed (Dynamics is immutable)."""
        return replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Dynamics:
        """The Dynamics that reproduces a library's own simulation of the NIR files it exports.

        ``name`` is one of :func:`nirbridge.presets.names` (``"nir"``, ``"snntorch"``, ``"norse"``,
        ``"sinabs"``, ``"spikingjelly"``, ``"spyx"``, ...); ``overrides`` change any setting, e.g.
        ``Dynamics.preset("norse", dt=1e-4)``, and the library's own option names for what its
        files do not hold, e.g. ``Dynamics.preset("snntorch", reset_mechanism="zero")`` or
        ``Dynamics.preset("sinabs", norm_input=False)``, also per node:
        ``options={"node name": {"reset_mechanism": "zero"}}`` (:data:`nirbridge.presets.OPTIONS`
        lists them). ``"nir"`` is the plain reading of the NIR 1.0.8
        spec and has no dt of its own. :mod:`nirbridge.presets` documents every choice of every
        preset, and the parameter corrections some exporters need
        (:func:`nirbridge.presets.import_graph`).

        >>> Dynamics.preset("norse", dt=1e-4)
        Dynamics(dt=0.0001, method='euler', reset='zero', threshold='>', synapse='current_first', v_init='v_leak')
        """
        lookup = _PRESET_LOOKUP.get("preset")
        if lookup is None:  # pragma: no cover - nirbridge/__init__ imports the presets
            raise DynamicsError("no presets are registered. Fix: import nirbridge (it loads nirbridge.presets)")
        return lookup(name).dynamics(**overrides)


#: where :meth:`Dynamics.preset` finds presets: ``{"preset": name -> preset}``, filled by
#: :mod:`nirbridge.presets` when it is imported (dynamics imports nothing from the presets, which
#: import the Dynamics)
_PRESET_LOOKUP: dict[str, Any] = {}


def set_preset_lookup(lookup: Any, check: Any = None) -> None:
    """Install the function :meth:`Dynamics.preset` looks presets up with (``nirbridge.presets`` does),
    and optionally the check of a graph against a preset's exporter signatures
    (:meth:`Dynamics.check_graph` calls it)."""
    _PRESET_LOOKUP["preset"] = lookup
    if check is not None:
        _PRESET_LOOKUP["check"] = check


def _is_choice(v: Any, allowed: tuple) -> bool:
    """Whether ``v`` is one of ``allowed`` (strings or ints), without asking ``==`` of arrays or
    other objects that answer it with something else than a bool."""
    if isinstance(v, str):
        v = str(v)  # np.str_ and other str subclasses
    elif isinstance(v, bool) or not isinstance(v, int):
        import numbers

        if not (isinstance(v, numbers.Integral) and not isinstance(v, bool)):
            return False
        v = int(v)
    else:
        v = int(v)
    return any(type(a) is type(v) and a == v for a in allowed)


def _check_voltage(timing: str, voltage: str | None, where: str) -> None:
    if timing == "late" and voltage == "post":
        raise DynamicsError(
            f"Dynamics{where}: reset_timing='late' keeps the voltage before the reset in the state (snnTorch's "
            "mem), so voltage='post' cannot hold. Fix: leave voltage out, or voltage='pre'"
        )


def _node_types() -> tuple[str, ...]:
    from .nodes import NODE_SPECS

    return tuple(sorted(NODE_SPECS))


def _normalize_by_type(d: Dynamics, attr: str = "by_type") -> tuple:
    """``by_type`` (or ``by_node``) as a sorted tuple of ``(key, ((setting, value), ...))``
    (hashable), checked."""
    raw = getattr(d, attr)
    what = "node type" if attr == "by_type" else "node name"
    example = ("by_type={'CubaLIF': {'reset_timing': 'same'}}" if attr == "by_type"
               else "by_node={'1': {'reset': 'zero'}}")
    if isinstance(raw, tuple) and all(isinstance(e, tuple) and len(e) == 2 for e in raw):
        raw = {t: dict(items) for t, items in raw}
    if not isinstance(raw, Mapping):
        raise DynamicsError(f"Dynamics.{attr} must be a dict {{{what}: {{setting: value}}}}, got {raw!r}. "
                            f"Fix: e.g. {example}")
    out = []
    types = _node_types() if attr == "by_type" and raw else ()
    for t, items in raw.items():
        if not isinstance(t, str) or not isinstance(items, Mapping):
            raise DynamicsError(f"Dynamics.{attr} entry {t!r}: {items!r} is not {what}: {{setting: value}}. "
                                f"Fix: e.g. {example}")
        if attr == "by_type" and t not in types:
            raise DynamicsError(f"Dynamics.by_type[{t!r}]: no node type {t!r}; the node types are {list(types)}. "
                                "Fix: use one of them, or by_node={node name: {...}} for one node")
        bad = sorted(map(repr, set(items) - set(_PER_TYPE)))
        if bad:
            per = "node type" if attr == "by_type" else "node"
            raise DynamicsError(f"Dynamics.{attr}[{t!r}] sets {bad}, which cannot differ per {per}. "
                                f"Fix: use only {list(_PER_TYPE)}")
        for k, v in items.items():
            if not _is_choice(v, _CHOICES[k]):
                raise DynamicsError(f"Dynamics.{attr}[{t!r}][{k!r}]={v!r} is not one of {_CHOICES[k]}. "
                                    "Fix: pick one of them")
        timing = items.get("reset_timing", d.reset_timing)
        voltage = items.get("voltage", d.voltage)
        _check_voltage(timing, voltage, f".{attr}[{t!r}]")
        out.append((t, tuple(sorted(items.items()))))
    return tuple(sorted(out))
