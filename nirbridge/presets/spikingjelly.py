"""SpikingJelly 2.0.0: its reading of NIR (its files need no correction) and its NIR importer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..dynamics import Dynamics
from ..errors import UnsupportedError, node_error
from .base import make_preset, register, short, unit_gains

SETTINGS = dict(dt=1e-4, method="euler", reset="zero", threshold=">=", synapse="current_first", v_init="v_reset")
_UNIFORM = {"LIF": ("tau", "v_threshold", "v_reset", "v_leak"),
            "CubaLIF": ("tau_syn", "tau_mem", "v_threshold", "v_reset"),
            "IF": ("v_threshold", "v_reset")}


def importer_check(node: str, node_type: str, p: Mapping[str, Any], dyn: Dynamics) -> None:
    """What ``import_from_nir`` accepts: one value per layer for every parameter (it builds one
    LIFNode / CUBALIFNode / IFNode with scalar settings), LIF ``v_leak = v_reset`` and
    ``tau/dt > 1``, CubaLIF time constants of at least dt."""
    lib = "SpikingJelly's import_from_nir"
    for f in _UNIFORM.get(node_type, ()):
        values = np.unique(np.asarray(p[f]))
        if values.size > 1:
            raise node_error(UnsupportedError, node, f, f"holds {values.size} different values ({short(values)}); "
                             f"{lib} takes one value per layer", "give the layer one value")
    if node_type == "LIF":
        if not np.allclose(np.asarray(p["v_leak"], np.float64), np.asarray(p["v_reset"], np.float64)):
            raise node_error(UnsupportedError, node, "v_leak", f"is {short(p['v_leak'])}, v_reset "
                             f"{short(p['v_reset'])}; {lib} reads only v_leak = v_reset (LIFNode leaks to v_reset)",
                             "train a model with v_leak = v_reset")
        if np.any(np.asarray(p["tau"], np.float64) <= 1.0000001 * dyn.dt):
            raise node_error(UnsupportedError, node, "tau", f"is {short(p['tau'])} s; {lib} needs tau > dt "
                             f"({dyn.dt:g} s)", "export at a smaller dt: export_graph(..., dt=...)")
    if node_type == "CubaLIF" and any(np.any(np.asarray(p[f], np.float64) < dyn.dt) for f in ("tau_syn", "tau_mem")):
        raise node_error(UnsupportedError, node, "tau_syn", f"tau_syn {short(p['tau_syn'])} or tau_mem "
                         f"{short(p['tau_mem'])} is below dt ({dyn.dt:g} s), which {lib} refuses",
                         "export at a smaller dt: export_graph(..., dt=...)")


# spikingjelly.activation_based.nir_exchange.import_from_nir(graph, dt): LIF -> LIFNode(tau = tau/dt,
# decay_input=True for r = 1 or False for r = tau/dt, v_reset, v_threshold), CubaLIF -> CUBALIFNode(c_decay = 1 -
# dt/tau_syn, v_decay = 1 - dt/tau_mem; r = tau_mem/dt, w_in = tau_syn/dt, v_leak = 0 required), IF -> IFNode
# (r = 1/dt); every parameter one scalar per layer; through nirtorch.nir_to_torch
IMPORTER = dict(
    library="SpikingJelly 2.0.0 (spikingjelly.activation_based.nir_exchange.import_from_nir(graph, dt=dt))",
    dynamics=SETTINGS,
    ignores={},
    zero={"CubaLIF": ("v_leak",)},
    # LIF r = 1 is read too (LIFNode(decay_input=True)); any other gain is folded into the Affine with r = tau/dt
    unit_gain={**{t: unit_gains("euler", t) for t in ("CubaLIF", "IF")},
               "LIF": (*unit_gains("euler", "LIF"), lambda q, dt: bool(np.all(np.asarray(q["r"]) == 1)))},
    check=importer_check,
    recurrent=False,
    recurrent_why="not checked against SpikingJelly's recurrent import",
    setting_hint="SpikingJelly's importer builds LIFNode / CUBALIFNode / IFNode with a hard reset to v_reset "
                 "(v >= v_threshold, the voltage starting at v_reset): simulate the model with "
                 "Dynamics.preset('spikingjelly')",
    types=("Input", "Output", "Affine", "Linear", "Conv1d", "Conv2d", "AvgPool2d", "Flatten", "IF", "LIF", "CubaLIF"),
)

PRESET = register(make_preset(
    "spikingjelly", "SpikingJelly 2.0.0",
    SETTINGS,
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
    importer=IMPORTER,
))
