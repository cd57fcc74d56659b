"""SpikingJelly 2.0.0: its reading of NIR (its files need no correction)."""

from __future__ import annotations

from .base import make_preset, register

PRESET = register(make_preset(
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
