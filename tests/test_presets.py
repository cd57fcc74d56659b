"""Library presets, the Dynamics settings they need, exporter corrections and lenient loading.

No third-party SNN library is needed here (tests/interop/ runs the real ones). Every setting is
checked in float64 against a sequence written out by hand in the test from the equations in
``nirbridge/dynamics.py``, never against the simulator itself; those loops compute the same
operations in the same order, so they agree to a few ulps (atol 1e-12 over <= 20 steps of
values of order 1). The NIR paper's golden trace checks the Norse preset end to end.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nir
import numpy as np
import pytest

import nirbridge as nb
from nirbridge import examples, presets
from nirbridge.errors import DynamicsError, ParameterError, ShapeError, UnsupportedError
from nirbridge.repair import NirBridgeWarning, RepairWarning

DATA = Path(__file__).parent / "data"
ATOL = 1e-12


def _graph(node, n_in=None, w=None, b=None):
    n = np.size(getattr(node, "v_threshold", getattr(node, "tau", 1)))
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in or n])}), "n": node,
             "output": nir.Output(output_type={"output": np.array([n])})}
    edges = [("input", "n"), ("n", "output")]
    if w is not None:
        nodes["fc"] = nir.Affine(weight=w, bias=b) if b is not None else nir.Linear(weight=w)
        edges = [("input", "fc"), ("fc", "n"), ("n", "output")]
    return nb.Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))


def _lif(tau=0.5e-3, r=1.0, v_leak=0.0, thr=1.0, v_reset=0.0):
    a = lambda v: np.array([v], dtype=np.float64)  # noqa: E731
    return nir.LIF(tau=a(tau), r=a(r), v_leak=a(v_leak), v_threshold=a(thr), v_reset=a(v_reset))


def _run(g, x, dyn, backend="reference"):
    out = nb.simulate(g, np.asarray(x, np.float64).reshape(-1, 1, 1), dyn, backend=backend,
                      record=[("n", "v")], dtype="float64")
    return out["output"][:, 0, 0], out[("n", "v")][:, 0, 0]


# ------------------------------------------------------------------ acceptance: the NIR paper LIF
@pytest.mark.parametrize("backend", ["reference", "jax", "torch"])
def test_paper_lif_norse_with_the_norse_preset(backend):
    """Dynamics.preset("norse", dt=1e-4) on the paper's lif_norse.nir reproduces lif_norse.csv
    (Norse's own run). The file holds tau = 2.5e-3 s: Norse's LIFBoxCell(tau_mem_inv=400) in
    seconds. It predates Norse 1.1.0's exporter, which would have written dt * tau_mem = 2.5e-7
    (norse#411): so this file needs no import_graph, and import_graph refuses it (see
    tests/interop/test_norse.py). Norse starts at v_leak = 0 and reports the voltage after the
    reset, as the csv holds (0 at each spike step)."""
    if backend != "reference":
        pytest.importorskip(backend)
    d = np.loadtxt(DATA / "lif_norse.csv", delimiter=",")
    g = nb.load(examples.path("lif_norse"))
    assert float(g.plan["1"].node.params["tau"][0]) == pytest.approx(2.5e-3)
    dyn = nb.Dynamics.preset("norse", dt=1e-4)
    out = nb.simulate(g, d[:, 0].reshape(-1, 1, 1), dyn, backend=backend, record=[("1", "v")])
    z, v = out["output"][:, 0, 0], out[("1", "v")][:, 0, 0]
    assert np.flatnonzero(z).tolist() == [460, 510, 710, 760]
    np.testing.assert_array_equal(z, d[:, 2])
    # Norse computed in float32, as here: measured 4e-9; the float32 ulp at 0.1 is 7.5e-9
    np.testing.assert_allclose(v, d[:, 1], rtol=0, atol=1e-6)


# ------------------------------------------------------------------ presets
def test_every_preset_documents_every_aspect_and_builds():
    assert set(presets.names()) >= {"nir", "snntorch", "norse", "sinabs", "spikingjelly", "spyx"}
    for name in presets.names():
        p = presets.get_preset(name)
        assert set(p.notes) == set(presets.ASPECTS), name
        assert all(isinstance(t, str) and t for t in p.notes.values())
        if name == "nir":
            with pytest.raises(DynamicsError, match="dt"):
                nb.Dynamics.preset(name)
            d = nb.Dynamics.preset(name, dt=1e-3)
        else:
            d = nb.Dynamics.preset(name)
        assert isinstance(d, nb.Dynamics) and eval(repr(d), {"Dynamics": nb.Dynamics}) == d


def test_preset_settings_and_overrides():
    assert nb.Dynamics.preset("norse", dt=1e-4).dt == 1e-4
    assert nb.Dynamics.preset("norse").dt == 1e-3
    assert nb.Dynamics.preset("snntorch").dt == 1e-4
    s = nb.Dynamics.preset("snntorch")
    assert (s.reset, s.reset_timing, s.stored_voltage, s.threshold, s.recurrent_start) == (
        "subtract", "late", "pre", ">", "rest")
    sj = nb.Dynamics.preset("spikingjelly")
    assert (sj.threshold, sj.v_init, sj.reset) == (">=", "v_reset", "zero")
    si = nb.Dynamics.preset("sinabs")
    assert (si.dt, si.method, si.spikes, si.threshold) == (1.0, "exact", "count", ">=")
    sp = nb.Dynamics.preset("spyx", dt=1e-3)
    assert sp.for_type("CubaLIF").reset_timing == "same" and sp.for_type("LIF").reset_timing == "late"
    assert (sp.output_delay, sp.input_gain, sp.stored_voltage) == (1, "unit", "pre")
    rp = nb.Dynamics.preset("rockpool")
    assert (rp.dt, rp.method, rp.spikes, rp.threshold, rp.reset, rp.synapse) == (
        1e-3, "exact", "count", ">=", "subtract", "current_first")
    with pytest.raises(DynamicsError, match="known presets"):
        nb.Dynamics.preset("brian2")


def test_default_dynamics_unchanged():
    d = nb.Dynamics(dt=1e-4)
    assert repr(d) == "Dynamics(dt=0.0001, method='euler', reset='zero', threshold='>', synapse='simultaneous')"
    assert (d.reset_timing, d.stored_voltage, d.output_delay, d.spikes, d.v_init, d.recurrent_start,
            d.input_gain, d.by_type) == ("same", "post", 0, "single", "zero", "zero", "nir", ())


@pytest.mark.parametrize("kw, match", [
    (dict(reset_timing="late", voltage="post"), "voltage='post'"),
    (dict(spikes="many"), "spikes"),
    (dict(output_delay=2), "output_delay"),
    (dict(output_delay=True), "output_delay"),
    (dict(v_init="v_threshold"), "v_init"),
    (dict(recurrent_start="bias"), "recurrent_start"),
    (dict(input_gain=1.0), "input_gain"),
    (dict(by_type={"LIF": {"dt": 1.0}}), "cannot differ per node type"),
    (dict(by_type={"LIF": {"reset": "none"}}), "by_type"),
    (dict(by_type=["LIF"]), "by_type"),
])
def test_new_settings_are_validated(kw, match):
    with pytest.raises(DynamicsError, match=match):
        nb.Dynamics(dt=1e-3, **kw)


# ------------------------------------------------------------------ each setting against hand-written loops
X5 = [1.5, 0.0, 0.9, 0.0, 0.0, 2.5, 0.0, 0.3, 1.2, 0.0, 0.0, 0.7]


def _hand_lif(x, *, k, thr=1.0, gain=1.0, v0=0.0, v_leak=0.0, v_reset=0.0, reset="subtract", timing="same",
              voltage="post", cmp=">", count=False):
    """LIF from the equations in nirbridge/dynamics.py, written out."""
    v, vs, zs = v0, [], []
    fire = (lambda u: u > thr) if cmp == ">" else (lambda u: u >= thr)

    def n_of(u):
        if not fire(u):
            return 0.0
        return float(np.floor(u / thr)) if count else 1.0

    def reset_of(u, n):
        if n == 0:
            return u
        return v_reset if reset == "zero" else u - n * thr

    for xt in x:
        if voltage == "post":
            u = v + k * (v_leak - v) + gain * xt
            n = n_of(u)
            v = reset_of(u, n)
            zs.append(n)
            vs.append(v)
        else:
            n_prev = n_of(v)
            if timing == "same":
                base = reset_of(v, n_prev)
                u = base + k * (v_leak - base) + gain * xt
            else:
                u = v + k * (v_leak - v) + gain * xt
                u = reset_of(u, n_prev) if reset == "subtract" else (v_reset if n_prev else u)
            v = u
            zs.append(n_of(v))
            vs.append(v)
    return np.array(zs), np.array(vs)


@pytest.mark.parametrize("backend", ["reference", "jax", "torch"])
@pytest.mark.parametrize("case", ["late_subtract", "late_zero", "pre_same_subtract", "pre_same_zero", "count",
                                  "count_strict", "v_leak_start", "unit_gain"])
def test_lif_settings_against_hand_loops(case, backend):
    if backend != "reference":
        pytest.importorskip(backend)
    dt, tau = 1e-4, 4e-4  # k = 0.25
    base = dict(k=0.25)
    kw, dyn_kw, node_kw = {}, {}, {}
    if case == "late_subtract":
        kw, dyn_kw = dict(reset="subtract", timing="late", voltage="pre"), dict(reset="subtract", reset_timing="late")
    elif case == "late_zero":
        kw = dict(reset="zero", timing="late", voltage="pre", v_reset=-0.2)
        dyn_kw, node_kw = dict(reset="zero", reset_timing="late"), dict(v_reset=-0.2)
    elif case == "pre_same_subtract":
        kw, dyn_kw = dict(reset="subtract", voltage="pre"), dict(reset="subtract", voltage="pre")
    elif case == "pre_same_zero":
        kw, dyn_kw = dict(reset="zero", voltage="pre"), dict(reset="zero", voltage="pre")
    elif case == "count":
        kw = dict(reset="subtract", count=True, cmp=">=", thr=0.5)
        dyn_kw, node_kw = dict(reset="subtract", spikes="count", threshold=">="), dict(thr=0.5)
    elif case == "count_strict":  # '>': max(ceil(v/thr) - 1, 1) thresholds strictly below v
        dyn_kw, node_kw = dict(reset="subtract", spikes="count", threshold=">"), dict(thr=0.5)
        kw = None
    elif case == "v_leak_start":
        kw, dyn_kw, node_kw = dict(v0=0.3, v_leak=0.3, reset="zero"), dict(v_init="v_leak"), dict(v_leak=0.3)
    elif case == "unit_gain":  # r = 7 is ignored: the input enters unscaled
        kw, dyn_kw, node_kw = dict(gain=1.0, reset="zero"), dict(input_gain="unit"), dict(r=7.0)
    g = _graph(_lif(tau=tau, **node_kw))
    x = np.array(X5) if case == "unit_gain" else 4 * np.array(X5)  # k r = 0.25: the same drive
    if kw is None:  # count_strict, by hand (thr 0.5): v = 1.5 holds 2 thresholds strictly below it, v = 1.0 one
        z, v = _run(g, [6.0, 0.0, 4.0], nb.Dynamics(dt=dt, **dyn_kw), backend)
        assert z.tolist() == [2.0, 0.0, 2.0]  # step 2: v = 0.375 * 0.75 + 1.0 = 1.28125
        np.testing.assert_allclose(v, [0.5, 0.375, 0.28125], rtol=0, atol=ATOL)
        return
    z, v = _run(g, x, nb.Dynamics(dt=dt, **dyn_kw), backend)
    kw.setdefault("gain", 1.0 if case == "unit_gain" else 0.25)
    zh, vh = _hand_lif(x, **{**base, **kw})
    assert zh.sum() > 0
    np.testing.assert_array_equal(z, zh)
    np.testing.assert_allclose(v, vh, rtol=0, atol=ATOL)


def test_late_reset_differs_from_same_step_by_the_decay():
    """snnTorch's late subtraction is not multiplied by beta: one spike, then no input."""
    g = _graph(_lif(tau=2e-4))  # k = 0.5
    x = [2.5, 0, 0]  # v = 1.25 > 1: spike at step 0
    _, v_late = _run(g, x, nb.Dynamics(dt=1e-4, reset="subtract", reset_timing="late"))
    _, v_same = _run(g, x, nb.Dynamics(dt=1e-4, reset="subtract", voltage="pre"))
    assert v_late.tolist() == [1.25, 1.25 * 0.5 - 1.0, (1.25 * 0.5 - 1.0) * 0.5]
    assert v_same.tolist() == [1.25, (1.25 - 1.0) * 0.5, (1.25 - 1.0) * 0.25]


def test_cubalif_unit_gain_and_late_reset():
    """Spyx-like CubaLIF: i = a_s i + x, v = a_m v + i (r, w_in ignored), by hand."""
    node = nir.CubaLIF(tau_syn=np.array([2e-4]), tau_mem=np.array([4e-4]), r=np.array([3.0]),
                       w_in=np.array([5.0]), v_leak=np.array([0.0]), v_threshold=np.array([1.0]),
                       v_reset=np.array([0.0]))
    g = _graph(node)
    dyn = nb.Dynamics(dt=1e-4, synapse="current_first", input_gain="unit", reset="subtract", voltage="pre")
    out = nb.simulate(g, np.array(X5).reshape(-1, 1, 1), dyn, record=[("n", "v"), ("n", "i")], dtype="float64")
    i, v, vs, zs, is_ = 0.0, 0.0, [], [], []
    for xt in X5:
        z_prev = float(v > 1.0)
        v = v - z_prev
        i = i - 0.5 * i + xt
        v = v - 0.25 * v + i
        vs.append(v), zs.append(float(v > 1.0)), is_.append(i)
    np.testing.assert_array_equal(out["output"][:, 0, 0], zs)
    np.testing.assert_allclose(out[("n", "v")][:, 0, 0], vs, rtol=0, atol=ATOL)
    np.testing.assert_allclose(out[("n", "i")][:, 0, 0], is_, rtol=0, atol=ATOL)


@pytest.mark.parametrize("backend", ["reference", "jax", "torch"])
def test_output_delay_delays_forward_edges_not_the_own_loop(backend):
    """Input -> fc -> lif -> out, lif -> w_rec -> lif. With output_delay=1 the output is the spike of
    the previous step, while the loop still feeds back the previous step's spike (not older)."""
    if backend != "reference":
        pytest.importorskip(backend)
    lif = nir.LIF(tau=np.array([1e-4, 1e-4]), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2),
                  v_reset=np.zeros(2))
    w_rec = np.array([[0.0, 0.0], [2.0, 0.0]])  # neuron 0's spike drives neuron 1 (k = 1: v = x)
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}), "lif": lif,
             "w": nir.Linear(weight=w_rec), "output": nir.Output(output_type={"output": np.array([2])})}
    g = nb.Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=[("input", "lif"), ("lif", "w"), ("w", "lif"),
                                                           ("lif", "output")], type_check=False))
    x = np.zeros((5, 1, 2))
    x[0, 0, 0] = 2.0
    plain = nb.simulate(g, x, nb.Dynamics(dt=1e-4), backend=backend, record=["lif"])
    late = nb.simulate(g, x, nb.Dynamics(dt=1e-4, output_delay=1), backend=backend, record=["lif"])
    # neuron 0 spikes at 0, its spike reaches neuron 1 through the loop at step 1
    assert plain["output"][:, 0].tolist() == [[1, 0], [0, 1], [0, 0], [0, 0], [0, 0]]
    assert late["output"][:, 0].tolist() == [[0, 0], [1, 0], [0, 1], [0, 0], [0, 0]]  # one step later
    # the node is recorded as its spike leaves it (what Spyx's layer returns): the output's spikes
    np.testing.assert_array_equal(late["lif"], late["output"])


