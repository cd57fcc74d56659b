"""The preset machinery every library module registers with: the :class:`Preset` type, the
registry, the translation of a library's own option names into Dynamics settings, and small
helpers the library modules share. Nothing here knows a library by name."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from ..dynamics import Dynamics
from ..errors import DynamicsError, NirBridgeWarning
from ..graph import Graph

NEURONS = ("LIF", "CubaLIF", "IF", "LI", "CubaLI", "I")
SPIKING = ("LIF", "CubaLIF", "IF")


class ExporterQuirkWarning(NirBridgeWarning):
    """:func:`import_graph` / :func:`export_graph` changed a parameter or an edge (named in the message)."""


class LostInformationWarning(NirBridgeWarning):
    """The file cannot hold a setting of the library's model; the message says what the preset assumes."""


#: The documented aspects of every preset, in table order.
ASPECTS = ("dt", "scheme", "reset", "spike test", "synapse order", "delayed reset", "spikes per step",
           "output delay", "initial state", "recorded voltage", "recurrent start", "input scaling",
           "exporter mapping")



class ExporterSignatureWarning(NirBridgeWarning):
    """A graph simulated with a library's preset looks like a file that needs :func:`import_graph`
    (or states what the preset assumes); the message names the node, the library and the call."""


#: a check of one neuron ``(step, dynamics of the node, tau, r) -> message or None``
Signature = Callable[[Any, Dynamics, np.ndarray, np.ndarray], "str | None"]


@dataclass(frozen=True)
class Preset:
    r"""One library's reading of NIR: its :class:`Dynamics` settings, the documentation of each,
    and the library's hooks. A library module builds one with :func:`make_preset` and
    :func:`register`\ s it; everything nirbridge knows about the library is in that object.

    ``settings`` are the Dynamics keyword arguments (``dt`` included unless the preset has none);
    ``notes`` maps every aspect in :data:`ASPECTS` to a sentence; ``exporter`` is the call that
    writes the files this preset reproduces; ``lost`` lists what those files do not hold.

    Hooks (all optional):

    * ``options``: the library's own option names ``{option: (allowed values, default)}``, with
      ``translate(options, node_type, where) -> {Dynamics setting: value}`` saying what they mean
      for a node type, ``coerce(option, value) -> value`` normalising a value before it is checked,
      and ``option_hints`` (text added to the error for a bad value);
    * ``signature``: a check of a graph simulated with this preset without :func:`import_graph`
      (this library's exporter quirk); ``foreign_signature``: a check of this library's quirk run
      under every other preset;
    * ``unstated``: ``(exported_here, text)``: what the file cannot say and the preset assumes,
      warned while no option is stated, for the nodes where ``exported_here(node, dt)`` (the
      parameters the library's exporter writes);
    * ``import_fix(graph, dynamics, export_dt) -> graph``: the corrections of
      :func:`import_graph`; ``read_dt(graph, dt) -> dt``: a dt the file holds; ``import_call``:
      the call the warnings suggest;
    * ``importer``: how the library's NIR importer simulates a file (for :func:`export_graph`);
    * ``param_options``: ``{option: (node types, field, convert or None)}``, the library's names
      for parameters its files drop (Norse ``v_reset``, Rockpool ``bias``): :func:`import_graph`
      writes the value given (a number or one per neuron; per node with ``options=``) into that
      field of those nodes, through ``convert(value, params, dynamics)`` where the library's
      parameter is not NIR's (Rockpool's bias per step is ``v_leak (1 - a)``);
    * ``node_kind(step) -> str``: the name ``translate`` receives for a neuron of a graph, where the
      library's options mean different things for one NIR type (snnTorch: a LIF fed back by its
      own spikes is an RLeaky, ``"RLIF"``); without a graph the NIR type is used.
    """

    name: str
    library: str
    settings: Mapping[str, Any]
    notes: Mapping[str, str]
    exporter: str
    lost: tuple[str, ...] = ()
    quirks: tuple[str, ...] = ()  # what import_graph corrects
    assumed: Mapping[str, str] = field(default_factory=dict)  # node type -> what the preset assumes
    options: Mapping[str, tuple[tuple, Any]] = field(default_factory=dict)
    translate: Callable[[Mapping[str, Any], str, str], Mapping[str, Any]] | None = None
    coerce: Callable[[str, Any], Any] | None = None
    option_hints: Mapping[str, str] = field(default_factory=dict)
    signature: Signature | None = None
    foreign_signature: Signature | None = None
    unstated: tuple[Callable[[Any, float], bool], str] | None = None
    import_fix: Callable[[Graph, Dynamics, Any], Graph] | None = None
    read_dt: Callable[[Graph, Any], Any] | None = None
    import_call: str = ""
    importer: Mapping[str, Any] | None = None
    node_kind: Callable[[Any], str] | None = None
    param_options: Mapping[str, tuple[tuple[str, ...], str, Any]] = field(default_factory=dict)

    def dynamics(self, *, options: Mapping[str, Mapping[str, Any]] | None = None, **overrides: Any) -> Dynamics:
        """The preset's Dynamics, with ``overrides``: any Dynamics field (e.g. ``dt=1e-4``) or one of
        the library's own options (:data:`OPTIONS`, e.g. ``reset_mechanism="zero"`` for snnTorch);
        ``options={"node name": {option: value}}`` sets library options for single nodes."""
        return preset_dynamics(self, overrides, options, None)


