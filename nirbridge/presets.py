"""Library presets: how each SNN library simulates the NIR files it writes.

A NIR file holds no time step, integration scheme, reset rule, spike test or update order, so
the same file means a different model in each library. Each :class:`Preset` names the
:class:`~nirbridge.dynamics.Dynamics` that reproduces one library's own simulation of a graph it
exported (spikes identical, voltages to float rounding; the interop test suite checks it against
the real libraries), and documents every choice:

>>> import nirbridge as nb
>>> nb.Dynamics.preset("snntorch")  # doctest: +NORMALIZE_WHITESPACE
Dynamics(dt=0.0001, method='euler', reset='subtract', threshold='>', synapse='current_first',
         reset_timing='late', recurrent_start='rest')
>>> print(get_preset("norse").notes["initial state"])
v = v_leak (Norse's LIFBoxCell / LIFCell start at v_leak); the current at 0

Some exporters also write parameters that do not mean what NIR says (Norse 1.1.0 writes
``tau = dt * tau_mem``; Spyx writes ``r = beta``). nirbridge never corrects those silently:
:func:`import_graph` applies a library's corrections on request and warns once per node
(:class:`ExporterQuirkWarning`) naming the node and what it changed, and once per node
(:class:`LostInformationWarning`) for what the file cannot hold and the preset assumes.
:func:`export_graph` writes a graph for another library's importer where that library's
semantics can reproduce it, and raises :class:`~nirbridge.errors.UnsupportedError` where not.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import nir
import numpy as np

from .dynamics import Dynamics, set_preset_lookup
from .errors import DynamicsError, NirBridgeWarning, ParameterError, UnsupportedError, node_error
from .graph import Graph, check_graph

__all__ = ["ASPECTS", "OPTIONS", "PRESETS", "Preset", "ExporterQuirkWarning", "ExporterSignatureWarning",
           "LostInformationWarning", "check_signatures", "export_graph", "get_preset", "import_graph", "names",
           "option_settings"]

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


@dataclass(frozen=True)
class Preset:
    """One library's reading of NIR: its :class:`Dynamics` settings and the documentation of each.

    ``settings`` are the Dynamics keyword arguments (``dt`` included unless the preset has none);
    ``notes`` maps every aspect in :data:`ASPECTS` to a sentence; ``exporter`` is the call that
    writes the files this preset reproduces; ``lost`` lists what those files do not hold.
    """

    name: str
    library: str
    settings: Mapping[str, Any]
    notes: Mapping[str, str]
    exporter: str
    lost: tuple[str, ...] = ()
    quirks: tuple[str, ...] = ()  # what import_graph corrects
    assumed: Mapping[str, str] = field(default_factory=dict)  # node type -> what the preset assumes

    def dynamics(self, *, options: Mapping[str, Mapping[str, Any]] | None = None, **overrides: Any) -> Dynamics:
        """The preset's Dynamics, with ``overrides``: any Dynamics field (e.g. ``dt=1e-4``) or one of
        the library's own options (:data:`OPTIONS`, e.g. ``reset_mechanism="zero"`` for snnTorch);
        ``options={"node name": {option: value}}`` sets library options for single nodes."""
        return _preset_dynamics(self, overrides, options, None)


def _preset(name, library, settings, notes, exporter, lost=(), quirks=(), assumed=None) -> Preset:
    missing = [a for a in ASPECTS if a not in notes]
    if missing:  # pragma: no cover - a programming error in this table
        raise DynamicsError(f"preset {name!r} documents no {missing}")
    return Preset(name, library, MappingProxyType(dict(settings)), MappingProxyType(dict(notes)), exporter,
                  tuple(lost), tuple(quirks), MappingProxyType(dict(assumed or {})))


PRESETS: dict[str, Preset] = {}


def _register(p: Preset) -> None:
    PRESETS[p.name] = p


_register(_preset(
    "nir", "NIR 1.0.8 (the specification)",
    dict(method="euler", reset="zero", threshold=">", synapse="simultaneous"),
    {
        "dt": "none: the spec has no time step; pass dt",
        "scheme": "forward Euler of the NIR equations",
        "reset": "to v_reset",
        "spike test": "v > v_threshold",
        "synapse order": "simultaneous (v uses the previous current, as NIR's reference code)",
        "delayed reset": "no: the reset happens in the step of the spike",
        "spikes per step": "one",
        "output delay": "none",
        "initial state": "0",
        "recorded voltage": "after the reset",
        "recurrent start": "0 (a recurrent edge carries the previous step's output, zeros at step 0)",
        "input scaling": "r (and w_in) as in the equations",
        "exporter mapping": "the NIR fields mean what the spec says",
    },
    "any exporter that follows the spec",
))

_register(_preset(
    "snntorch", "snnTorch 1.0.0",
    dict(dt=1e-4, method="euler", reset="subtract", reset_timing="late", threshold=">",
         synapse="current_first", recurrent_start="rest"),
    {
        "dt": "1e-4, hard-coded in snnTorch's exporter",
        "scheme": "Euler at dt = 1e-4: v = beta v + x with beta = 1 - dt/tau (gain dt r/tau = 1)",
        "reset": "subtract v_threshold (reset_mechanism='subtract', the default)",
        "spike test": "v > v_threshold",
        "synapse order": "current first (Synaptic: the new current drives v)",
        "delayed reset": "yes (reset_delay=True): the subtraction for the spike of step t-1 is applied in step t "
                         "after the decay, so it is not multiplied by beta",
        "spikes per step": "one",
        "output delay": "none",
        "initial state": "0",
        "recorded voltage": "before the reset (snnTorch's mem)",
        "recurrent start": "the recurrent Affine's bias at step 0 (RLeaky / RSynaptic add W_rec s + b from the "
                           "first step)",
        "input scaling": "r = tau/dt and w_in = tau_syn/dt, so the Euler gains are 1",
        "exporter mapping": "Leaky(beta) -> LIF(tau = dt/(1-beta), r = 1/(1-beta), v_leak = 0, v_reset = 0); "
                            "Synaptic(alpha, beta) -> CubaLIF(tau_syn = dt/(1-alpha), tau_mem = dt/(1-beta), "
                            "r = tau_mem/dt, w_in = tau_syn/dt); RLeaky/RSynaptic -> neuron + recurrent Affine "
                            "'w_rec' with its bias",
    },
    "snntorch.export_nir.export_to_nir(net, sample, ignore_dims=[0]) (snntorch.export_to_nir does not exist "
    "in 1.0.0; beta and threshold must be per-neuron tensors)",
    lost=("reset mechanism (subtract / zero / none)", "reset_delay", "dt (1e-4 assumed)", "the initial state",
          "graded spikes, inhibition, state quantisation"),
    assumed={"LIF": "reset_mechanism='subtract' and reset_delay=True (snnTorch's defaults); for "
                    "reset_mechanism='zero' use Dynamics.preset('snntorch', reset='zero', reset_timing='same', "
                    "voltage='pre') (Leaky)",
             "CubaLIF": "reset_mechanism='subtract' and reset_delay=True (snnTorch's defaults); "
                        "reset_mechanism='zero' (Synaptic) is Dynamics.preset('snntorch', reset='zero')"},
))

_register(_preset(
    "norse", "Norse 1.1.0",
    dict(dt=1e-3, method="euler", reset="zero", threshold=">", synapse="current_first", v_init="v_leak"),
    {
        "dt": "1e-3, the default dt of the cells and of norse.torch.to_nir (an argument of each, not stored)",
        "scheme": "Euler: v += dt/tau (v_leak - v + r x)",
        "reset": "to v_reset (Norse's reset_value; the exporter does not write v_reset: the file says 0)",
        "spike test": "v > v_threshold",
        "synapse order": "current first: LIFCell's current jumps by the input, then v uses it, then the current "
                         "decays (in NIR terms w_in = tau_syn/dt)",
        "delayed reset": "no",
        "spikes per step": "one",
        "output delay": "none",
        "initial state": "v = v_leak (Norse's LIFBoxCell / LIFCell start at v_leak); the current at 0",
        "recorded voltage": "after the reset (state.v)",
        "recurrent start": "not exportable (LIFRecurrentCell gives no NIR node)",
        "input scaling": "r and w_in as in the file, after import_graph's w_in correction",
        "exporter mapping": "LIFBoxCell -> LIF(tau = dt*tau_mem (norse#411), r = 1, v_reset missing); "
                            "LIFCell -> CubaLIF(tau_syn = dt*tau_syn, tau_mem = dt*tau_mem, r = 1, w_in = 1); "
                            "import_graph(graph, 'norse', export_dt=...) undoes both",
    },
    "norse.torch.to_nir(torch.nn.Sequential(...), sample, dt=1e-3) with an unbatched sample",
    lost=("v_reset (the file says 0)", "the true tau (scaled by the export dt)", "w_in (the jump synapse)",
          "dt", "the initial state v_leak", "reset_method (value / subtract)", "recurrent cells"),
    quirks=("tau = export_dt * tau_mem -> tau / export_dt (LIF, LI, CubaLIF tau_mem and tau_syn)",
            "CubaLIF w_in = 1 -> tau_syn / dt (Norse's current jumps by the input)"),
    assumed={t: "v_reset as in the file (Norse's exporter drops it: 0 unless you set it) and reset to a value "
                "(LIFBoxParameters' default reset_method)" for t in ("LIF", "CubaLIF")},
))

_register(_preset(
    "sinabs", "Sinabs 3.1.3",
    dict(dt=1.0, method="exact", reset="subtract", threshold=">=", spikes="count", synapse="current_first"),
    {
        "dt": "1: tau is counted in steps",
        "scheme": "exact: v = a v + (1 - a) r x with a = exp(-1/tau) (norm_input=True, the default)",
        "reset": "subtract v_threshold once per spike (MembraneSubtract)",
        "spike test": "v >= v_threshold (MultiSpike: trunc(v / v_threshold) spikes)",
        "synapse order": "tau_syn is not exported: a Sinabs LIF with a synaptic current becomes a plain LIF",
        "delayed reset": "no",
        "spikes per step": "several: the output is the spike count floor(v / v_threshold) (MultiSpike)",
        "output delay": "none",
        "initial state": "0",
        "recorded voltage": "after the reset (recordings['v_mem'])",
        "recurrent start": "not exportable (LIFRecurrent raises NotImplementedError)",
        "input scaling": "r = 1 in the file; norm_input=False (v = a v + x) is not exported",
        "exporter mapping": "LIF -> LIF(tau = tau_mem in steps, r = 1, v_leak = 0, v_reset = 0); "
                            "ExpLeak -> LI; IAF -> IF",
    },
    "sinabs.to_nir(net, sample) with a sample of shape (1, N)",
    lost=("tau_syn (the synaptic current)", "norm_input (the input scale)", "spike_fn (MultiSpike / SingleSpike)",
          "reset_fn (subtract / reset) and the reset value", "min_v_mem", "the time unit (tau in steps)",
          "recurrent layers"),
    assumed={"LIF": "no tau_syn, norm_input=True, MultiSpike, MembraneSubtract (Sinabs' defaults)"},
))

_register(_preset(
    "spikingjelly", "SpikingJelly 2.0.0",
    dict(dt=1e-4, method="euler", reset="zero", threshold=">=", synapse="current_first", v_init="v_reset"),
    {
        "dt": "the dt argument of export_to_nir (default 1e-4; not stored)",
        "scheme": "Euler: H = V + (dt/tau)(v_leak - V + r x), i.e. V + (X - (V - V_reset))/tau_steps",
        "reset": "to v_reset (hard reset; soft reset cannot be exported)",
        "spike test": "v >= v_threshold",
        "synapse order": "current first (CUBALIFNode)",
        "delayed reset": "no",
        "spikes per step": "one",
        "output delay": "none",
        "initial state": "v = v_reset",
        "recorded voltage": "after the reset (node.v)",
        "recurrent start": "not exportable (LinearRecurrentContainer fails to trace)",
        "input scaling": "r and w_in as in the file",
        "exporter mapping": "LIFNode -> LIF(tau = tau_steps*dt, r = 1 (decay_input) or tau_steps, v_leak = v_reset); "
                            "CUBALIFNode -> CubaLIF(tau_syn = dt/(1-c_decay), tau_mem = dt/(1-v_decay), "
                            "r = tau_mem/dt, w_in = tau_syn/dt); IFNode -> IF(r = 1/dt); the Input node is "
                            "named 'input_1'",
    },
    "spikingjelly.activation_based.nir_exchange.export_to_nir(net, sample, dt=1e-4)",
    lost=("dt", "the initial state v_reset", "detach_reset, surrogate", "soft-reset models, recurrent containers"),
    assumed={t: "dt = the exporter's default 1e-4 unless given" for t in ("LIF", "CubaLIF", "IF")},
))

_register(_preset(
    "spyx", "Spyx 1.0.0",
    dict(dt=1.0, method="euler", reset="subtract", threshold=">", synapse="current_first", input_gain="unit",
         output_delay=1, reset_timing="late", voltage="pre", by_type={"CubaLIF": {"reset_timing": "same"}}),
    {
        "dt": "the dt argument of spyx.nir.to_nir (default 1; not stored): pass the same dt",
        "scheme": "V = beta V + x with beta = 1 - dt/tau (alpha = 1 - dt/tau_syn)",
        "reset": "subtract v_threshold",
        "spike test": "V > v_threshold",
        "synapse order": "current first",
        "delayed reset": "LIF / RLIF: yes, the subtraction comes after the decay (as snnTorch's); CuBaLIF / "
                         "RCuBaLIF: no, before the decay",
        "spikes per step": "one",
        "output delay": "one step: a layer emits the spike of its previous state (each layer adds one step)",
        "initial state": "0",
        "recorded voltage": "before the reset (the state V)",
        "recurrent start": "0 (no recurrent bias); the recurrent spike is the previous step's",
        "input scaling": "none: r and w_in are ignored, the input enters unscaled",
        "exporter mapping": "LIF -> LIF(tau = dt/(1-beta), r = beta, v_leak = 0); CuBaLIF -> CubaLIF(tau_syn = "
                            "dt/(1-alpha), tau_mem = dt/(1-beta), r = beta, w_in = 1); RLIF / RCuBaLIF -> a "
                            "nested graph whose input edge goes through w_rec (import_graph reroutes it)",
    },
    "spyx.nir.to_nir(model, {'input': shape}, {'output': shape}, dt=...)",
    lost=("dt", "the input scaling (r and w_in are not the model's)", "the one-step output delay",
          "the reset placement", "the activation / surrogate", "the initial state"),
    quirks=("r = beta -> tau/dt and w_in = 1 -> tau_syn/dt (the Euler gains become Spyx's unit gains)",
            "a nested graph's input -> w_rec edge -> input -> neuron (the exporter routes the input through the "
            "recurrent weights; Spyx itself does not)"),
    assumed={t: "dt = the dt given to spyx.nir.to_nir" for t in ("LIF", "CubaLIF")},
))

_register(_preset(
    "rockpool", "Rockpool 3.1.0",
    dict(dt=1e-3, method="exact", reset="subtract", threshold=">=", spikes="count", synapse="current_first"),
    {
        "dt": "the modules' dt (default 1e-3); not stored as such, but hidden in r = (tau/dt) exp(-dt/tau): "
              "import_graph reads it back",
        "scheme": "exact decay a = exp(-dt/tau), the input added unscaled: LIFNeuronTorch v = a v + x; LIFTorch "
                  "i = a_s (i + x), v = a_m v + i; ExpSynTorch i = a (i + x)",
        "reset": "subtract v_threshold once per spike",
        "spike test": "v >= v_threshold (StepPWL: floor(v / v_threshold) spikes)",
        "synapse order": "current first: LIFTorch's current jumps by the input and decays, then drives v",
        "delayed reset": "no",
        "spikes per step": "several: the output is the spike count floor(v / v_threshold)",
        "output delay": "none",
        "initial state": "0",
        "recorded voltage": "after the reset (record=True: 'vmem'); the current after its decay ('isyn')",
        "recurrent start": "0 (w_rec sees the previous step's spikes); not exported: the exporter drops w_rec",
        "input scaling": "gain 1: after import_graph r = 1/(1 - a_m) and w_in = a_s/(1 - a_s) (LI: r = a/(1 - a))",
        "exporter mapping": "LIFTorch -> CubaLIF(tau_syn, tau_mem, r = (tau_mem/dt) exp(-dt/tau_mem), v_leak = 0, "
                            "w_in = 1); LIFNeuronTorch -> LIF(tau, r = (tau/dt) exp(-dt/tau), v_leak = 0); "
                            "ExpSynTorch -> LI(tau, r = (tau/dt) exp(-dt/tau)); LinearTorch -> Affine / Linear; "
                            "Input [1, N] and Output [1, 1, N] (load with strict=False)",
    },
    "rockpool.nn.modules.to_nir(net) (its default sample of shape (1, N) leaks into the Input and Output shapes)",
    lost=("the neuron bias (v_leak is written as 0)", "the recurrent weights of LIFTorch(has_rec=True)",
          "noise_std, max_spikes_per_dt (a clamp of the spike count), spike_generation_fn"),
    quirks=("r = (tau/dt) exp(-dt/tau) -> 1/(1 - a) (LIF, CubaLIF) or a/(1 - a) (LI), a = exp(-dt/tau), so that "
            "the exact update adds the input unscaled as Rockpool does",
            "CubaLIF w_in = 1 -> a_s/(1 - a_s) (Rockpool's current decays in the step of its input)",
            "dt is read from r"),
    assumed={"LIF": "no bias (LIFNeuronTorch's bias is not exported)",
             "CubaLIF": "no bias and no recurrent weights (LIFTorch's bias and w_rec are not exported)",
             "LI": "ExpSynTorch (i = a (i + x))"},
))


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
#: Each library's own names for the settings its NIR files do not hold: ``{library: {option:
#: (allowed values, default)}}``. :meth:`Dynamics.preset` and :func:`import_graph` take them
#: (globally or per node with ``options={"node": {...}}``) and translate them into Dynamics
#: settings for each node type (:func:`option_settings`).
OPTIONS: dict[str, dict[str, tuple[tuple, Any]]] = {
    "snntorch": {"reset_mechanism": (("subtract", "zero", "none"), "subtract"),
                 "reset_delay": ((True, False), True)},
    "sinabs": {"norm_input": ((True, False), True),
               "spike_fn": (("MultiSpike", "SingleSpike"), "MultiSpike"),
               "reset_fn": (("MembraneSubtract", "MembraneReset"), "MembraneSubtract")},
    "rockpool": {"max_spikes_per_dt": ((1, 2 ** 16), 2 ** 16)},
}


def _option_value(library: str, name: str, value: Any, where: str) -> Any:
    allowed, _ = OPTIONS[library][name]
    if isinstance(allowed[0], str) and not isinstance(value, str):  # a class, function or instance
        value = getattr(value, "__name__", None) or type(value).__name__
    if isinstance(value, str):
        value = value.rsplit(".", 1)[-1]
    if library == "rockpool" and name == "max_spikes_per_dt" and not isinstance(value, bool):
        try:
            value = 1 if int(value) == 1 else (2 ** 16 if int(value) >= 2 ** 16 else int(value))
        except (TypeError, ValueError):
            pass
    if isinstance(allowed[0], bool) and not isinstance(value, bool):
        pass  # 0/1 are not booleans here
    elif value in allowed and (isinstance(value, bool) == isinstance(allowed[0], bool)):
        return value
    if library == "snntorch" and value == "none":
        return value
    raise DynamicsError(f"{where}: {library} option {name}={value!r} is not one of {list(allowed)}. "
                        f"Fix: pick one of them{_option_hint(library, name)}")


def _option_hint(library: str, name: str) -> str:
    if (library, name) == ("rockpool", "max_spikes_per_dt"):
        return " (a clamp of the spike count between 1 and 2**16 is not modelled by nirbridge)"
    return ""


def option_settings(library: str, options: Mapping[str, Any], node_type: str, where: str = "options") -> dict:
    """The Dynamics settings (of :data:`~nirbridge.dynamics.Dynamics` ``by_type`` / ``by_node``
    kind) that ``library``'s own ``options`` mean for a node of ``node_type``; ``{}`` where they
    change nothing. Raises :class:`~nirbridge.errors.DynamicsError` for an unknown option or value,
    and for a setting nirbridge cannot express (naming it)."""
    known = OPTIONS.get(library, {})
    bad = sorted(set(options) - set(known))
    if bad:
        raise DynamicsError(f"{where}: {bad} {'is' if len(bad) == 1 else 'are'} not options of {library!r}; its "
                            f"options: {sorted(known) or 'none'}. Fix: use those (or Dynamics fields such as "
                            "reset=, voltage=)")
    o = {k: _option_value(library, k, v, where) for k, v in options.items()}
    o = {**{k: d for k, (_, d) in known.items()}, **o}
    if library == "snntorch":
        if o["reset_mechanism"] == "none":
            raise DynamicsError(f"{where}: snnTorch reset_mechanism='none' (no reset at all) cannot be expressed: "
                                "nirbridge's Dynamics reset to v_reset (reset='zero') or subtract v_threshold "
                                "(reset='subtract'). Fix: use reset_mechanism='subtract' or 'zero' in the snnTorch "
                                "model")
        if node_type not in ("LIF", "CubaLIF"):
            return {}
        mech = o["reset_mechanism"]
        if not o["reset_delay"]:  # the reset in the step of the spike, mem after it
            if mech == "subtract":
                raise DynamicsError(
                    f"{where}: snnTorch reset_delay=False with reset_mechanism='subtract' cannot be expressed: its "
                    "step subtracts v_threshold where the previous voltage, after its reset, is still above the "
                    "threshold, and tests the spike on that, then adds it back ('avoid double reset'); no Dynamics "
                    "setting does this. Fix: reset_delay=True (snnTorch's default) or reset_mechanism='zero' in the "
                    "snnTorch model")
            return {"reset": mech, "reset_timing": "same", "voltage": "post"}
        if mech == "subtract":
            return {"reset": "subtract", "reset_timing": "late"}
        if node_type == "LIF":  # Leaky: v = beta (1 - R) v + x
            return {"reset": "zero", "reset_timing": "same", "voltage": "pre"}
        return {"reset": "zero", "reset_timing": "late"}  # Synaptic: v = (1 - R)(beta v + i)
    if library == "sinabs":
        out: dict[str, Any] = {}
        if node_type in ("LIF", "LI"):
            out["input_gain"] = "nir" if o["norm_input"] else "unit"
        if node_type in SPIKING:
            out["spikes"] = "count" if o["spike_fn"] == "MultiSpike" else "single"
            out["reset"] = "subtract" if o["reset_fn"] == "MembraneSubtract" else "zero"
        return out
    if library == "rockpool":
        if node_type in SPIKING:
            return {"spikes": "single" if o["max_spikes_per_dt"] == 1 else "count"}
        return {}
    return {}


_DYN_FIELDS = tuple(f for f in Dynamics.__dataclass_fields__ if f != "origin")


def _preset_dynamics(preset: Preset, overrides: Mapping[str, Any], options: Mapping[str, Any] | None,
                     graph: Graph | None, imported: bool = False) -> Dynamics:
    """The Dynamics of ``preset`` with Dynamics-field ``overrides``, the library's own options among
    them, and per-node library ``options`` (node types from ``graph`` when given)."""
    where = f"Dynamics.preset({preset.name!r})" if not imported else f"import_graph(..., {preset.name!r})"
    known = OPTIONS.get(preset.name, {})
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
    if options:
        if not isinstance(options, Mapping):
            raise DynamicsError(f"{where}: options must be a dict {{node name: {{option: value}}}}, got "
                                f"{options!r}. Fix: e.g. options={{'1': {{...}}}}")
        types = {s.name: s.node.type for s in graph.plan.steps} if graph is not None else None
        by_node = {n: dict(v) for n, v in _by_mapping(settings.get("by_node", ()))}
        for node, opts in options.items():
            if not isinstance(opts, Mapping):
                raise DynamicsError(f"{where}: options[{node!r}] must be a dict {{option: value}}, got {opts!r}")
            stated.update(opts)
            merged = {**lib, **opts}
            if types is not None:
                if node not in types:
                    valid = [n for n, t in types.items() if t in NEURONS]
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


# ====================================================================== exporter signatures
class ExporterSignatureWarning(NirBridgeWarning):
    """A graph simulated with a library's preset looks like a file that needs :func:`import_graph`
    (or states what the preset assumes); the message names the node, the library and the call."""


_ASSUMED_FIELDS = ("reset", "reset_timing", "stored_voltage", "input_gain", "spikes")


def check_signatures(graph: Graph, dyn: Dynamics) -> None:
    """Warn where ``graph``, simulated with the preset Dynamics ``dyn``, shows an exporter signature
    nirbridge knows and ``import_graph`` was not used: Norse 1.1.0's ``tau = dt * tau_mem``,
    Spyx's ``r = beta``, Rockpool's ``r = (tau/dt) exp(-dt/tau)``, a ``dt/tau`` above 1 under
    forward Euler; and, for snnTorch and Sinabs, that the file cannot say the reset mechanism /
    ``norm_input`` the preset assumes. Each :class:`ExporterSignatureWarning` names the node, the
    library and the call that fixes it. Called for every program built with preset Dynamics
    (:meth:`Dynamics.check_graph`); Dynamics returned by :func:`import_graph` are not checked again."""
    origin = dyn.origin
    if not isinstance(origin, Mapping) or origin.get("imported"):
        return
    lib = origin.get("library")
    if lib not in PRESETS:
        return
    warned: set[str] = set()
    for s in graph.plan.steps:
        t, p = s.node.type, s.node.params
        tf = {"LIF": "tau", "LI": "tau", "CubaLIF": "tau_mem", "CubaLI": "tau_mem"}.get(t)
        if tf is None:
            continue
        d = dyn.for_node(s.name, t)
        tau = np.asarray(p[tf], dtype=np.float64)
        r = np.asarray(p["r"], dtype=np.float64)
        msg = None
        if lib == "norse" and np.any(tau < d.dt):
            msg = (f"tau = {_short(tau)} s is below dt = {d.dt:g} s: Norse 1.1.0 writes tau = dt * tau_mem "
                   "(norse#411). "
                   f"Fix: graph, dynamics = nb.presets.import_graph(path, 'norse', export_dt={d.dt:g})")
        elif (d.input_gain == "nir" and r.size and np.all(r < 1)
              and np.allclose(r, 1 - d.dt / np.broadcast_to(tau, r.shape), rtol=1e-5, atol=1e-7)):
            msg = (f"r = {_short(r)} equals beta = 1 - dt/tau, as Spyx's exporter writes it (Spyx adds the input "
                   f"unscaled; the Spyx preset ignores r). Fix: graph, dynamics = nb.presets.import_graph(path, "
                   f"'spyx', dt={d.dt:g})")
        elif lib == "rockpool" and r.size and np.all(r > 0):
            est = np.broadcast_to(tau, r.shape) * _lambert_w(1.0 / r)
            ref = float(np.median(est))
            if ref > 0 and np.all(np.abs(est - ref) <= 1e-5 * ref) and not np.allclose(r, -1 / np.expm1(-d.dt / tau)):
                msg = (f"r = {_short(r)} = (tau/dt) exp(-dt/tau) with dt = {ref:.6g} s, as Rockpool's exporter "
                       "writes it. Fix: graph, dynamics = nb.presets.import_graph(path, 'rockpool')")
        if msg is None and d.method == "euler" and np.any(d.dt / tau > 1):
            fix = (f"nb.presets.import_graph(path, {lib!r}" + (", export_dt=...)" if lib == "norse" else ")")
                   if lib in _IMPORT_FIXES else f"Dynamics.preset({lib!r}, dt=...) with the file's dt")
            msg = (f"dt/tau = {float(np.max(d.dt / tau)):.3g} > 1: forward Euler overshoots (the voltage flips sign "
                   f"each step); tau is probably not in seconds or dt is not the exporter's. Fix: {fix}")
        if msg:
            warned.add(s.name)
            warnings.warn(ExporterSignatureWarning(f"node {s.name!r} ({t}), preset {lib!r}: {msg}"), stacklevel=4)
    _warn_assumed(graph, dyn, lib, origin, warned)


def _looks_exported_by(lib: str, node, dt: float) -> bool:
    """Whether ``node`` has the parameters ``lib``'s exporter writes: snnTorch ``r = tau/dt`` (CubaLIF
    also ``w_in = tau_syn/dt``), ``v_leak = v_reset = 0``; Sinabs ``r = 1``, ``v_leak = v_reset = 0``,
    ``tau >= 1`` step (LIF, LI)."""
    p = node.params

    def is_(field, value):
        return field in p and np.allclose(np.asarray(p[field], dtype=np.float64), value, rtol=1e-5, atol=0)

    zero = all(np.all(np.asarray(p[f]) == 0) for f in ("v_leak", "v_reset") if f in p)
    if lib == "snntorch" and node.type == "LIF":
        return zero and is_("r", np.asarray(p["tau"], dtype=np.float64) / dt)
    if lib == "snntorch" and node.type == "CubaLIF":
        return (zero and is_("r", np.asarray(p["tau_mem"], dtype=np.float64) / dt)
                and is_("w_in", np.asarray(p["tau_syn"], dtype=np.float64) / dt))
    if lib == "sinabs" and node.type in ("LIF", "LI"):  # tau counted in steps: at least one
        return zero and is_("r", 1.0) and bool(np.all(np.asarray(p["tau"], dtype=np.float64) >= dt))
    return False


def _warn_assumed(graph: Graph, dyn: Dynamics, lib: str, origin: Mapping, skip: set[str]) -> None:
    """snnTorch and Sinabs files cannot say the reset mechanism / input scaling: name the assumption
    and the option that changes it, for the nodes still simulated with the preset's defaults."""
    if lib not in ("snntorch", "sinabs") or origin.get("stated"):
        return
    base = get_preset(lib).dynamics()
    nodes = []
    for s in graph.plan.steps:
        if s.name in skip or not _looks_exported_by(lib, s.node, base.dt):
            continue
        a, b = dyn.for_node(s.name, s.node.type), base.for_node(s.name, s.node.type)
        if all(getattr(a, f) == getattr(b, f) for f in _ASSUMED_FIELDS):
            nodes.append(s.name)
    if not nodes:
        return
    if lib == "snntorch":
        what = ("reset_mechanism and reset_delay; simulating snnTorch's defaults reset_mechanism='subtract', "
                "reset_delay=True. If the model used another: Dynamics.preset('snntorch', reset_mechanism='zero') "
                "(or reset_delay=False; per layer: options={node: {...}})")
    else:
        what = ("norm_input, spike_fn and reset_fn; simulating Sinabs' defaults norm_input=True, MultiSpike, "
                "MembraneSubtract. If the model used others: Dynamics.preset('sinabs', norm_input=False) (or "
                "spike_fn='SingleSpike', reset_fn='MembraneReset'; per layer: options={node: {...}})")
    warnings.warn(LostInformationWarning(
        f"nodes {nodes}, preset {lib!r}: the NIR file does not hold {what}; stating the options (also the "
        "defaults) silences this"), stacklevel=5)


