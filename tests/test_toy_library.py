"""A new library preset is one file: this one. It describes a toy SNN library "toylib" (its reading
of NIR, one option of its own, its exporter's quirk and the correction, its importer's reading)
as one :class:`nirbridge.presets.Preset`, registers it, and then ``Dynamics.preset``,
``import_graph``, the exporter-signature warning and ``export_graph`` know the library with no
other change to nirbridge.

The toy library simulates LIF neurons with forward Euler at dt = 1 ms, the spike test
``v >= v_threshold``, and its option ``reset_style``: "hard" (to v_reset, its default) or
"soft" (subtract v_threshold). Its exporter writes tau in milliseconds. The oracle is a plain
Python loop written from those rules below.
"""

from __future__ import annotations

import warnings

import nir
import numpy as np
import pytest

import nirbridge as nb
from nirbridge import presets
from nirbridge.errors import DynamicsError, UnsupportedError

# ------------------------------------------------------------------ the whole extension


def _translate(options, node_type, where):
    if node_type not in ("LIF", "IF", "CubaLIF"):
        return {}
    return {"reset": "zero" if options["reset_style"] == "hard" else "subtract"}


def _signature(step, d, tau, r):
    if np.any(tau >= 1.0):  # a time constant of a second or more: milliseconds, as toylib writes them
        return f"tau = {presets.base.short(tau)} looks like milliseconds. Fix: nb.presets.import_graph(path, 'toylib')"
    return None


def _import_fix(graph, dyn, export_dt):
    changes = {s.name: {"tau": (np.asarray(s.node.params["tau"]) / 1000).astype(np.asarray(s.node.params["tau"]).dtype)}
               for s in graph.plan.steps if s.node.type == "LIF"}
    return presets.base.apply_fixes(graph, changes, "toylib exporter correction (tau in ms -> s)")


NOTES = {aspect: "as the toy library does it" for aspect in presets.ASPECTS}

TOY = presets.make_preset(
    "toylib", "toylib 0.1", dict(dt=1e-3, method="euler", reset="zero", threshold=">=", synapse="current_first"),
    NOTES, "toylib.export(net)",
    options={"reset_style": (("hard", "soft"), "hard")}, translate=_translate,
    signature=_signature, import_fix=_import_fix,
    importer=dict(library="toylib 0.1 (toylib.load)", dynamics=dict(dt=1e-3, method="euler", reset="zero",
                                                                     threshold=">=", synapse="current_first"),
                  ignores={}, types=("Input", "Output", "Affine", "LIF")),
)


@pytest.fixture
def toylib():
    presets.register(TOY)
    yield TOY
    presets.unregister("toylib")


# ------------------------------------------------------------------ the oracle and a toylib export
TAU_MS = np.array([5.0, 8.0, 20.0], dtype=np.float32)
W = np.array([[1.0], [0.7], [1.3]], dtype=np.float32)
V_TH = np.array([1.0, 1.0, 1.0], dtype=np.float32)


def _toy_export() -> nir.NIRGraph:
    return nir.NIRGraph.from_list(
        nir.Affine(weight=W, bias=np.zeros(3, dtype=np.float32)),
        nir.LIF(tau=TAU_MS, r=TAU_MS / 1.0, v_leak=np.zeros(3, dtype=np.float32), v_threshold=V_TH,
                v_reset=np.zeros(3, dtype=np.float32)))


def _oracle(x: np.ndarray, style: str) -> np.ndarray:
    """The toy library's own loop in float64: tau in s = tau_ms / 1000, dt = 1 ms, r = tau / dt."""
    tau = TAU_MS.astype(np.float64) / 1000
    dt = 1e-3
    r = TAU_MS.astype(np.float64)  # the file's r, tau_ms / 1 ms: the Euler gain dt r / tau is 1
    v = np.zeros(3)
    out = []
    for t in range(x.shape[0]):
        i = W[:, 0].astype(np.float64) * x[t, 0, 0]
        v = v + dt / tau * (0 - v + r * i)
        z = v >= 1.0
        v = np.where(z, 0.0 if style == "hard" else v - 1.0, v)
        out.append(z.astype(np.float64))
    return np.array(out)


X = np.full((60, 1, 1), 0.4, dtype=np.float32)


# ------------------------------------------------------------------ the proof
def test_the_library_is_known_once_registered(toylib):
    assert "toylib" in presets.names()
    d = nb.Dynamics.preset("toylib", reset_style="soft")
    assert d.for_type("LIF").reset == "subtract" and d.for_type("LI").reset == "zero"
    with pytest.raises(DynamicsError, match="reset_style"):
        nb.Dynamics.preset("toylib", reset_style="sideways")
    with pytest.raises(DynamicsError, match=r"\['reset_style'\]"):
        nb.Dynamics.preset("toylib", reset_mode="soft")  # a misspelt option names the real one


@pytest.mark.parametrize("style", ["hard", "soft"])
@pytest.mark.parametrize("backend", ["reference", "jax", "torch"])
def test_import_graph_reproduces_the_toy_library(toylib, style, backend):
    with pytest.warns(presets.ExporterQuirkWarning, match="tau in ms"):
        g, dyn = presets.import_graph(_toy_export(), "toylib", reset_style=style)
    out = nb.simulate(g, X, dyn, backend=backend)["output"][:, 0, :]
    expected = _oracle(X, style)
    assert expected.sum() > 5  # the neurons fire: the comparison means something
    np.testing.assert_array_equal(out, expected)


def test_the_uncorrected_file_is_flagged_and_the_fix_works(toylib):
    g = nb.Graph.from_nir(_toy_export())
    with pytest.warns(presets.ExporterSignatureWarning, match="toylib.*milliseconds"):
        wrong = nb.simulate(g, X, nb.Dynamics.preset("toylib"))["output"][:, 0, :]
    assert not np.array_equal(wrong, _oracle(X, "hard"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", presets.ExporterQuirkWarning)
        g2, dyn = presets.import_graph(_toy_export(), "toylib")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the corrected graph gives no warning
        right = nb.simulate(g2, X, dyn)["output"][:, 0, :]
    np.testing.assert_array_equal(right, _oracle(X, "hard"))


def test_export_to_the_toy_importer(toylib):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", presets.ExporterQuirkWarning)
        g, dyn = presets.import_graph(_toy_export(), "toylib")
    same = presets.export_graph(g, dyn, "toylib")
    assert same.equals(g)  # the importer reads the toy library's own model as it is
    with pytest.raises(UnsupportedError, match="node 'lif', field 'reset'"):
        presets.export_graph(g, presets.get_preset("toylib").dynamics(reset_style="soft"), "toylib")


def test_unregistered_library_is_gone():
    assert "toylib" not in presets.names()
    with pytest.raises(DynamicsError, match="toylib"):
        nb.Dynamics.preset("toylib")