@pytest.mark.parametrize("backend", ["reference", "jax", "torch"])
def test_recurrent_start_rest_gives_the_bias_at_step_0(backend):
    if backend != "reference":
        pytest.importorskip(backend)
    lif = nir.LIF(tau=np.array([1e-4]), r=np.ones(1), v_leak=np.zeros(1), v_threshold=np.array([10.0]),
                  v_reset=np.zeros(1))
    nodes = {"input": nir.Input(input_type={"input": np.array([1])}), "lif": lif,
             "w": nir.Affine(weight=np.array([[1.0]]), bias=np.array([0.25])),
             "output": nir.Output(output_type={"output": np.array([1])})}
    g = nb.Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=[("input", "lif"), ("lif", "w"), ("w", "lif"),
                                                           ("lif", "output")], type_check=False))
    x = np.zeros((3, 1, 1))
    v0 = nb.simulate(g, x, nb.Dynamics(dt=1e-4), backend=backend, record=[("lif", "v")],
                     dtype="float64")[("lif", "v")]
    v1 = nb.simulate(g, x, nb.Dynamics(dt=1e-4, recurrent_start="rest"), backend=backend, record=[("lif", "v")],
                     dtype="float64")[("lif", "v")]
    assert v0[:, 0, 0].tolist() == [0.0, 0.25, 0.25]  # k = 1: v = input of the step; zeros at step 0
    assert v1[:, 0, 0].tolist() == [0.25, 0.25, 0.25]