set_preset_lookup(get_preset, check_signatures)


# ====================================================================== import: exporter quirks
def import_graph(graph: Any, library: str, *, dt: float | None = None, export_dt: float | None = None,
                 options: Mapping[str, Mapping[str, Any]] | None = None, **library_options: Any
                 ) -> tuple[Graph, Dynamics]:
    """Read a library's NIR export: correct its known exporter quirks and return it with the
    Dynamics that reproduce the library's own simulation.

    Returns ``(graph, dynamics)``: the corrected graph (a new one; ``graph`` is not changed) and
    ``Dynamics.preset(library, dt=dt, **library_options, options=options)``. Every change is
    announced once per node by an :class:`ExporterQuirkWarning` naming the node and the change,
    and what the file cannot hold by one :class:`LostInformationWarning` per neuron naming the
    assumption (for snnTorch and Sinabs only while none of the library's options is stated).

    Args:
        graph: a :class:`~nirbridge.graph.Graph`, a ``nir.NIRGraph`` (what an exporter returns) or
            the path of a ``.nir`` file.
        library: a preset name (:func:`names`).
        dt: the simulation time step (default: the preset's).
        export_dt: Norse only, required: the ``dt`` given to ``norse.torch.to_nir`` (its default
            is 1e-3). Norse 1.1.0 writes ``tau = export_dt * tau_mem``; files from earlier
            exporters (e.g. the NIR paper's ``lif_norse.nir``) hold tau in seconds and need no
            ``import_graph`` at all.
        options: ``{node name: {option: value}}``: the library's options for single nodes (a
            model whose layers differ), on top of the global ones.
        **library_options: the library's own names for what the file does not hold
            (:data:`OPTIONS`): snnTorch ``reset_mechanism`` (``"subtract"``, ``"zero"``) and
            ``reset_delay``; Sinabs ``norm_input``, ``spike_fn`` (``"MultiSpike"``,
            ``"SingleSpike"``, or the class) and ``reset_fn`` (``"MembraneSubtract"``,
            ``"MembraneReset"``, or an instance); Rockpool ``max_spikes_per_dt`` (1 or the default).
            Any Dynamics field may be given too (e.g. ``reset="zero"``).

    Corrections: Norse: ``tau /= export_dt`` (LIF, LI, CubaLIF), CubaLIF ``w_in = tau_syn / dt``;
    Spyx: ``r = tau / dt``, ``w_in = tau_syn / dt``, a nested graph's ``input -> w_rec`` edge
    becomes ``input -> neuron``, and the columns of an Affine/Linear after a Flatten of a
    ``(C, H, W)`` tensor are put in NIR's channels-first order; Rockpool: dt is read from ``r``
    (``dt`` given must agree with it), then ``r = 1/(1 - a)`` (LIF, CubaLIF) or ``a/(1 - a)`` (LI)
    and CubaLIF ``w_in = a_s/(1 - a_s)`` with ``a = exp(-dt/tau)``. snnTorch, Sinabs and
    SpikingJelly need no correction.
    """
    from .io import as_graph

    graph = as_graph(graph, "import_graph")
    check_graph(graph, "import_graph")
    preset = get_preset(library)
    if library == "rockpool":  # the file holds dt, inside r
        dt = _rockpool_dt(graph, dt)
    overrides = dict(library_options)
    if dt is not None:
        overrides["dt"] = dt
    dyn = _preset_dynamics(preset, overrides, options, graph, imported=True)
    fix = _IMPORT_FIXES.get(library)
    if fix is not None:
        graph = fix(graph, dyn, export_dt)
    elif export_dt is not None:
        raise DynamicsError(f"import_graph(..., {library!r}): export_dt is used for Norse files only. "
                            "Fix: leave it out (pass dt= for the simulation time step)")
    stated = dyn.origin["stated"] if library in OPTIONS else ()
    for s in graph.plan.steps:
        note = preset.assumed.get(s.node.type)
        if note and not stated:
            lost = "; ".join(preset.lost)
            warnings.warn(LostInformationWarning(
                f"node {s.name!r} ({s.node.type}): {preset.library}'s NIR export does not hold: {lost}. "
                f"The preset assumes {note}."), stacklevel=2)
    return graph, dyn


