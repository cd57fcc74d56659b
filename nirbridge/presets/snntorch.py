"""snnTorch 1.0.0: its reading of NIR, its options (``reset_mechanism``, ``reset_delay``), what its
files cannot say, and its NIR importer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import DynamicsError
from .base import make_preset, register, unit_gains

OPTIONS = {"reset_mechanism": (("subtract", "zero", "none"), "subtract"), "reset_delay": ((True, False), True)}


def translate(o: Mapping[str, Any], node_type: str, where: str) -> dict:
    """What snnTorch's ``reset_mechanism`` and ``reset_delay`` mean for a node of ``node_type``."""
    if o["reset_mechanism"] == "none":
        raise DynamicsError(f"{where}: snnTorch reset_mechanism='none' (no reset at all) cannot be expressed: "
                            "nirbridge's Dynamics reset to v_reset (reset='zero') or subtract v_threshold "
                            "(reset='subtract'). Fix: use reset_mechanism='subtract' or 'zero' in the snnTorch "
                            "model")
    if node_type not in ("LIF", "CubaLIF", "RLIF"):
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
    # Synaptic: v = (1 - R)(beta v + i); RLeaky: v = (1 - R)(beta v + x + W s + b)
    return {"reset": "zero", "reset_timing": "late"}


def node_kind(step: Any) -> str:
    """``"RLIF"`` for a LIF fed back by a recurrent edge (snnTorch's RLeaky, whose zero reset drops
    the new input too, unlike Leaky's), else the node's NIR type."""
    if step.node.type == "LIF" and any(rec for _, rec in step.sources):
        return "RLIF"
    return step.node.type


def exported_here(node: Any, dt: float) -> bool:
    """Whether ``node`` has the parameters snnTorch's exporter writes: ``r = tau/dt`` (CubaLIF also
    ``w_in = tau_syn/dt``), ``v_leak = v_reset = 0``."""
    p = node.params
    if node.type not in ("LIF", "CubaLIF") or not all(np.all(np.asarray(p[f]) == 0) for f in ("v_leak", "v_reset")):
        return False
    if node.type == "LIF":
        return _close(p["r"], np.asarray(p["tau"], dtype=np.float64) / dt)
    return (_close(p["r"], np.asarray(p["tau_mem"], dtype=np.float64) / dt)
            and _close(p["w_in"], np.asarray(p["tau_syn"], dtype=np.float64) / dt))


def _close(a: Any, b: Any) -> bool:
    return bool(np.allclose(np.asarray(a, dtype=np.float64), b, rtol=1e-5, atol=0))


UNSTATED = (exported_here,
            "reset_mechanism and reset_delay; simulating snnTorch's defaults reset_mechanism='subtract', "
            "reset_delay=True. If the model used another: Dynamics.preset('snntorch', reset_mechanism='zero') "
            "(or reset_delay=False; per layer: options={node: {...}})")

# snntorch.import_nir.import_from_nir: LIF -> Leaky(beta = 1 - dt/tau, one threshold, reset_mechanism='zero',
# reset_delay=False) at dt = 1e-4, asserting v_leak = 0 and r dt / tau = 1 (the input gain); CubaLIF ->
# Synaptic likewise with w_in dt / tau_syn = 1; Affine / Linear -> torch Linear
IMPORTER = dict(
    library="snnTorch 1.0.0 (snntorch.import_nir.import_from_nir(graph))",
    dynamics=dict(dt=1e-4, method="euler", reset="zero", threshold=">", synapse="current_first",
                  reset_timing="same", voltage="post"),
    ignores={},
    zero={"LIF": ("v_leak", "v_reset"), "CubaLIF": ("v_leak", "v_reset")},
    unit_gain={t: unit_gains("euler", t) for t in ("LIF", "CubaLIF")},  # r = tau/dt, w_in = tau_syn/dt: gains 1
    one_threshold=("LIF", "CubaLIF"),
    setting_hint="snnTorch's importer builds Leaky / Synaptic(reset_mechanism='zero', reset_delay=False) at "
                 "dt = 1e-4: train a model with those settings (import_graph(..., 'snntorch', "
                 "reset_mechanism='zero', reset_delay=False))",
    fixed_dt="its importer builds Leaky / Synaptic with beta = 1 - 1e-4/tau (dt = 1e-4 hard-coded)",
    recurrent=False,
    recurrent_why="its import_from_nir fails on a recurrent graph (AttributeError: 'GraphModule' object has no "
                  "attribute 'items', measured with snnTorch 1.0.0)",
    types=("Input", "Output", "Affine", "Linear", "Conv2d", "Flatten", "AvgPool2d", "LIF", "CubaLIF"),
)

PRESET = register(make_preset(
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
options=OPTIONS, translate=translate, unstated=UNSTATED, importer=IMPORTER, node_kind=node_kind,
))