# ------------------------------------------------------------------ import_graph / export_graph
def _norse_like_file():
    lif = nir.LIF(tau=np.array([5e-6, 1e-5], np.float32), r=np.ones(2, np.float32), v_leak=np.zeros(2, np.float32),
                  v_threshold=np.full(2, 0.3, np.float32), v_reset=np.zeros(2, np.float32))
    return _graph(lif)


def test_import_graph_norse_corrects_tau_and_warns_once_per_node():
    g = _norse_like_file()
    with pytest.warns(NirBridgeWarning) as rec:
        new, dyn = presets.import_graph(g, "norse", export_dt=1e-3)
    quirks = [r for r in rec if r.category is presets.ExporterQuirkWarning]
    assert len(quirks) == 1 and "node 'n'" in str(quirks[0].message) and "tau" in str(quirks[0].message)
    lost = [r for r in rec if r.category is presets.LostInformationWarning]
    assert len(lost) == 1 and "v_reset" in str(lost[0].message)
    np.testing.assert_allclose(new.plan["n"].node.params["tau"], [5e-3, 1e-2], rtol=1e-6)
    assert g.plan["n"].node.params["tau"][0] == np.float32(5e-6)  # the input graph is unchanged
    assert dyn == nb.Dynamics.preset("norse")
    with pytest.raises(DynamicsError, match="export_dt"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        presets.import_graph(g, "norse")


def test_import_graph_refuses_a_tau_already_in_seconds():
    with pytest.raises(ParameterError, match=r"node '1', field 'tau'.*seconds"):
        presets.import_graph(nb.load(examples.path("lif_norse")), "norse", export_dt=1e-3)


def test_export_graph_refuses_with_node_and_setting():
    g = _graph(_lif(tau=1e-3))
    with pytest.raises(UnsupportedError, match=r"node 'n', field 'reset_timing'"):
        presets.export_graph(g, "snntorch", "norse")
    with pytest.raises(UnsupportedError, match="spikes"):
        presets.export_graph(g, nb.Dynamics.preset("sinabs", reset="zero", threshold=">", method="euler",
                                                   synapse="current_first", v_init="v_leak"), "norse")
    with pytest.raises(UnsupportedError, match="supported targets"):
        presets.export_graph(g, "norse", "brian2")
    with pytest.raises(UnsupportedError, match="v_reset"):
        presets.export_graph(_graph(_lif(v_reset=-0.1)), "norse", "norse")


def test_export_graph_rescales_tau_and_folds_r_into_the_affine():
    """snnTorch-like LIF (dt 1e-4, r = 1/(1-beta)) rewritten for Norse's importer (dt 1e-3, r
    ignored): nirbridge's reading of the result with Norse's importer settings gives the same spikes."""
    w = np.array([[0.6, -0.2, 0.9]])
    g = _graph(_lif(tau=1e-4 / 0.2, r=5.0, thr=1.0), n_in=3, w=w, b=np.array([0.05]))
    src = nb.Dynamics.preset("snntorch", reset="zero", reset_timing="same", voltage="pre")
    with pytest.warns(presets.ExporterQuirkWarning):
        out = presets.export_graph(g, src, "norse")
    assert out.plan["n"].node.params["tau"][0] == pytest.approx(5e-3)
    assert out.plan["n"].node.params["r"][0] == 1.0
    np.testing.assert_allclose(out.plan["fc"].node.params["weight"], w * 5.0)
    x = (np.random.default_rng(0).random((40, 2, 3)) < 0.4).astype(np.float64)
    a = nb.simulate(g, x, src, dtype="float64")["output"]
    b = nb.simulate(out, x, nb.Dynamics(**presets.IMPORTERS["norse"]["dynamics"]), dtype="float64")["output"]
    assert a.sum() > 5
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ Rockpool: dt inside r
def _rockpool_like(dt, node="LIF"):
    """A neuron as Rockpool 3.1.0's exporter writes it: r = (tau/dt) exp(-dt/tau), w_in = 1 (float64)."""
    tau = np.array([5e-3, 2e-2]) * (dt / 1e-3)
    r = tau / dt * np.exp(-dt / tau)
    z = np.zeros(2)
    if node == "LIF":
        return _graph(nir.LIF(tau=tau, r=r, v_leak=z, v_threshold=np.full(2, 0.5), v_reset=z)), tau
    tau_syn = tau / 2
    return _graph(nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau, r=r, v_leak=z, v_threshold=np.full(2, 0.5), v_reset=z,
                              w_in=np.ones(2))), (tau_syn, tau)


