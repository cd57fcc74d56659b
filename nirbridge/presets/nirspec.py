"""The NIR specification itself: forward Euler of the equations as written, reset to v_reset."""

from __future__ import annotations

from .base import make_preset, register

PRESET = register(make_preset(
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
