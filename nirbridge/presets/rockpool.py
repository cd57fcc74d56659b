"""Rockpool 3.1.0: its reading of NIR, its option ``max_spikes_per_dt``, the dt its exporter hides
in ``r`` and the correction."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..dynamics import Dynamics
from ..errors import DynamicsError, ParameterError, UnsupportedError, node_error
from ..graph import Graph
from .base import SPIKING, apply_fixes, lambert_w, make_preset, register, short, unit_gains

OPTIONS = {"max_spikes_per_dt": ((1, 2 ** 16), 2 ** 16)}
HINTS = {"max_spikes_per_dt": " (a clamp of the spike count between 1 and 2**16 is not modelled by nirbridge)"}


def coerce(name: str, value: Any) -> Any:
    """``max_spikes_per_dt``: 1, or the default for any count of 2**16 or more."""
    if name == "max_spikes_per_dt" and not isinstance(value, bool):
        try:
            return 1 if int(value) == 1 else (2 ** 16 if int(value) >= 2 ** 16 else int(value))
        except (TypeError, ValueError, OverflowError):
            pass
    return value


def translate(o: Mapping[str, Any], node_type: str, where: str) -> dict:
    """What ``max_spikes_per_dt`` means for a node of ``node_type``."""
    if node_type in SPIKING:
        return {"spikes": "single" if o["max_spikes_per_dt"] == 1 else "count"}
    return {}


def signature(step: Any, d: Dynamics, tau: np.ndarray, r: np.ndarray) -> str | None:
    """Rockpool writes ``r = (tau/dt) exp(-dt/tau)``: one dt read back from every neuron, and a round
    one (two significant digits, as module time steps are: 1e-3, 2.5e-4), so that an ``r`` that
    merely is the same everywhere is not taken for it."""
    if _written_for_importer(step):  # a file export_graph wrote for Rockpool's importer: r = tau/dt - 1
        ref = float(step.node.metadata[MARK]) if MARK in step.node.metadata else _importer_dt_of(step)
        return (f"r = {short(r)} = tau/dt - 1 with dt = {ref:.6g} s, as nirbridge writes a file for Rockpool's "
                "importer (which reads dt from r). Fix: graph, dynamics = nb.presets.import_graph(path, 'rockpool')")
    if r.size and np.all(r > 0):
        est = np.broadcast_to(tau, r.shape) * lambert_w(1.0 / r)
        ref = float(np.median(est))
        round_dt = ref > 0 and abs(ref - float(f"{ref:.2g}")) <= 1e-4 * ref
        if round_dt and np.all(np.abs(est - ref) <= 1e-5 * ref) and not np.allclose(r, -1 / np.expm1(-d.dt / tau)):
            return (f"r = {short(r)} = (tau/dt) exp(-dt/tau) with dt = {ref:.6g} s, as Rockpool's exporter "
                    "writes it. Fix: graph, dynamics = nb.presets.import_graph(path, 'rockpool')")
    return None


def _rockpool_taus(s):
    """(field, tau) of a Rockpool neuron whose r encodes dt, or None."""
    field_ = {"LIF": "tau", "LI": "tau", "CubaLIF": "tau_mem", "CubaLI": "tau_mem"}.get(s.node.type)
    return None if field_ is None else (field_, np.asarray(s.node.params[field_], dtype=np.float64))



def _importer_dt_of(step: Any) -> float | None:
    """The dt of ``r = tau_mem/dt - 1``, one for every neuron of a CubaLIF with ``w_in = 1`` and
    at least two different tau_mem (with one tau any r would fit), else None."""
    p = step.node.params
    if step.node.type != "CubaLIF" or not np.all(np.asarray(p["w_in"]) == 1):
        return None
    r = np.asarray(p["r"], dtype=np.float64)
    tau = np.broadcast_to(np.asarray(p["tau_mem"], dtype=np.float64), r.shape)
    if np.unique(tau).size < 2 or np.any(~(r > -1)):
        return None
    est = tau / (1 + r)
    ref = float(np.median(est))
    return ref if ref > 0 and np.all(np.abs(est - ref) <= 1e-5 * ref) else None


def _written_for_importer(step: Any) -> bool:
    return step.node.type == "CubaLIF" and (MARK in step.node.metadata or _importer_dt_of(step) is not None)


def _importer_dt(graph: Graph) -> tuple[float, bool] | None:
    """``(dt, marked)`` of a file written for Rockpool's *importer* (:func:`export_graph`):
    ``r = tau_mem/dt - 1`` (``from_nir`` takes ``dt = min(tau_mem/(1 + r))``) with one dt for every
    neuron; ``marked`` when the nodes' metadata says so. None for any other file."""
    found, marked = [], True
    for s in graph.plan.steps:
        if _rockpool_taus(s) is None:
            continue
        if not _written_for_importer(s):
            return None
        marked = marked and MARK in s.node.metadata
        found.append(float(s.node.metadata[MARK]) if MARK in s.node.metadata else _importer_dt_of(s))
    if not found or any(abs(d - found[0]) > 1e-5 * found[0] for d in found):
        return None
    return float(f"{found[0]:.6g}"), marked