@pytest.mark.parametrize("dt", [1e-3, 5e-4, 1.0])
def test_import_graph_rockpool_reads_dt_from_r_and_sets_exact_gains(dt):
    """LIFNeuronTorch: v = a v + x, a = exp(-dt/tau), floor(v/thr) spikes where v >= thr, subtracted."""
    g, tau = _rockpool_like(dt)
    with pytest.warns(NirBridgeWarning) as rec:
        new, dyn = presets.import_graph(g, "rockpool")
    quirks = [r for r in rec if r.category is presets.ExporterQuirkWarning]
    assert len(quirks) == 1 and "node 'n'" in str(quirks[0].message) and f"dt = {dt:g} read from r" in str(
        quirks[0].message)
    assert dyn == nb.Dynamics.preset("rockpool", dt=dt)
    a = np.exp(-dt / tau)
    np.testing.assert_allclose(new.plan["n"].node.params["r"], 1 / (1 - a), rtol=1e-14)
    x = 0.8 * np.array(X5)
    out = nb.simulate(new, np.stack([x, x], 1)[:, None, :], dyn, record=[("n", "v")], dtype="float64")
    for j in range(2):
        zh, vh = _hand_lif(x, k=1 - a[j], gain=1.0, thr=0.5, cmp=">=", count=True)
        assert zh.max() >= 2  # several spikes in a step
        np.testing.assert_array_equal(out["output"][:, 0, j], zh)
        np.testing.assert_allclose(out[("n", "v")][:, 0, j], vh, rtol=0, atol=ATOL)