def _warn_change(node: str, what: str) -> None:
    warnings.warn(ExporterQuirkWarning(f"node {node!r}: {what}"), stacklevel=3)


def _apply_fixes(graph: Graph, changes: dict[str, dict[str, np.ndarray]], why: str) -> Graph:
    """``graph`` with the corrected parameters, one :class:`ExporterQuirkWarning` per node naming the change."""
    for name, new in changes.items():
        old = graph.node(name).params
        what = ", ".join(f"{f} {_short(old[f])} -> {_short(v)}" for f, v in new.items())
        warnings.warn(ExporterQuirkWarning(f"node {name!r}: {why}: {what}"), stacklevel=4)  # the caller of import_graph
    return graph.replace_params(changes)


def _fix_norse(graph: Graph, dyn: Dynamics, export_dt: float | None) -> Graph:
    if export_dt is None:
        raise DynamicsError(
            "import_graph(..., 'norse') needs export_dt: the dt given to norse.torch.to_nir (1e-3 if none was "
            "given). Norse 1.1.0 writes tau = export_dt * tau_mem (norse#411). Fix: import_graph(graph, 'norse', "
            "export_dt=1e-3); a file whose tau is already in seconds needs no import_graph"
        )
    export_dt = float(export_dt)
    changes: dict[str, dict[str, np.ndarray]] = {}
    for s in graph.plan.steps:
        p = s.node.params
        fields = {"LIF": ("tau",), "LI": ("tau",), "CubaLIF": ("tau_mem", "tau_syn"),
                  "CubaLI": ("tau_mem", "tau_syn")}.get(s.node.type, ())
        new: dict[str, np.ndarray] = {}
        for f in fields:
            tau = np.asarray(p[f])
            if np.any(tau >= export_dt):
                raise node_error(
                    ParameterError, s.name, f,
                    f"holds {tau.ravel()[:4].tolist()}, not export_dt * tau_mem as Norse 1.1.0's exporter writes "
                    f"(that would mean a time constant of {float(np.max(tau)) / export_dt:g} s): the file looks "
                    "written by an exporter that keeps tau in seconds",
                    "load it without import_graph and use Dynamics.preset('norse') directly",
                )
            new[f] = (tau / np.asarray(export_dt, dtype=tau.dtype)).astype(tau.dtype)
        if s.node.type in ("CubaLIF", "CubaLI"):
            w = np.asarray(p["w_in"])
            new["w_in"] = (new["tau_syn"] / np.asarray(dyn.dt, dtype=new["tau_syn"].dtype)).astype(w.dtype)
        if new:
            changes[s.name] = new
    return _apply_fixes(graph, changes, "Norse 1.1.0 exporter correction (tau = export_dt * tau_mem, w_in = 1 for "
                        "a current that jumps by the input)")