def read_dt(graph: Graph, dt: float | None) -> float | None:
    """The dt Rockpool's exporter wrote into ``r = (tau/dt) exp(-dt/tau)``, i.e. ``dt = tau W0(1/r)``,
    the same for every neuron (to float32 precision: rounded to 6 significant digits), or, in a
    file :func:`export_graph` wrote for Rockpool's importer, into ``r = tau/dt - 1``; ``dt`` if given
    must agree with it (relative 1e-5). None when the graph has no neuron."""
    found = _importer_dt(graph)
    if found is not None:
        alt, marked = found
        try:
            got = None if marked else _exporter_dt(graph, None)
        except (ParameterError, UnsupportedError):
            got = None
        if got is None or abs(got - float(f"{got:.2g}")) > 1e-4 * got:  # not the exporter's round dt
            if dt is not None and abs(float(dt) - alt) > 1e-5 * alt:
                raise ParameterError(f"import_graph(..., 'rockpool'): r = tau_mem/dt - 1 says the file was written "
                                     f"for Rockpool's importer with dt = {alt:g} s, not dt={dt!r}. Fix: leave dt out")
            return alt
    return _exporter_dt(graph, dt)


def _exporter_dt(graph: Graph, dt: float | None) -> float | None:
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
                             f"holds {short(r)}, not Rockpool's (tau/dt) exp(-dt/tau) > 0",
                             "load the file without import_graph(..., 'rockpool')")
        d = np.broadcast_to(ft[1], r.shape) * lambert_w(1.0 / r)
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


def import_fix(graph: Graph, dyn: Dynamics, export_dt: float | None) -> Graph:
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
    fixed = apply_fixes(graph, changes, f"Rockpool exporter correction (r = (tau/dt) exp(-dt/tau) and w_in = 1 are "
                        f"not the exact gains of Rockpool's update; dt = {dyn.dt:g} read from r)")
    if not any(MARK in v.metadata for v in fixed.nodes.values()):
        return fixed
    # the marker of a file written for Rockpool's importer no longer holds for the corrected r
    nodes = {k: (dataclasses.replace(v, metadata={m: x for m, x in v.metadata.items() if m != MARK})
                 if MARK in v.metadata else v) for k, v in fixed.nodes.items()}
    return Graph(nodes, fixed.edges, fixed.metadata)


#: node metadata key marking a neuron written for Rockpool's importer (``r = tau_mem/dt - 1``), with the dt
MARK = "nirbridge_rockpool_from_nir_dt"