def test_import_graph_rockpool_cubalif_current_decays_with_its_input():
    """LIFTorch: i = a_s (i + x), v = a_m v + i: w_in = a_s/(1 - a_s) and r = 1/(1 - a_m) with the
    exact current-first update give exactly that."""
    dt = 1e-3
    g, (tau_s, tau_m) = _rockpool_like(dt, "CubaLIF")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new, dyn = presets.import_graph(g, "rockpool")
    a_s, a_m = np.exp(-dt / tau_s), np.exp(-dt / tau_m)
    x = 0.3 * np.array(X5)
    out = nb.simulate(new, np.stack([x, x], 1)[:, None, :], dyn, record=[("n", "v"), ("n", "i")], dtype="float64")
    for j in range(2):
        i = v = 0.0
        for t, xt in enumerate(x):
            i = a_s[j] * (i + xt)
            v = a_m[j] * v + i
            n = np.floor(v / 0.5) if v >= 0.5 else 0.0
            v -= n * 0.5
            assert out["output"][t, 0, j] == n
            assert abs(out[("n", "v")][t, 0, j] - v) < ATOL and abs(out[("n", "i")][t, 0, j] - i) < ATOL
    assert out["output"].sum() > 0


def test_import_graph_rockpool_refuses_what_rockpool_does_not_write():
    g, _ = _rockpool_like(1e-3)
    with pytest.raises(ParameterError, match=r"node 'n', field 'r'.*dt = 0.001.*not dt=0.0001"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        presets.import_graph(g, "rockpool", dt=1e-4)
    # a graph with r = 1 (no Rockpool file): the neurons' r say different dts
    with pytest.raises(ParameterError, match="across its neurons"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        presets.import_graph(_graph(nir.LIF(tau=np.array([1e-3, 2e-3]), r=np.ones(2), v_leak=np.zeros(2),
                                            v_threshold=np.ones(2), v_reset=np.zeros(2))), "rockpool")


# ------------------------------------------------------------------ Spyx: channels-last Flatten
def test_import_graph_spyx_reorders_the_columns_after_a_channels_last_flatten():
    """Spyx flattens (H, W, C); the file's Flatten is NIR's (C, H, W): the Affine's column for
    (c, h, w) must be the one Spyx wrote for (h, w, c)."""
    c, h, w = 3, 2, 2
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((2, c * h * w))
    nodes = {"input": nir.Input(input_type={"input": np.array([c, h, w])}),
             "flat": nir.Flatten(input_type={"input": np.array([c, h, w])}, start_dim=0, end_dim=-1),
             "fc": nir.Affine(weight=weight, bias=np.zeros(2)),
             "output": nir.Output(output_type={"output": np.array([2])})}
    g = nb.Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=[("input", "flat"), ("flat", "fc"), ("fc", "output")],
                                       type_check=False))
    with pytest.warns(presets.ExporterQuirkWarning, match=r"node 'fc'.*channels-last"):
        new, dyn = presets.import_graph(g, "spyx", dt=1.0)
    x = rng.standard_normal((1, 1, c, h, w))
    spyx_out = weight @ x[0, 0].transpose(1, 2, 0).reshape(-1)  # what Spyx computes: flatten (h, w, c)
    out = nb.simulate(new, x, dyn, dtype="float64")["output"][0, 0]
    np.testing.assert_allclose(out, spyx_out, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ export for Sinabs
def test_export_graph_for_sinabs_folds_the_exact_gain_and_counts_tau_in_steps():
    """A LIF with an exact-update gain (1 - a) r = 0.6 per neuron, written for Sinabs' importer
    (tau in steps, v = a v + x): the gain moves into the Affine, r := 1, and nirbridge's reading of
    the result with Sinabs' importer settings gives the same spike counts."""
    dt, tau = 1e-3, np.array([4e-3, 1e-2])
    a = np.exp(-dt / tau)
    lif = nir.LIF(tau=tau, r=0.6 / (1 - a), v_leak=np.zeros(2), v_threshold=np.full(2, 0.5), v_reset=np.zeros(2))
    w = np.array([[0.6, -0.2, 0.9], [0.3, 0.8, -0.1]])
    g = _graph(lif, n_in=3, w=w, b=np.array([0.05, 0.0]))
    src = nb.Dynamics.preset("rockpool")
    with pytest.warns(presets.ExporterQuirkWarning):
        out = presets.export_graph(g, src, "sinabs")
    np.testing.assert_allclose(out.plan["n"].node.params["tau"], tau / dt, rtol=1e-12)
    np.testing.assert_array_equal(out.plan["n"].node.params["r"], [1.0, 1.0])
    np.testing.assert_allclose(out.plan["fc"].node.params["weight"], w * 0.6, rtol=1e-12)
    x = (np.random.default_rng(0).random((40, 2, 3)) < 0.5).astype(np.float64) * 2
    ref = nb.simulate(g, x, src, dtype="float64")["output"]
    got = nb.simulate(out, x, nb.Dynamics(**presets.IMPORTERS["sinabs"]["dynamics"]), dtype="float64")["output"]
    assert ref.max() >= 2
    np.testing.assert_array_equal(got, ref)
    with pytest.raises(UnsupportedError, match=r"node 'n', field 'threshold'"):
        presets.export_graph(g, src.replace(threshold=">"), "sinabs")
    with pytest.raises(UnsupportedError, match=r"node 'n', field 'method'"):
        presets.export_graph(g, "snntorch", "sinabs")


# ------------------------------------------------------------------ export for Rockpool, Spyx, SpikingJelly
@pytest.mark.filterwarnings("ignore::nirbridge.presets.LostInformationWarning")  # the bias Rockpool's files lack
def test_export_graph_for_rockpool_writes_the_dt_its_importer_reads_and_reads_back():
    """A Rockpool-like CubaLIF (exact gains after import_graph) written for Rockpool's from_nir: it
    takes dt = min(tau_mem/(1 + r)), so r = tau_mem/dt - 1 and w_in = 1; import_graph reads that
    file's dt back and the spikes are the source's (float64, the same update)."""
    dt, tm, ts = 1e-3, np.array([5e-3, 2e-2]), np.array([2e-3, 4e-3])
    am, as_ = np.exp(-dt / tm), np.exp(-dt / ts)
    z = np.zeros(2)
    cuba = nir.CubaLIF(tau_syn=ts, tau_mem=tm, r=1 / (1 - am), w_in=0.7 * as_ / (1 - as_), v_leak=z,
                       v_threshold=np.full(2, 0.5), v_reset=z)
    w = np.array([[0.6, -0.2, 0.9], [0.3, 0.8, -0.1]])
    g = _graph(cuba, n_in=3, w=w, b=np.array([0.05, 0.0]))
    with pytest.warns(presets.ExporterQuirkWarning, match="from_nir"):
        out = presets.export_graph(g, "rockpool", "rockpool")
    p = out.plan["n"].node.params
    np.testing.assert_allclose(p["tau_mem"] / (1 + p["r"]), dt, rtol=1e-12)
    np.testing.assert_array_equal(p["w_in"], [1.0, 1.0])
    np.testing.assert_allclose(out.plan["fc"].node.params["weight"], w * 0.7, rtol=1e-12)  # w_in's gain 0.7
    with pytest.warns(presets.ExporterQuirkWarning, match="dt = 0.001 read from r"):
        back, dyn = presets.import_graph(out, "rockpool")
    assert dyn.dt == dt
    x = (np.random.default_rng(0).random((60, 2, 3)) < 0.5).astype(np.float64) * 2
    ref = nb.simulate(g, x, nb.Dynamics.preset("rockpool"), dtype="float64")["output"]  # no signature warning
    got = nb.simulate(back, x, dyn, dtype="float64")["output"]
    assert ref.sum() > 10
    np.testing.assert_array_equal(got, ref)
    # the written file simulated with the preset alone is not silently wrong
    with pytest.warns(presets.ExporterSignatureWarning, match=r"tau/dt - 1 .*import_graph\(path, 'rockpool'\)"):
        wrong = nb.simulate(out, x, nb.Dynamics.preset("rockpool"), dtype="float64")["output"]
    assert int((wrong != ref).sum()) > 0
    with pytest.raises(UnsupportedError, match=r"node 'n', field 'type'.*tau_mem"):
        presets.export_graph(_graph(_lif(tau=5e-3)), "rockpool", "rockpool")


@pytest.mark.filterwarnings("ignore::nirbridge.presets.LostInformationWarning")
@pytest.mark.filterwarnings("ignore::nirbridge.presets.ExporterQuirkWarning")
def test_a_file_written_for_rockpool_is_marked_and_read_back_at_any_dt(tmp_path):
    """The neuron's metadata marks a file written for Rockpool's importer: it survives save/load, so
    import_graph reads the dt back even where it is not round, and the preset alone warns; a plain
    LIF or CubaLIF whose r happens to fit one dt is not taken for such a file."""
    dt, tm, ts = 1.234e-3, np.array([5e-3, 2e-2]), np.array([2e-3, 4e-3])
    z = np.zeros(2)
    cuba = nir.CubaLIF(tau_syn=ts, tau_mem=tm, r=-1 / np.expm1(-dt / tm), w_in=1 / np.expm1(dt / ts), v_leak=z,
                       v_threshold=np.full(2, 0.5), v_reset=z)
    g = _graph(cuba, n_in=3, w=np.array([[0.6, -0.2, 0.9], [0.3, 0.8, -0.1]]), b=np.zeros(2))
    src = nb.Dynamics.preset("rockpool", dt=dt)
    nb.save(presets.export_graph(g, src, "rockpool", dt=dt), tmp_path / "f.nir")
    back, dyn = presets.import_graph(tmp_path / "f.nir", "rockpool")
    assert dyn.dt == pytest.approx(dt, rel=1e-6)
    x = (np.random.default_rng(1).random((60, 2, 3)) < 0.5).astype(np.float64) * 2
    want = nb.simulate(g, x, src, dtype="float64")["output"]
    assert want.sum() > 10
    np.testing.assert_array_equal(nb.simulate(back, x, dyn, dtype="float64")["output"], want)
    with pytest.warns(presets.ExporterSignatureWarning, match="tau/dt - 1"):
        nb.simulate(nb.load(tmp_path / "f.nir"), x, src, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("error", presets.ExporterSignatureWarning)
        nb.simulate(back, x, dyn, dtype="float64")  # the corrected graph is no longer marked
        for lif in (_lif(tau=0.01, r=1.0), _lif(tau=0.004, r=3.0)):  # tau/(1 + r) = 5e-3 and 1e-3: not such a file
            nb.simulate(_graph(lif), np.ones((5, 1, 1)), nb.Dynamics.preset("rockpool"), dtype="float64")


@pytest.mark.filterwarnings("ignore::nirbridge.presets.ExporterQuirkWarning")
def test_export_graph_honours_by_node_and_refuses_what_no_importer_reads():
    """Per-node settings are the node's (a subtracting node is refused for Norse), an unknown by_node
    name is an error, a dt for an importer that takes none is refused, as is a LIF after a conv for
    Sinabs (its from_nir fails on a multi-dimensional layer), and options must be a dict."""
    g = _graph(_lif(tau=1e-2), n_in=3, w=np.ones((1, 3)), b=np.zeros(1))
    norse = nb.Dynamics.preset("norse")
    presets.export_graph(g, norse, "norse")
    with pytest.raises(UnsupportedError, match=r"node 'n', field 'reset'"):
        presets.export_graph(g, norse.replace(by_node={"n": {"reset": "subtract"}}), "norse")
    with pytest.raises(DynamicsError, match=r"by_node names \['m'\]"):
        presets.export_graph(g, norse.replace(by_node={"m": {"reset": "zero"}}), "norse")
    with pytest.raises(UnsupportedError, match=r"takes no dt.*1e-4 hard-coded"):
        presets.export_graph(g, nb.Dynamics.preset("snntorch", reset_mechanism="zero", reset_delay=False),
                             "snntorch", dt=1e-3)
    with pytest.raises(UnsupportedError, match=r"takes no dt.*tau in steps"):
        presets.export_graph(g, "sinabs", "sinabs", dt=2.0)
    conv = nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([1, 4, 4])}),
        "conv": nir.Conv2d(input_shape=(4, 4), weight=np.ones((2, 1, 3, 3)), stride=1, padding=0, dilation=1,
                           groups=1, bias=np.zeros(2)),
        "n": nir.LIF(tau=np.full((2, 2, 2), 3.0), r=np.ones((2, 2, 2)), v_leak=np.zeros((2, 2, 2)),
                     v_threshold=np.ones((2, 2, 2)), v_reset=np.zeros((2, 2, 2))),
        "output": nir.Output(output_type={"output": np.array([2, 2, 2])})},
        edges=[("input", "conv"), ("conv", "n"), ("n", "output")], type_check=False)
    with pytest.raises(UnsupportedError, match=r"node 'n', field 'v_leak'.*one-dimensional"):
        presets.export_graph(nb.Graph.from_nir(conv), nb.Dynamics.preset("sinabs", norm_input=False), "sinabs")
    for bad in ([("n", {})], "n"):
        with pytest.raises(DynamicsError, match="options must be a dict"):
            nb.Dynamics.preset("snntorch", options=bad)
        with pytest.raises(DynamicsError, match="options must be a dict"):
            presets.import_graph(g, "snntorch", options=bad)