def _fix_spyx(graph: Graph, dyn: Dynamics, export_dt: float | None) -> Graph:
    if export_dt is not None:
        raise DynamicsError("import_graph(..., 'spyx'): pass the dt given to spyx.nir.to_nir as dt=, not export_dt "
                            "(Spyx simulates at its export dt)")
    graph = _reroute_spyx_inputs(graph)
    graph = _spyx_flatten_order(graph)
    changes: dict[str, dict[str, np.ndarray]] = {}
    for s in graph.plan.steps:
        p = s.node.params
        new = {}
        if s.node.type in ("LIF", "LI"):
            new["r"] = _ratio(p["tau"], dyn.dt, p["r"])
        elif s.node.type in ("CubaLIF", "CubaLI"):
            new["r"] = _ratio(p["tau_mem"], dyn.dt, p["r"])
            new["w_in"] = _ratio(p["tau_syn"], dyn.dt, p["w_in"])
        if new:
            changes[s.name] = new
    return _apply_fixes(graph, changes, "Spyx exporter correction (r = beta and w_in = 1 are not the model's: Spyx "
                        "adds the input unscaled)")


def _ratio(tau, dt, like) -> np.ndarray:
    tau = np.asarray(tau)
    out = tau / np.asarray(dt, dtype=tau.dtype)
    return np.broadcast_to(out, np.shape(like)).astype(np.asarray(like).dtype)


