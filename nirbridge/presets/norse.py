"""Norse 1.1.0: its reading of NIR, its exporter's ``tau = dt * tau_mem`` and the correction,
and its NIR importer."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..dynamics import Dynamics
from ..errors import DynamicsError, ParameterError, node_error
from ..graph import Graph
from .base import apply_fixes, make_preset, register, short


def signature(step: Any, d: Dynamics, tau: np.ndarray, r: np.ndarray) -> str | None:
    """Norse 1.1.0 writes ``tau = dt * tau_mem`` (norse#411): a tau below dt."""
    if np.any(tau < d.dt):
        return (f"tau = {short(tau)} s is below dt = {d.dt:g} s: Norse 1.1.0 writes tau = dt * tau_mem "
                "(norse#411). "
                f"Fix: graph, dynamics = nb.presets.import_graph(path, 'norse', export_dt={d.dt:g})")
    return None


def import_fix(graph: Graph, dyn: Dynamics, export_dt: float | None) -> Graph:
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
    return apply_fixes(graph, changes, "Norse 1.1.0 exporter correction (tau = export_dt * tau_mem, w_in = 1 for "
                        "a current that jumps by the input)")


IMPORTER = dict(
    library="Norse 1.1.0 (norse.torch.from_nir(graph, dt=dt))",
    dynamics=dict(dt=1e-3, method="euler", reset="zero", threshold=">", synapse="current_first",
                  v_init="v_leak"),
    ignores={"LIF": ("r", "v_reset"), "CubaLIF": ("v_reset",), "LI": ("r",), "IF": ("r", "v_reset")},
    recurrent=False,
    recurrent_why="its from_nir is not checked on recurrent graphs (Norse exports none)",
    types=("Input", "Output", "Affine", "Linear", "Conv2d", "Flatten", "SumPool2d", "LIF", "CubaLIF"),
)

PRESET = register(make_preset(
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
    assumed={t: "v_reset as in the file (Norse's exporter drops it: 0 unless you state it, "
                "import_graph(path, 'norse', export_dt=..., v_reset=...)) and reset to a value "
                "(LIFBoxParameters' default reset_method)" for t in ("LIF", "CubaLIF")},
signature=signature, import_fix=import_fix, param_options={"v_reset": (("LIF", "CubaLIF"), "v_reset", None)},
import_call="nb.presets.import_graph(path, 'norse', export_dt=...)", importer=IMPORTER,
))
