"""Library options (Dynamics.preset / import_graph with a library's own option names), per-node
settings (Dynamics.by_node) and the exporter-signature warnings. The real libraries are checked in
tests/interop; here the oracle is the NumPy reference run layer by layer."""

from __future__ import annotations

import warnings

import nir
import numpy as np
import pytest

import nirbridge as nb
from nirbridge import presets
from nirbridge.errors import DynamicsError

rng = np.random.default_rng(0)
W1 = (rng.standard_normal((5, 4)) * 0.8 + 0.4).astype(np.float32)
W2 = (rng.standard_normal((3, 5)) * 0.8 + 0.5).astype(np.float32)
X = (rng.random((40, 2, 4)) < 0.4).astype(np.float32)


def _lif(n, tau=5e-4):
    return nir.LIF(tau=np.full(n, tau, np.float32), r=np.full(n, tau / 1e-4, np.float32),
                   v_leak=np.zeros(n, np.float32), v_threshold=np.full(n, 0.7, np.float32),
                   v_reset=np.zeros(n, np.float32))


def _layer(w):
    return nir.NIRGraph.from_list(nir.Linear(weight=w), _lif(w.shape[0]))


def _two_layers():
    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([4])), "w1": nir.Linear(weight=W1), "l1": _lif(5),
                            "w2": nir.Linear(weight=W2), "l2": _lif(3), "output": nir.Output(np.array([3]))},
                     edges=[("input", "w1"), ("w1", "l1"), ("l1", "w2"), ("w2", "l2"), ("l2", "output")])
    return nb.Graph.from_nir(g)


def test_by_node_matches_the_layers_run_one_by_one():
    g = _two_layers()
    g, dyn = presets.import_graph(g, "snntorch", options={"l1": {"reset_mechanism": "zero"}})
    out = nb.simulate(g, X, dyn, record=["l1"])
    # oracle: layer 1 alone with zero reset, its spikes into layer 2 alone with the default
    h = nb.simulate(nb.Graph.from_nir(_layer(W1)), X, nb.Dynamics.preset("snntorch", reset_mechanism="zero"))["output"]
    y = nb.simulate(nb.Graph.from_nir(_layer(W2)), h, nb.Dynamics.preset("snntorch", reset_mechanism="subtract"))
    assert h.sum() > 10 and y["output"].sum() > 10
    np.testing.assert_array_equal(out["l1"], h)
    np.testing.assert_array_equal(out["output"], y["output"])
    # and the one-setting readings differ from it
    for mech in ("zero", "subtract"):
        other = nb.simulate(g, X, nb.Dynamics.preset("snntorch", reset_mechanism=mech))["output"]
        assert int((other != out["output"]).sum()) > 0


def test_by_node_wins_over_by_type():
    d = nb.Dynamics(dt=1e-4, by_type={"LIF": {"reset": "subtract"}}, by_node={"l1": {"reset": "zero"}})
    assert d.for_node("l1", "LIF").reset == "zero"
    assert d.for_node("l2", "LIF").reset == "subtract"


def test_unknown_node_name_is_an_error_naming_the_nodes():
    d = nb.Dynamics(dt=1e-4, by_node={"lif1": {"reset": "zero"}})
    with pytest.raises(DynamicsError, match=r"\['lif1'\].*'l1'.*'l2'"):
        nb.simulate(_two_layers(), X, d)
    with pytest.raises(DynamicsError, match="not in the graph; its neurons: \\['l1', 'l2'\\]"):
        presets.import_graph(_two_layers(), "snntorch", options={"lif1": {"reset_mechanism": "zero"}})


def test_unknown_node_type_is_an_error_naming_the_types():
    with pytest.raises(DynamicsError, match="no node type 'lif'.*'LIF'"):
        nb.Dynamics(dt=1e-4, by_type={"lif": {"reset": "zero"}})


def test_unknown_library_option_names_the_options():
    with pytest.raises(DynamicsError, match="reset_mechanism.*reset_delay|reset_delay.*reset_mechanism"):
        nb.Dynamics.preset("snntorch", reset_mech="zero")
    with pytest.raises(DynamicsError, match="'MultiSpike', 'SingleSpike'"):
        nb.Dynamics.preset("sinabs", spike_fn="Spikey")
    with pytest.raises(DynamicsError, match="max_spikes_per_dt"):
        nb.Dynamics.preset("rockpool", max_spikes_per_dt=3)


def test_options_translate_to_the_documented_settings():
    z = nb.Dynamics.preset("snntorch", reset_mechanism="zero")
    assert (z.for_type("LIF").reset, z.for_type("LIF").reset_timing, z.for_type("LIF").stored_voltage) == \
        ("zero", "same", "pre")
    assert (z.for_type("CubaLIF").reset, z.for_type("CubaLIF").reset_timing) == ("zero", "late")
    s = nb.Dynamics.preset("sinabs", norm_input=False, spike_fn="SingleSpike", reset_fn="MembraneReset")
    lif = s.for_type("LIF")
    assert (lif.input_gain, lif.spikes, lif.reset) == ("unit", "single", "zero")
    stated = nb.Dynamics.preset("snntorch", reset_mechanism="subtract", reset_delay=True)
    assert stated == nb.Dynamics.preset("snntorch")