def make_preset(name: str, library: str, settings: Mapping[str, Any], notes: Mapping[str, str], exporter: str,
                **hooks: Any) -> Preset:
    """A :class:`Preset`, checked: every aspect of :data:`ASPECTS` documented."""
    missing = [a for a in ASPECTS if a not in notes]
    if missing:
        raise DynamicsError(f"preset {name!r} documents no {missing}. Fix: add a note for each aspect")
    for key in ("assumed", "options", "option_hints", "importer", "param_options"):
        if hooks.get(key) is not None:
            hooks[key] = MappingProxyType(dict(hooks[key]))
    for key in ("lost", "quirks"):
        if key in hooks:
            hooks[key] = tuple(hooks[key])
    hooks.setdefault("import_call", f"nb.presets.import_graph(path, {name!r})")
    return Preset(name, library, MappingProxyType(dict(settings)), MappingProxyType(dict(notes)), exporter, **hooks)


#: every registered preset by name, in registration order
PRESETS: dict[str, Preset] = {}
#: each library's own option names ``{library: {option: (allowed values, default)}}``, from the
#: presets' ``options``. :meth:`Dynamics.preset` and :func:`import_graph` take them (globally or
#: per node with ``options={"node": {...}}``) and translate them into Dynamics settings for each
#: node type (:func:`option_settings`).
OPTIONS: dict[str, Mapping[str, tuple[tuple, Any]]] = {}
#: how a library's NIR *importer* simulates a file: the Dynamics it amounts to, and what it
#: ignores. Only importers measured against the library are listed; others raise UnsupportedError.
IMPORTERS: dict[str, Mapping[str, Any]] = {}


def register(preset: Preset) -> Preset:
    """Add ``preset`` (replacing one of the same name): :meth:`Dynamics.preset`,
    :func:`import_graph`, :func:`export_graph` and the CLI then know it."""
    if not isinstance(preset, Preset):
        raise DynamicsError(f"register() takes a Preset, got {type(preset).__name__}. Fix: build it with "
                            "nirbridge.presets.make_preset(...)")
    unregister(preset.name)
    PRESETS[preset.name] = preset
    if preset.options:
        OPTIONS[preset.name] = preset.options
    if preset.importer is not None:
        IMPORTERS[preset.name] = preset.importer
    return preset


