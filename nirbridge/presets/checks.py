"""Never silently wrong: a graph simulated with a library's preset, without :func:`import_graph`,
is checked against the exporter signatures the library modules declare."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from ..dynamics import Dynamics
from ..graph import Graph
from .base import PRESETS, ExporterSignatureWarning, LostInformationWarning, get_preset

_ASSUMED_FIELDS = ("reset", "reset_timing", "stored_voltage", "input_gain", "spikes")
_TAU_FIELD = {"LIF": "tau", "LI": "tau", "CubaLIF": "tau_mem", "CubaLI": "tau_mem"}


def check_signatures(graph: Graph, dyn: Dynamics) -> None:
    """Warn where ``graph``, simulated with the preset Dynamics ``dyn``, shows an exporter signature
    nirbridge knows and ``import_graph`` was not used: each library module declares its own
    (Norse 1.1.0's ``tau = dt * tau_mem``, Spyx's ``r = beta``, Rockpool's ``r = (tau/dt)
    exp(-dt/tau)``), and a ``dt/tau`` above 1 under forward Euler is flagged for every preset;
    presets whose files cannot say a setting (snnTorch's reset mechanism, Sinabs' ``norm_input``)
    name what they assume. Each :class:`ExporterSignatureWarning` names the node, the library and
    the call that fixes it. Called for every program built with preset Dynamics
    (:meth:`Dynamics.check_graph`); Dynamics returned by :func:`import_graph` are not checked again."""
    origin = dyn.origin
    if not isinstance(origin, Mapping) or origin.get("imported"):
        return
    lib = origin.get("library")
    if lib not in PRESETS:
        return
    preset = PRESETS[lib]
    foreign = [p.foreign_signature for p in PRESETS.values() if p is not preset and p.foreign_signature is not None]
    warned: set[str] = set()
    for s in graph.plan.steps:
        t, p = s.node.type, s.node.params
        tf = _TAU_FIELD.get(t)
        if tf is None:
            continue
        d = dyn.for_node(s.name, t)
        tau = np.asarray(p[tf], dtype=np.float64)
        r = np.asarray(p["r"], dtype=np.float64)
        msg = preset.signature(s, d, tau, r) if preset.signature is not None else None
        for check in foreign:
            if msg is not None:
                break
            msg = check(s, d, tau, r)
        if msg is None and d.method == "euler" and np.any(d.dt / tau > 1):
            fix = (preset.import_call if preset.import_fix is not None
                   else f"Dynamics.preset({lib!r}, dt=...) with the file's dt")
            msg = (f"dt/tau = {float(np.max(d.dt / tau)):.3g} > 1: forward Euler overshoots (the voltage flips sign "
                   f"each step); tau is probably not in seconds or dt is not the exporter's. Fix: {fix}")
        if msg:
            warned.add(s.name)
            warnings.warn(ExporterSignatureWarning(f"node {s.name!r} ({t}), preset {lib!r}: {msg}"), stacklevel=4)
    _warn_assumed(graph, dyn, lib, origin, warned)


def _warn_assumed(graph: Graph, dyn: Dynamics, lib: str, origin: Mapping, skip: set[str]) -> None:
    """Files that cannot say a library setting (the preset's ``unstated``): name the assumption and
    the option that changes it, for the nodes still simulated with the preset's defaults."""
    preset = PRESETS[lib]
    if preset.unstated is None or origin.get("stated"):
        return
    exported_here, what = preset.unstated
    base = get_preset(lib).dynamics()
    nodes = []
    for s in graph.plan.steps:
        if s.name in skip or not exported_here(s.node, base.dt):
            continue
        a, b = dyn.for_node(s.name, s.node.type), base.for_node(s.name, s.node.type)
        if all(getattr(a, f) == getattr(b, f) for f in _ASSUMED_FIELDS):
            nodes.append(s.name)
    if not nodes:
        return
    warnings.warn(LostInformationWarning(
        f"nodes {nodes}, preset {lib!r}: the NIR file does not hold {what}; stating the options (also the "
        "defaults) silences this"), stacklevel=5)