def test_preset_on_an_unstated_snntorch_file_warns_naming_the_option():
    g = _two_layers()
    with pytest.warns(presets.LostInformationWarning, match=r"\['l1', 'l2'\].*reset_mechanism='zero'"):
        nb.simulate(g, X, nb.Dynamics.preset("snntorch"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nb.simulate(g, X, nb.Dynamics.preset("snntorch", reset_mechanism="subtract"))
        nb.simulate(g, X, nb.Dynamics.preset("snntorch").replace(reset="zero", reset_timing="same"))  # a choice made
        nb.simulate(g, X, nb.Dynamics(dt=1e-4))  # plain Dynamics: no preset, no assumption


def test_implausible_euler_step_warns_naming_the_node():
    g = _two_layers()  # tau = 5e-4 s
    with pytest.warns(presets.ExporterSignatureWarning) as rec:
        nb.simulate(g, X, nb.Dynamics.preset("spikingjelly", dt=1e-3))
    text = [str(w.message) for w in rec]
    assert len(text) == 2 and all("dt/tau = 2 > 1" in t for t in text)
    assert "node 'l1'" in text[0] and "node 'l2'" in text[1]


def test_per_node_options_without_a_graph_need_one_meaning():
    # Leaky and Synaptic read reset_mechanism='zero' differently: without the graph the type is unknown
    with pytest.raises(DynamicsError, match="import_graph"):
        nb.Dynamics.preset("snntorch", options={"l1": {"reset_mechanism": "zero"}})
    d = nb.Dynamics.preset("sinabs", options={"l1": {"norm_input": False}})
    assert d.for_node("l1", "LIF").input_gain == "unit" and d.for_node("l2", "LIF").input_gain == "nir"


# ------------------------------------------------------------------ parameters the files drop (Norse v_reset)
def _norse_file():
    """The two-layer graph as Norse 1.1.0 writes it: tau = export_dt * tau_mem (export_dt 1e-3)."""
    g = _two_layers()
    return g.replace_params({n: {"tau": np.asarray(g.node(n).params["tau"]) * np.float32(1e-3)} for n in ("l1", "l2")})


@pytest.mark.filterwarnings("ignore::nirbridge.presets.ExporterQuirkWarning")
@pytest.mark.filterwarnings("ignore::nirbridge.presets.LostInformationWarning")  # the oracle, imported without v_reset
def test_a_parameter_option_is_written_into_the_graph_globally_or_per_node():
    g, dyn = presets.import_graph(_norse_file(), "norse", export_dt=1e-3, v_reset=-0.25)
    assert all(np.all(g.node(n).params["v_reset"] == np.float32(-0.25)) for n in ("l1", "l2"))
    assert g.node("l1").params["v_reset"].dtype == np.float32
    g2, _ = presets.import_graph(_norse_file(), "norse", export_dt=1e-3, options={"l2": {"v_reset": [0, 0, -1]}})
    np.testing.assert_array_equal(g2.node("l2").params["v_reset"], [0, 0, -1])
    np.testing.assert_array_equal(g2.node("l1").params["v_reset"], np.zeros(5))
    # the reference with the parameter set by hand is the oracle
    hand = presets.import_graph(_norse_file(), "norse", export_dt=1e-3)[0].replace_params(
        {"l2": {"v_reset": np.array([0, 0, -1], np.float32)}})
    want = nb.simulate(hand, X, dyn)["output"]
    assert want.sum() > 5
    np.testing.assert_array_equal(nb.simulate(g2, X, dyn)["output"], want)


@pytest.mark.filterwarnings("ignore::nirbridge.presets.ExporterQuirkWarning")
@pytest.mark.filterwarnings("ignore::nirbridge.presets.LostInformationWarning")
def test_a_parameter_option_errors_name_the_fix():
    with pytest.raises(DynamicsError, match=r"parameter of the graph.*import_graph\(path, 'norse', v_reset=\.\.\.\)"):
        nb.Dynamics.preset("norse", v_reset=-0.2)
    with pytest.raises(DynamicsError, match=r"options\['w1'\] sets v_reset, which Linear nodes do not have"):
        presets.import_graph(_norse_file(), "norse", export_dt=1e-3, options={"w1": {"v_reset": -0.2}})
    with pytest.raises(nb.errors.ParameterError, match=r"v_reset='low' for node 'l1' is not a number"):
        presets.import_graph(_norse_file(), "norse", export_dt=1e-3, v_reset="low")
    with pytest.raises(DynamicsError, match=r"'l9'"):
        presets.import_graph(_norse_file(), "norse", export_dt=1e-3, options={"l9": {"v_reset": -0.2}})