def _reroute_spyx_inputs(graph: Graph) -> Graph:
    """Spyx writes a recurrent layer as a nested graph ``input -> w_rec <-> neuron -> output``: the
    external input goes through the recurrent weights, which Spyx itself does not do. Reroute
    ``input -> w_rec`` to ``input -> neuron``."""
    changed: list[str] = []

    def fix(g: nir.NIRGraph, prefix: str) -> nir.NIRGraph:
        nodes = {}
        for k, v in g.nodes.items():
            nodes[k] = fix(v, prefix + k + ".") if isinstance(v, nir.NIRGraph) else v
        edges = [tuple(e) for e in g.edges]
        inputs = [k for k, v in nodes.items() if isinstance(v, nir.Input)]
        if prefix:  # only nested graphs
            for a, b in list(edges):
                if a not in inputs or not isinstance(nodes.get(b), (nir.Linear, nir.Affine)):
                    continue
                loop = [n for n, m in edges if m == b and (b, n) in edges
                        and isinstance(nodes.get(n), (nir.LIF, nir.CubaLIF, nir.IF))]
                if len(loop) == 1 and (a, loop[0]) not in edges:
                    edges[edges.index((a, b))] = (a, loop[0])
                    changed.append(f"{prefix}{a} -> {prefix}{b} became {prefix}{a} -> {prefix}{loop[0]}")
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=g.metadata, type_check=False)

    new = fix(graph.to_nir(), "")
    if not changed:
        return graph
    for c in changed:
        _warn_change(c.split(" -> ")[0], f"Spyx exporter correction (the recurrent layer's input was routed "
                                         f"through the recurrent weights): edge {c}")
    return Graph.from_nir(new)