def encode(graph: Graph, dyn: Dynamics) -> Graph:
    """The file as ``from_nir`` reads it: it takes a LIFTorch's ``dt = min(tau_mem/(1 + r))`` and
    ignores ``r`` and ``w_in`` otherwise (the input enters with gain 1), so ``r = tau_mem/dt - 1``
    and ``w_in = 1``. :func:`import_graph` reads such a file back (dt from ``r``)."""
    changes: dict[str, dict[str, np.ndarray]] = {}
    for s in graph.plan.steps:
        if s.node.type != "CubaLIF":
            continue
        p = s.node.params
        r, w = np.asarray(p["r"]), np.asarray(p["w_in"])
        tm = np.broadcast_to(np.asarray(p["tau_mem"], dtype=np.float64), r.shape)
        changes[s.name] = {"r": (tm / np.float64(dyn.dt) - 1).astype(r.dtype), "w_in": np.ones_like(w)}
    out = apply_fixes(graph, changes, f"written for Rockpool's from_nir (it reads dt = min(tau_mem/(1 + r)) = "
                      f"{dyn.dt:g} and adds the input with gain 1)")
    # the node's metadata says so (Rockpool ignores it): nirbridge's own reading of the file needs it
    nodes = {k: (dataclasses.replace(v, metadata={**dict(v.metadata), MARK: float(dyn.dt)}) if k in changes else v)
             for k, v in out.nodes.items()}
    return Graph(nodes, out.edges, out.metadata)


def bias_to_v_leak(bias: np.ndarray, params: Mapping[str, Any], dyn: Dynamics) -> np.ndarray:
    """Rockpool's ``bias`` (added to v in every step) as NIR's ``v_leak``: the exact update adds
    ``(1 - a) v_leak`` per step, ``a = exp(-dt/tau)``."""
    tau = np.asarray(params["tau_mem"] if "tau_mem" in params else params["tau"], dtype=np.float64)
    return bias / -np.expm1(-np.float64(dyn.dt) / tau)


# rockpool.nn.modules.torch.nir.from_nir(graph): CubaLIF -> LIFTorch(tau_mem, tau_syn, threshold, bias = v_leak,
# dt = min(tau_mem/(1 + r))), spike counts (max_spikes_per_dt 2**16); Affine / Linear -> LinearTorch. A nir.LIF
# fails (it reads node.tau_mem, which nir.LIF lacks) and an LI becomes ExpSynTorch(tau=int(tau)), 0 for tau in s.
IMPORTER = dict(
    library="Rockpool 3.1.0 (rockpool.nn.modules.torch.nir.from_nir(graph))",
    dynamics=dict(dt=1e-3, method="exact", reset="subtract", threshold=">=", spikes="count",
                  synapse="current_first"),
    ignores={},
    zero={"CubaLIF": ("v_leak",)},
    unit_gain={"CubaLIF": unit_gains("exact", "CubaLIF")},
    encode=encode,
    recurrent=False,
    recurrent_why="its from_nir builds LIFTorch(has_rec=True) from a nested graph, not checked against Rockpool",
    type_why={"LIF": "its from_nir reads nir.LIF.tau_mem, which nir.LIF does not have (AttributeError); a LIFTorch "
                     "model (CubaLIF) exports",
              "LI": "its from_nir builds ExpSynTorch(tau=int(tau)), which truncates a tau in seconds to 0"},
    setting_hint="Rockpool's importer builds LIFTorch (exact decay, spike counts, subtraction, v >= threshold): "
                 "simulate the model with Dynamics.preset('rockpool')",
    types=("Input", "Output", "Affine", "Linear", "CubaLIF"),
)


PRESET = register(make_preset(
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
    assumed={"LIF": "no bias (LIFNeuronTorch's bias is not exported; state it: import_graph(path, 'rockpool', "
                    "bias=...))",
             "CubaLIF": "no bias and no recurrent weights (LIFTorch's bias and w_rec are not exported; state the "
                        "bias: import_graph(path, 'rockpool', bias=...))",
             "LI": "ExpSynTorch (i = a (i + x))"},
options=OPTIONS, coerce=coerce, option_hints=HINTS, translate=translate, signature=signature,
read_dt=read_dt, import_fix=import_fix, importer=IMPORTER,
param_options={"bias": (("LIF", "CubaLIF"), "v_leak", bias_to_v_leak)},
))