def test_export_graph_for_spyx_names_the_chain_and_refuses_branches():
    """spyx.nir.from_nir walks a chain from 'input' to 'output': other names are renamed (one
    warning), a branch is refused naming the node."""
    lif = nir.LIF(tau=np.full(2, 4e-3), r=np.full(2, 0.75), v_leak=np.zeros(2), v_threshold=np.ones(2),
                  v_reset=np.zeros(2))
    fc = nir.Affine(weight=np.ones((2, 2)), bias=np.zeros(2))
    chain = nb.Graph.from_nir(nir.NIRGraph(
        nodes={"x": nir.Input(input_type={"input": np.array([2])}), "fc": fc, "n": lif,
               "y": nir.Output(output_type={"output": np.array([2])})},
        edges=[("x", "fc"), ("fc", "n"), ("n", "y")], type_check=False))
    with pytest.warns(presets.ExporterQuirkWarning, match="renamed 'x' -> 'input'"):
        out = presets.export_graph(chain, nb.Dynamics.preset("spyx", dt=1e-3), "spyx", dt=1e-3)
    assert out.inputs == ["input"] and out.outputs == ["output"] and out.edges[0] == ("input", "fc")
    branch = nb.Graph.from_nir(nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([2])}), "fc": fc, "n": lif, "m": lif,
               "output": nir.Output(output_type={"output": np.array([2])})},
        edges=[("input", "fc"), ("fc", "n"), ("fc", "m"), ("n", "output"), ("m", "output")], type_check=False))
    with pytest.raises(UnsupportedError, match=r"node 'fc', field 'edges'.*Sequential"):
        presets.export_graph(branch, nb.Dynamics.preset("spyx", dt=1e-3), "spyx", dt=1e-3)