def _short(v) -> str:
    a = np.asarray(v).ravel()
    text = ", ".join(f"{float(x):.6g}" for x in a[:3])
    return f"[{text}{', ...' if a.size > 3 else ''}]"


def _spyx_flatten_order(graph: Graph) -> Graph:
    """Spyx runs convolutions channels-last: its Flatten of an ``(H, W, C)`` tensor orders the
    features ``(h, w, c)``, but the exporter writes a NIR Flatten of ``(C, H, W)`` (channels-first,
    as NIR says) and the following Affine/Linear with Spyx's own column order. Permute the
    columns of every Affine/Linear fed by such a Flatten alone to NIR's ``(c, h, w)`` order."""
    plan = graph.plan
    changes: dict[str, dict[str, np.ndarray]] = {}
    for s in plan.steps:
        if s.node.type not in ("Affine", "Linear") or len(s.sources) != 1 or s.sources[0][1]:
            continue
        src = plan[s.sources[0][0]]
        shape = tuple(src.input_shape)
        if src.node.type != "Flatten" or len(shape) != 3 or tuple(src.output_shape) != (int(np.prod(shape)),):
            continue
        c, h, w = shape
        weight = np.asarray(s.node.params["weight"])
        new = weight.reshape(weight.shape[0], h, w, c).transpose(0, 3, 1, 2).reshape(weight.shape[0], -1)
        changes[s.name] = {"weight": np.ascontiguousarray(new)}
    if not changes:
        return graph
    for name in changes:  # stacklevel 5: the caller of import_graph
        warnings.warn(ExporterQuirkWarning(
            f"node {name!r}: Spyx exporter correction (Spyx flattens its channels-last (H, W, C) tensor, the file's "
            "Flatten is channels-first (C, H, W)): weight columns reordered from (h, w, c) to (c, h, w)"), stacklevel=5)
    return graph.replace_params(changes)


def _rockpool_taus(s):
    """(field, tau) of a Rockpool neuron whose r encodes dt, or None."""
    field_ = {"LIF": "tau", "LI": "tau", "CubaLIF": "tau_mem", "CubaLI": "tau_mem"}.get(s.node.type)
    return None if field_ is None else (field_, np.asarray(s.node.params[field_], dtype=np.float64))


def _lambert_w(z: np.ndarray) -> np.ndarray:
    """The principal branch W0(z) for z > 0 (w e^w = z), by Newton's method in float64."""
    w = np.log1p(z)
    for _ in range(50):
        ew = np.exp(w)
        step = (w * ew - z) / (ew * (w + 1))
        w = w - step
        if np.all(np.abs(step) <= 1e-15 * np.maximum(1.0, np.abs(w))):
            break
    return w


def _rockpool_dt(graph: Graph, dt: float | None) -> float | None:
    """The dt Rockpool's exporter wrote into ``r = (tau/dt) exp(-dt/tau)``, i.e. ``dt = tau W0(1/r)``,
    the same for every neuron (to float32 precision: rounded to 6 significant digits); ``dt`` if given
    must agree with it (relative 1e-5). None when the graph has no neuron."""
    found: list[tuple[str, float, float, float]] = []  # node, median, smallest and largest dt of its neurons
    for s in graph.plan.steps:
        ft = _rockpool_taus(s)
        if ft is None:
            continue
        r = np.asarray(s.node.params["r"], dtype=np.float64)
        if np.any(~(r > 0)):
            raise node_error(ParameterError, s.name, "r",
                             f"holds {_short(r)}, not Rockpool's (tau/dt) exp(-dt/tau) > 0",
                             "load the file without import_graph(..., 'rockpool')")
        d = np.broadcast_to(ft[1], r.shape) * _lambert_w(1.0 / r)
        found.append((s.name, float(np.median(d)), float(np.min(d)), float(np.max(d))))
    if not found:
        return dt
    first, ref = found[0][0], float(f"{found[0][1]:.6g}")
    why = "Rockpool writes r = (tau/dt) exp(-dt/tau)"
    for name, _, lo, hi in found:
        if hi - lo > 1e-5 * ref:
            raise node_error(ParameterError, name, "r",
                             f"gives dt from {lo:.6g} to {hi:.6g} s across its neurons ({why} with one dt): "
                             "not a file as Rockpool writes it (or corrected already)",
                             "load it without import_graph(..., 'rockpool')")
        if max(abs(lo - ref), abs(hi - ref)) > 1e-5 * ref:
            raise node_error(UnsupportedError, name, "r",
                             f"gives dt = {lo:.6g} s ({why}), node {first!r} dt = {ref:.6g} s: one Dynamics has one dt",
                             "export modules that share one dt, or simulate the parts separately")
    if dt is not None and abs(float(dt) - ref) > 1e-5 * ref:
        raise node_error(
            ParameterError, found[0][0], "r",
            f"says the file was written with dt = {ref:.6g} s ({why}), not dt={dt!r}",
            "leave dt out: import_graph(graph, 'rockpool') reads it from r")
    return ref


def _fix_rockpool(graph: Graph, dyn: Dynamics, export_dt: float | None) -> Graph:
    if export_dt is not None:
        raise DynamicsError("import_graph(..., 'rockpool'): export_dt is not used; Rockpool's file holds its dt "
                            "inside r. Fix: leave export_dt out")
    changes: dict[str, dict[str, np.ndarray]] = {}
    dt = np.float64(dyn.dt)
    for s in graph.plan.steps:
        ft = _rockpool_taus(s)
        if ft is None:
            continue
        p = s.node.params
        r = np.asarray(p["r"])
        k = dt / np.broadcast_to(ft[1], r.shape)
        # LI (ExpSynTorch): i = a (i + x), gain a: r = a/(1 - a) = 1/expm1(k); else gain 1: r = 1/(1 - a)
        new = {"r": (1.0 / np.expm1(k) if s.node.type == "LI" else -1.0 / np.expm1(-k)).astype(r.dtype)}
        if s.node.type in ("CubaLIF", "CubaLI"):
            w = np.asarray(p["w_in"])
            ks = dt / np.broadcast_to(np.asarray(p["tau_syn"], dtype=np.float64), w.shape)
            new["w_in"] = (1.0 / np.expm1(ks)).astype(w.dtype)
        changes[s.name] = new
    return _apply_fixes(graph, changes, f"Rockpool exporter correction (r = (tau/dt) exp(-dt/tau) and w_in = 1 are "
                        f"not the exact gains of Rockpool's update; dt = {dyn.dt:g} read from r)")


