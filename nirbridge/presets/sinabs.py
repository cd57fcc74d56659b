"""Sinabs 3.1.3: its reading of NIR, its options (``norm_input``, ``spike_fn``, ``reset_fn``),
what its files cannot say, and its NIR importer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import UnsupportedError, node_error
from .base import SPIKING, make_preset, register

OPTIONS = {"norm_input": ((True, False), True),
           "spike_fn": (("MultiSpike", "SingleSpike"), "MultiSpike"),
           "reset_fn": (("MembraneSubtract", "MembraneReset"), "MembraneSubtract")}


def translate(o: Mapping[str, Any], node_type: str, where: str) -> dict:
    """What Sinabs' ``norm_input``, ``spike_fn`` and ``reset_fn`` mean for a node of ``node_type``."""
    out: dict[str, Any] = {}
    if node_type in ("LIF", "LI"):
        out["input_gain"] = "nir" if o["norm_input"] else "unit"
    if node_type in SPIKING:
        out["spikes"] = "count" if o["spike_fn"] == "MultiSpike" else "single"
        out["reset"] = "subtract" if o["reset_fn"] == "MembraneSubtract" else "zero"
    return out


def exported_here(node: Any, dt: float) -> bool:
    """Whether ``node`` has the parameters Sinabs' exporter writes for LIF / ExpLeak: ``r = 1``,
    ``v_leak = v_reset = 0``, ``tau`` counted in steps (at least one)."""
    p = node.params
    return (node.type in ("LIF", "LI") and all(np.all(np.asarray(p[f]) == 0) for f in ("v_leak", "v_reset") if f in p)
            and bool(np.allclose(np.asarray(p["r"], dtype=np.float64), 1.0, rtol=1e-5, atol=0))
            and bool(np.all(np.asarray(p["tau"], dtype=np.float64) >= dt)))


UNSTATED = (exported_here,
            "norm_input, spike_fn and reset_fn; simulating Sinabs' defaults norm_input=True, MultiSpike, "
            "MembraneSubtract. If the model used others: Dynamics.preset('sinabs', norm_input=False) (or "
            "spike_fn='SingleSpike', reset_fn='MembraneReset'; per layer: options={node: {...}})")

# sinabs.from_nir: LIF -> LIFSqueeze(tau_mem = tau, norm_input=False): v = a v + x with tau in steps,
# MultiSpike, MembraneSubtract; LI -> ExpLeakSqueeze (needs r = 1, v_leak = 0); Linear is not read,
# IF becomes IAFSqueeze(min_v_mem = -v_threshold), a clamp nirbridge does not model
def importer_check(node: str, node_type: str, p: Mapping[str, Any], dyn: Any) -> None:
    """``sinabs.from_nir`` tests ``if any(node.v_leak) != 0``: for a layer of more than one dimension
    (a LIF after a convolution) that raises inside Sinabs."""
    if np.ndim(p.get("v_leak", 0)) > 1:
        raise node_error(UnsupportedError, node, "v_leak",
                         f"has shape {np.shape(p['v_leak'])}; sinabs.from_nir reads only one-dimensional neuron "
                         "layers (its any(v_leak) test fails on a conv layer's parameters)",
                         "put the neurons after a Flatten, or simulate the model with nirbridge")


IMPORTER = dict(
    library="Sinabs 3.1.3 (sinabs.from_nir(graph, batch_size=...))",
    dynamics=dict(dt=1.0, method="exact", reset="subtract", threshold=">=", spikes="count",
                  synapse="current_first", input_gain="unit"),
    ignores={"LIF": ("r", "v_reset")},
    zero={"LIF": ("v_leak",), "LI": ("v_leak",)},
    check=importer_check,
    fixed_dt="its importer counts tau in steps (dt = 1)",
    recurrent=False,
    recurrent_why="its from_nir is not checked on recurrent graphs (Sinabs exports none)",
    types=("Input", "Output", "Affine", "Conv1d", "Conv2d", "Flatten", "SumPool2d", "LIF", "LI"),
)

PRESET = register(make_preset(
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
options=OPTIONS, translate=translate, unstated=UNSTATED, importer=IMPORTER,
))