# ------------------------------------------------------------------ lenient loading
def _leaky_batch_file(tmp_path, in_shape=(3, 4), out_shape=(3, 2)):
    nodes = {"input": nir.Input(input_type={"input": np.array(in_shape)}),
             "fc": nir.Affine(weight=np.ones((2, 4), np.float32), bias=np.zeros(2, np.float32)),
             "lif": nir.LIF(tau=np.full(2, 1e-3), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2),
                            v_reset=np.zeros(2)),
             "output": nir.Output(output_type={"output": np.array(out_shape)})}
    g = nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")], type_check=False)
    path = tmp_path / "batched.nir"
    nir.write(str(path), g)
    return path


def test_strict_load_names_the_lenient_mode_and_lenient_load_repairs_with_warnings(tmp_path):
    path = _leaky_batch_file(tmp_path)
    with pytest.raises(ShapeError, match=r"strict=False.*'input'.*\[3, 4\] -> \[4\]"):
        nb.load(path)
    with pytest.warns(RepairWarning) as rec:
        g = nb.load(path, strict=False)
    msgs = [str(r.message) for r in rec]
    assert len(msgs) == 2 and "node 'input'" in msgs[0] and "node 'output'" in msgs[1] and "[3, 2] -> [2]" in msgs[1]
    assert g.plan["input"].output_shape == (4,) and g.plan["output"].input_shape == (2,)


def test_rockpool_style_leading_one(tmp_path):
    path = _leaky_batch_file(tmp_path, in_shape=(1, 4), out_shape=(2,))
    with pytest.warns(RepairWarning, match=r"\[1, 4\] -> \[4\]"):
        nb.load(path, strict=False)


def test_lenient_load_repairs_nothing_else(tmp_path):
    # a genuinely wrong shape is not a leaked dimension: it still raises, without the hint
    path = _leaky_batch_file(tmp_path, in_shape=(5,), out_shape=(2,))
    with pytest.raises(ShapeError) as e:
        nb.load(path, strict=False)
    assert "strict=False" not in str(e.value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean file loads leniently without a warning
        nb.load(examples.path("lif_norse"), strict=False)