def unregister(name: str) -> None:
    """Remove the preset ``name`` (nothing happens if there is none)."""
    for table in (PRESETS, OPTIONS, IMPORTERS):
        table.pop(name, None)


def names() -> list[str]:
    """The preset names."""
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    """The :class:`Preset` called ``name`` (see :func:`names`)."""
    if name not in PRESETS:
        raise DynamicsError(
            f"no Dynamics preset {name!r}; known presets: {sorted(PRESETS)}. Fix: use one of them, "
            "or build Dynamics(dt=..., method=..., reset=..., threshold=..., synapse=...) yourself"
        )
    return PRESETS[name]



# ====================================================================== the library's own options
def _option_value(preset: Preset, name: str, value: Any, where: str) -> Any:
    allowed, _ = preset.options[name]
    if isinstance(allowed[0], str) and not isinstance(value, str):  # a class, function or instance
        value = getattr(value, "__name__", None) or type(value).__name__
    if isinstance(value, str):
        value = value.rsplit(".", 1)[-1]
    if preset.coerce is not None:
        value = preset.coerce(name, value)
    if isinstance(allowed[0], bool) and not isinstance(value, bool):
        pass  # 0/1 are not booleans here
    elif value in allowed and (isinstance(value, bool) == isinstance(allowed[0], bool)):
        return value
    raise DynamicsError(f"{where}: {preset.name} option {name}={value!r} is not one of {list(allowed)}. "
                        f"Fix: pick one of them{preset.option_hints.get(name, '')}")


def option_settings(library: str, options: Mapping[str, Any], node_type: str, where: str = "options") -> dict:
    """The Dynamics settings (of :data:`~nirbridge.dynamics.Dynamics` ``by_type`` / ``by_node``
    kind) that ``library``'s own ``options`` mean for a node of ``node_type``; ``{}`` where they
    change nothing. Raises :class:`~nirbridge.errors.DynamicsError` for an unknown option or value,
    and for a setting nirbridge cannot express (naming it)."""
    preset = get_preset(library)
    known = preset.options
    bad = sorted(set(options) - set(known))
    if bad:
        raise DynamicsError(f"{where}: {bad} {'is' if len(bad) == 1 else 'are'} not options of {library!r}; its "
                            f"options: {sorted(known) or 'none'}. Fix: use those (or Dynamics fields such as "
                            "reset=, voltage=)")
    o = {k: _option_value(preset, k, v, where) for k, v in options.items()}
    o = {**{k: d for k, (_, d) in known.items()}, **o}
    return dict(preset.translate(o, node_type, where)) if preset.translate is not None else {}


_DYN_FIELDS = tuple(f for f in Dynamics.__dataclass_fields__ if f != "origin")