_IMPORT_FIXES = {"norse": _fix_norse, "spyx": _fix_spyx, "rockpool": _fix_rockpool}


# ====================================================================== export: to another library
#: How a library's NIR *importer* simulates a file: the Dynamics it amounts to, and what it ignores.
#: Only importers measured against the library are listed; others raise UnsupportedError.
IMPORTERS: dict[str, dict[str, Any]] = {
    "norse": dict(
        library="Norse 1.1.0 (norse.torch.from_nir(graph, dt=dt))",
        dynamics=dict(dt=1e-3, method="euler", reset="zero", threshold=">", synapse="current_first",
                      v_init="v_leak"),
        ignores={"LIF": ("r", "v_reset"), "CubaLIF": ("v_reset",), "LI": ("r",), "IF": ("r", "v_reset")},
        types=("Input", "Output", "Affine", "Linear", "Conv2d", "Flatten", "SumPool2d", "LIF", "CubaLIF"),
    ),
    # snntorch.import_nir.import_from_nir: LIF -> Leaky(beta = 1 - dt/tau, one threshold, reset_mechanism='zero',
    # reset_delay=False) at dt = 1e-4, asserting v_leak = 0 and r dt / tau = 1 (the input gain); CubaLIF ->
    # Synaptic likewise with w_in dt / tau_syn = 1; Affine / Linear -> torch Linear
    "snntorch": dict(
        library="snnTorch 1.0.0 (snntorch.import_nir.import_from_nir(graph))",
        dynamics=dict(dt=1e-4, method="euler", reset="zero", threshold=">", synapse="current_first",
                      reset_timing="same", voltage="post"),
        ignores={},
        zero={"LIF": ("v_leak", "v_reset"), "CubaLIF": ("v_leak", "v_reset")},
        unit_gain={"LIF": "r", "CubaLIF": "w_in"},  # r = tau/dt and w_in = tau_syn/dt: the gains are 1
        one_threshold=("LIF", "CubaLIF"),
        setting_hint="snnTorch's importer builds Leaky / Synaptic(reset_mechanism='zero', reset_delay=False) at "
                     "dt = 1e-4: train a model with those settings (import_graph(..., 'snntorch', "
                     "reset_mechanism='zero', reset_delay=False))",
        types=("Input", "Output", "Affine", "Linear", "Conv2d", "Flatten", "AvgPool2d", "LIF", "CubaLIF"),
    ),
    # sinabs.from_nir: LIF -> LIFSqueeze(tau_mem = tau, norm_input=False): v = a v + x with tau in steps,
    # MultiSpike, MembraneSubtract; LI -> ExpLeakSqueeze (needs r = 1, v_leak = 0); Linear is not read,
    # IF becomes IAFSqueeze(min_v_mem = -v_threshold), a clamp nirbridge does not model
    "sinabs": dict(
        library="Sinabs 3.1.3 (sinabs.from_nir(graph, batch_size=...))",
        dynamics=dict(dt=1.0, method="exact", reset="subtract", threshold=">=", spikes="count",
                      synapse="current_first", input_gain="unit"),
        ignores={"LIF": ("r", "v_reset")},
        zero={"LIF": ("v_leak",), "LI": ("v_leak",)},
        types=("Input", "Output", "Affine", "Conv1d", "Conv2d", "Flatten", "SumPool2d", "LIF", "LI"),
    ),
}