def preset_dynamics(preset: Preset, overrides: Mapping[str, Any], options: Mapping[str, Any] | None,
                     graph: Graph | None, imported: bool = False) -> Dynamics:
    """The Dynamics of ``preset`` with Dynamics-field ``overrides``, the library's own options among
    them, and per-node library ``options`` (node types from ``graph`` when given)."""
    where = f"Dynamics.preset({preset.name!r})" if not imported else f"import_graph(..., {preset.name!r})"
    given = set(overrides) | ({k for v in options.values() if isinstance(v, Mapping) for k in v}
                              if isinstance(options, Mapping) else set())
    params = sorted(given & set(preset.param_options))
    if params:  # import_graph takes these out first
        raise DynamicsError(f"{where}: {params} {'is a parameter' if len(params) == 1 else 'are parameters'} of the "
                            f"graph, which {preset.name}'s files do not hold, not a Dynamics setting. Fix: "
                            f"nb.presets.import_graph(path, {preset.name!r}, {params[0]}=...) writes it into the graph")
    known = preset.options
    lib = {k: v for k, v in overrides.items() if k in known}
    kw = {k: v for k, v in overrides.items() if k not in known}
    bad = sorted(set(kw) - set(_DYN_FIELDS))
    if bad:
        raise DynamicsError(f"{where}: {bad} {'is' if len(bad) == 1 else 'are'} neither a Dynamics field nor an "
                            f"option of {preset.name!r}. Fix: use the library options {sorted(known) or '(none)'} "
                            f"or the Dynamics fields {list(_DYN_FIELDS)}")
    settings = dict(preset.settings)
    settings.update(kw)
    if "dt" not in settings:
        raise DynamicsError(f"preset {preset.name!r} has no dt of its own. "
                            f"Fix: Dynamics.preset({preset.name!r}, dt=1e-4)")
    stated = set(lib)
    if lib:
        by_type = {t: dict(v) for t, v in _by_mapping(settings.get("by_type", ()))}
        base = Dynamics(**settings)
        for t in NEURONS:
            here = base.for_type(t)  # only what the options change is written
            extra = {k: v for k, v in option_settings(preset.name, lib, t, where).items() if getattr(here, k) != v}
            if extra:
                by_type[t] = {**by_type.get(t, {}), **extra}
        settings["by_type"] = by_type
        if graph is not None and preset.node_kind is not None:  # nodes whose kind means something else
            here = Dynamics(**settings)
            by_node = {n: dict(v) for n, v in _by_mapping(settings.get("by_node", ()))}
            for s in graph.plan.steps:
                kind = preset.node_kind(s) if s.node.type in NEURONS else s.node.type
                if kind == s.node.type:
                    continue
                d = here.for_type(s.node.type)
                extra = {k: v for k, v in option_settings(preset.name, lib, kind, where).items() if getattr(d, k) != v}
                if extra:
                    by_node[s.name] = {**by_node.get(s.name, {}), **extra}
            settings["by_node"] = by_node
    if options:
        if not isinstance(options, Mapping):
            raise DynamicsError(f"{where}: options must be a dict {{node name: {{option: value}}}}, got "
                                f"{options!r}. Fix: e.g. options={{'1': {{...}}}}")
        kind_of = preset.node_kind or (lambda s: s.node.type)
        types = ({s.name: kind_of(s) if s.node.type in NEURONS else s.node.type for s in graph.plan.steps}
                 if graph is not None else None)
        by_node = {n: dict(v) for n, v in _by_mapping(settings.get("by_node", ()))}
        for node, opts in options.items():
            if not isinstance(opts, Mapping):
                raise DynamicsError(f"{where}: options[{node!r}] must be a dict {{option: value}}, got {opts!r}")
            stated.update(opts)
            merged = {**lib, **opts}
            if types is not None:
                if node not in types:
                    valid = [s.name for s in graph.plan.steps if s.node.type in NEURONS]
                    raise DynamicsError(f"{where}: options names node {node!r}, which is not in the graph; its "
                                        f"neurons: {valid}. Fix: use one of those names")
                extra = option_settings(preset.name, merged, types[node], f"{where}, options[{node!r}]")
            else:
                per = [option_settings(preset.name, merged, t, f"{where}, options[{node!r}]") for t in NEURONS]
                union: dict[str, set] = {}
                for v in per:
                    for k, x in v.items():
                        union.setdefault(k, set()).add(x)
                if any(len(v) > 1 for v in union.values()):
                    raise DynamicsError(f"{where}: options[{node!r}] = {dict(opts)!r} means different settings for "
                                        "different node types and the node's type is not known here. Fix: "
                                        f"nb.presets.import_graph(graph, {preset.name!r}, options=...), which reads it")
                extra = {k: next(iter(v)) for k, v in union.items()}
            by_node[node] = {**by_node.get(node, {}), **extra}
        settings["by_node"] = by_node
    dyn = Dynamics(**settings)
    # a plain dict (picklable); not compared or hashed (Dynamics.origin has compare=False)
    object.__setattr__(dyn, "origin", {"library": preset.name, "stated": frozenset(stated), "imported": imported})
    return dyn


def _by_mapping(raw) -> list:
    if isinstance(raw, Mapping):
        return list(raw.items())
    return [(t, dict(items)) for t, items in raw]


# ====================================================================== helpers of the library modules
def short(v) -> str:
    """A short text of an array's first values, for messages."""
    a = np.asarray(v).ravel()
    text = ", ".join(f"{float(x):.6g}" for x in a[:3])
    return f"[{text}{', ...' if a.size > 3 else ''}]"


def warn_change(node: str, what: str, stacklevel: int = 3) -> None:
    """One :class:`ExporterQuirkWarning` for ``node``."""
    warnings.warn(ExporterQuirkWarning(f"node {node!r}: {what}"), stacklevel=stacklevel)


def apply_fixes(graph: Graph, changes: dict[str, dict[str, np.ndarray]], why: str) -> Graph:
    """``graph`` with the corrected parameters, one :class:`ExporterQuirkWarning` per node naming the change."""
    for name, new in changes.items():
        old = graph.node(name).params
        what = ", ".join(f"{f} {short(old[f])} -> {short(v)}" for f, v in new.items())
        warnings.warn(ExporterQuirkWarning(f"node {name!r}: {why}: {what}"), stacklevel=4)  # the caller of import_graph
    return graph.replace_params(changes)


def ratio(tau, dt, like) -> np.ndarray:
    tau = np.asarray(tau)
    out = tau / np.asarray(dt, dtype=tau.dtype)
    return np.broadcast_to(out, np.shape(like)).astype(np.asarray(like).dtype)



def lambert_w(z: np.ndarray) -> np.ndarray:
    """The principal branch W0(z) for z > 0 (w e^w = z), by Newton's method in float64."""
    w = np.log1p(z)
    for _ in range(50):
        ew = np.exp(w)
        step = (w * ew - z) / (ew * (w + 1))
        w = w - step
        if np.all(np.abs(step) <= 1e-15 * np.maximum(1.0, np.abs(w))):
            break
    return w



def unit_gains(method: str, node_type: str) -> tuple[str, Callable[[Mapping[str, Any], float], dict]]:
    """For an importer whose neurons add their input with gain 1 (``v = a v + x``): the field
    :func:`~nirbridge.presets.export_graph` folds into the Affine feeding the neuron, and the
    values of the gain fields that mean gain 1 under ``method`` at time step ``dt``
    (``{field: array}`` of the parameters ``q``). Euler: LIF ``r = tau/dt``, CubaLIF
    ``w_in = tau_syn/dt`` and ``r = tau_mem/dt``, IF ``r = 1/dt``; exact: LIF ``r = 1/(1 - a)``,
    CubaLIF ``r = 1/(1 - a_m)`` and ``w_in = a_s/(1 - a_s)`` (a current that decays in the step of
    its input), ``a = exp(-dt/tau)``."""
    f64 = lambda q, f: np.asarray(q[f], dtype=np.float64)  # noqa: E731
    table: dict[tuple[str, str], tuple[str, Callable[[Mapping[str, Any], float], dict]]] = {
        ("euler", "LIF"): ("r", lambda q, dt: {"r": f64(q, "tau") / dt}),
        ("euler", "CubaLIF"): ("w_in", lambda q, dt: {"w_in": f64(q, "tau_syn") / dt, "r": f64(q, "tau_mem") / dt}),
        ("euler", "IF"): ("r", lambda q, dt: {"r": np.ones(np.shape(q["r"])) / dt}),
        ("exact", "LIF"): ("r", lambda q, dt: {"r": -1.0 / np.expm1(-dt / f64(q, "tau"))}),
        ("exact", "CubaLIF"): ("w_in", lambda q, dt: {"w_in": 1.0 / np.expm1(dt / f64(q, "tau_syn")),
                                                      "r": -1.0 / np.expm1(-dt / f64(q, "tau_mem"))}),
    }
    return table[(method, node_type)]