def export_graph(graph: Graph, source: str | Dynamics, target: str, *, dt: float | None = None) -> Graph:
    """Rewrite ``graph`` (simulated with ``source``) for ``target``'s NIR importer.

    The result, written with :func:`nirbridge.save` and read by the target library's importer at
    time step ``dt`` (default: the importer's), gives the spikes ``source`` gives. Time constants
    are rescaled to the new dt (Euler at dt' with tau' = tau dt'/dt is the same update), and a
    gain the importer ignores (Norse's LIF ignores ``r``) is folded into the Affine/Linear node
    feeding the neuron. Each change is announced by an :class:`ExporterQuirkWarning`.

    Raises :class:`~nirbridge.errors.UnsupportedError`, naming the node and the setting, where the
    target cannot reproduce the source: another scheme, reset rule or reset timing, several spikes
    per step, an output delay, another initial state, a v_reset the importer drops, node types the
    importer does not read. Supported targets: ``"snntorch"`` (``import_from_nir``: Euler at
    dt = 1e-4, reset to 0 in the step of the spike, ``>``, one threshold per layer, the input gain
    folded into the Affine so that ``r = tau/dt``), ``"norse"`` (Euler, reset to 0, ``>``) and
    ``"sinabs"`` (exact, tau in steps, ``>=``, several spikes per step, subtraction, the input
    unscaled: the source's input gain ``(1 - exp(-dt/tau)) r`` is folded into the Affine; the
    match for Rockpool's LIFNeuronTorch).

    >>> import nir, numpy as np, nirbridge as nb
    >>> g = nb.Graph.from_nir(nir.NIRGraph.from_list(nir.LIF(tau=np.array([1e-3]), r=np.array([1.0]),
    ...     v_leak=np.array([0.0]), v_threshold=np.array([1.0]), v_reset=np.array([0.0]))))
    >>> export_graph(g, "snntorch", "norse")
    Traceback (most recent call last):
    ...
    nirbridge.errors.UnsupportedError: node 'lif', field 'reset_timing': ...
    """
    check_graph(graph, "export_graph")
    src = get_preset(source).dynamics() if isinstance(source, str) else source
    if not isinstance(src, Dynamics):
        raise DynamicsError(f"export_graph(): source must be a preset name or a Dynamics, got {source!r}. "
                            f"Fix: e.g. 'snntorch' (one of {names()}) or Dynamics(dt=...)")
    if target not in IMPORTERS:
        raise UnsupportedError(f"export_graph(): no importer reading recorded for {target!r}; supported targets: "
                               f"{sorted(IMPORTERS)}. Fix: simulate with nirbridge, or add the importer's "
                               "reading to nirbridge.presets.IMPORTERS with a test against the library")
    imp = IMPORTERS[target]
    tgt = Dynamics(**dict(imp["dynamics"], **({} if dt is None else {"dt": dt})))
    plan = graph.plan
    changes: dict[str, dict[str, np.ndarray]] = {}
    notes: dict[str, list[str]] = {}
    for s in plan.steps:
        t = s.node.type
        if s.role != "compute":
            continue
        if t not in imp["types"]:
            raise node_error(UnsupportedError, s.name, "type", f"{imp['library']} does not import {t} nodes",
                             "remove or replace the node")
        if t not in NEURONS:
            continue
        d = src.for_type(t)
        dt_t = tgt.for_type(t)
        p = s.node.params
        _same(s.name, "method", d.method, dt_t.method, imp)
        unit_gain = (d.input_gain, dt_t.input_gain) == ("nir", "unit") and t in ("LIF", "LI")
        if not unit_gain:
            _same(s.name, "input_gain", d.input_gain, dt_t.input_gain, imp)
        if t in ("CubaLIF", "CubaLI"):
            _same(s.name, "synapse", d.synapse, dt_t.synapse, imp)
        if t in SPIKING:
            _same(s.name, "reset_timing", d.reset_timing, dt_t.reset_timing, imp)
            _same(s.name, "reset", d.reset, dt_t.reset, imp)
            _same(s.name, "spikes", d.spikes, dt_t.spikes, imp)
            _same(s.name, "output_delay", d.output_delay, dt_t.output_delay, imp)
            if d.threshold != dt_t.threshold:
                raise node_error(UnsupportedError, s.name, "threshold",
                                 f"the source tests v {d.threshold} v_threshold, {imp['library']} tests "
                                 f"v {dt_t.threshold} v_threshold", "no exact rewrite is implemented")
            if (d.reset == "zero" and "v_reset" in imp["ignores"].get(t, ())
                    and np.any(np.asarray(p["v_reset"]) != 0)):
                raise node_error(UnsupportedError, s.name, "v_reset",
                                 f"is {_short(p['v_reset'])} but {imp['library']} ignores v_reset (resets to 0)",
                                 "shift v_leak, v_threshold and v_reset by -v_reset in your model first")
        for f in imp.get("zero", {}).get(t, ()):
            if np.any(np.asarray(p[f]) != 0):
                raise node_error(UnsupportedError, s.name, f, f"is {_short(p[f])} but {imp['library']} reads "
                                 f"only {f} = 0", f"simulate it with nirbridge, or a model with {f} = 0")
        v0_src = _initial_v(p, d.v_init)
        v0_tgt = _initial_v(p, dt_t.v_init)
        if not np.array_equal(np.broadcast_to(v0_src, np.shape(p.get("v_leak", 0))),
                              np.broadcast_to(v0_tgt, np.shape(p.get("v_leak", 0)))):
            raise node_error(UnsupportedError, s.name, "v_init",
                             f"the source starts at {d.v_init} = {_short(v0_src)}, {imp['library']} at "
                             f"{dt_t.v_init} = {_short(v0_tgt)}", "make v_leak equal the initial voltage")
        new: dict[str, np.ndarray] = {}
        if unit_gain:
            # the target adds the input unscaled: fold the source's gain of x in v into the Affine
            r = np.asarray(p["r"])
            k = np.float64(d.dt) / np.asarray(p["tau"], dtype=np.float64)
            gain = (k if d.method == "euler" else -np.expm1(-k)) * r.astype(np.float64)
            _fold_gain(plan, s, np.broadcast_to(gain, r.shape), changes, notes,
                       "input gain (1 - exp(-dt/tau)) r" if d.method == "exact" else "input gain (dt/tau) r")
            new["r"] = np.ones_like(r)
        if dt_t.dt != d.dt:
            scale = dt_t.dt / d.dt
            for f in ("tau", "tau_mem", "tau_syn"):
                if f in p:
                    a = np.asarray(p[f])
                    new[f] = (a * np.asarray(scale, dtype=np.float64)).astype(a.dtype)
            # CubaLI(F): w_in and r are gains per step of dt/tau, unchanged when dt and tau scale together
            if t in ("I", "IF"):
                a = np.asarray(p["r"])
                new["r"] = (a / np.asarray(scale, dtype=np.float64)).astype(a.dtype)
        if t in imp.get("one_threshold", ()):
            thr = np.asarray(p["v_threshold"])
            if np.unique(thr).size > 1:
                raise node_error(UnsupportedError, s.name, "v_threshold",
                                 f"holds {np.unique(thr).size} different values ({_short(np.unique(thr))}); "
                                 f"{imp['library']} takes one threshold per layer", "give the layer one threshold")
        gain_field = imp.get("unit_gain", {}).get(t)
        if gain_field == "r":  # the importer requires r = tau/dt: the source's gain (dt/tau) r goes into the Affine
            tau_new = np.asarray(new.get("tau", p["tau"]), dtype=np.float64)
            r = np.asarray(p["r"], dtype=np.float64)
            unit = tau_new / np.float64(tgt.dt)
            gain = np.broadcast_to(r / unit, np.broadcast_shapes(r.shape, unit.shape))
            if not np.allclose(gain, 1.0, rtol=1e-6, atol=0):
                _fold_gain(plan, s, gain, changes, notes, "input gain r dt/tau")
            new["r"] = np.broadcast_to(unit, np.shape(gain)).astype(np.asarray(p["r"]).dtype)
        elif gain_field == "w_in":
            ts_new = np.asarray(new.get("tau_syn", p["tau_syn"]), dtype=np.float64)
            tm_new = np.asarray(new.get("tau_mem", p["tau_mem"]), dtype=np.float64)
            w_in, r = np.asarray(p["w_in"], dtype=np.float64), np.asarray(p["r"], dtype=np.float64)
            unit_w, unit_r = ts_new / np.float64(tgt.dt), tm_new / np.float64(tgt.dt)
            if not np.allclose(np.broadcast_to(r, np.shape(unit_r)) / unit_r, 1.0, rtol=1e-6):
                raise node_error(UnsupportedError, s.name, "r",
                                 f"is {_short(r)}; {imp['library']} reads only r = tau_mem/dt ({_short(unit_r)})",
                                 "scale the current's weights instead")
            gain = np.broadcast_to(w_in / unit_w, np.broadcast_shapes(w_in.shape, unit_w.shape))
            if not np.allclose(gain, 1.0, rtol=1e-6, atol=0):
                _fold_gain(plan, s, gain, changes, notes, "input gain w_in dt/tau_syn")
            new["w_in"] = np.broadcast_to(unit_w, np.shape(gain)).astype(np.asarray(p["w_in"]).dtype)
            new["r"] = np.broadcast_to(unit_r, np.shape(unit_r)).astype(np.asarray(p["r"]).dtype)
        if "r" in imp["ignores"].get(t, ()):
            r = np.asarray(new.get("r", p["r"]))
            if np.any(r != 1):
                _fold_gain(plan, s, r, changes, notes, "r")
                new["r"] = np.ones_like(r)
        if new:
            changes.setdefault(s.name, {}).update(new)
            notes.setdefault(s.name, []).extend(
                f"{f} {_short(p[f])} -> {_short(v)}" for f, v in new.items())
    for node, what in notes.items():
        _warn_change(node, f"rewritten for {imp['library']} (dt {src.dt:g} -> {tgt.dt:g}): " + ", ".join(what))
    return graph.replace_params(changes)


def _same(node: str, setting: str, a, b, imp) -> None:
    if a != b:
        raise node_error(UnsupportedError, node, setting,
                         f"the source uses {setting}={a!r}, {imp['library']} {setting}={b!r}; its semantics cannot "
                         "reproduce this model",
                         imp.get("setting_hint", "simulate it with nirbridge, or change the model"))


def _initial_v(p: Mapping[str, Any], v_init: str) -> np.ndarray:
    if v_init == "zero" or p.get(v_init) is None:
        return np.zeros(1)
    return np.asarray(p[v_init])


def _fold_gain(plan, step, r: np.ndarray, changes: dict, notes: dict, what: str) -> None:
    """Scale the rows of the Affine/Linear node that alone feeds ``step`` by ``r`` (an input gain
    the importer does not apply, named ``what``), so that ``r x`` reaches the neuron anyway."""
    srcs = step.sources
    src = plan[srcs[0][0]] if len(srcs) == 1 and not srcs[0][1] else None
    users = [s for s in plan.steps if any(a == (src.name if src else None) for a, _ in s.sources)]
    if src is None or src.node.type not in ("Affine", "Linear") or len(users) != 1:
        raise node_error(UnsupportedError, step.name, "r",
                         f"the {what} {_short(r)} is not applied by the importer, and the node is not fed by one "
                         "Affine/Linear node of its own to fold it into", "fold it into the weights feeding the "
                         "neuron yourself")
    p = src.node.params
    w = np.asarray(p["weight"])
    new = {"weight": (w * np.asarray(r, dtype=np.float64).reshape(-1, 1)).astype(w.dtype)}
    if p.get("bias") is not None:
        b = np.asarray(p["bias"])
        new["bias"] = (b * np.asarray(r, dtype=np.float64)).astype(b.dtype)
    changes.setdefault(src.name, {}).update(new)
    notes.setdefault(src.name, []).append(f"rows scaled by {step.name}'s {what} {_short(r)} (the importer "
                                          "does not apply it)")
