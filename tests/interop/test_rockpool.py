"""Rockpool 3.1.0 (torch modules): models built, run and exported with Rockpool, reproduced by nirbridge.

Preset ``"rockpool"``: exact decay ``a = exp(-dt/tau)`` at the modules' dt (default 1e-3), the input
added unscaled (``LIFNeuronTorch``: ``v = a v + x``; ``LIFTorch``: ``i = a_s (i + x)``, ``v = a_m v +
i``; ``ExpSynTorch``: ``i = a (i + x)``), ``v >= v_threshold`` with several spikes per step
(``floor(v / v_threshold)``), subtractive reset, the voltage after the reset. The exporter writes
``r = (tau/dt) exp(-dt/tau)`` and ``w_in = 1``: ``import_graph(graph, "rockpool")`` reads dt back
from r and sets the exact gains (``r = 1/(1 - a)``, ``w_in = a_s/(1 - a_s)``, LI ``r = a/(1 - a)``).
The exporter drops the neurons' bias and the recurrent weights, and writes ``Input [1, N]`` and
``Output [1, 1, N]`` (``nb.load(strict=False)`` repairs them).

Install: ``pip install --no-deps rockpool==3.1.0`` (its ``nir`` extra pins ``nir<=1.0.4``; it runs
with nir 1.0.8 and needs only numpy, scipy, torch, nir and nirtorch).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from interop_common import (
    NOUT,
    X,
    compare,
    make_rec_weights,
    make_tie_weights,
    make_weights,
    quiet_import,
    record_unsupported,
)
from interop_common import write_nir as _write

import nirbridge as nb
from nirbridge import presets
from nirbridge.repair import RepairWarning

torch = pytest.importorskip("torch")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pytest.importorskip("rockpool")
    from rockpool.nn.combinators import Sequential  # noqa: E402
    from rockpool.nn.modules import (  # noqa: E402
        ExpSynTorch,
        LIFNeuronTorch,
        LIFTorch,
        LinearTorch,
        from_nir,
        to_nir,
    )
    from rockpool.parameters import Constant  # noqa: E402

DT = 1e-3
TAU_MEM = np.array([5e-3, 8e-3, 10e-3, 15e-3, 20e-3, 30e-3], np.float32)
TAU_SYN = np.array([2e-3, 3e-3, 4e-3, 5e-3, 6e-3, 8e-3], np.float32)
THR = np.array([0.3, 0.4, 0.5, 0.6, 0.45, 0.35], np.float32)
BIAS = np.array([0.05, -0.02, 0.03, 0.0, 0.04, -0.01], np.float32)
XB = np.ascontiguousarray(X.transpose(1, 0, 2))  # Rockpool runs (B, T, N)
# recurrent weights small enough that the spike counts stay small: with counts fed back, stronger
# weights run away (counts up to max_spikes_per_dt = 2^16, |v| ~ 1e5), where float32 rounding decides
REC_SCALE = 0.05


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a, np.float32))


def _linear(w, b, scale=1.0):
    # LinearTorch holds its weight as (N_in, N_out): y = x @ weight + bias
    return LinearTorch((w.shape[1], w.shape[0]), weight=_t(w.T * np.float32(scale)),
                       bias=None if b is None else _t(b * np.float32(scale)), has_bias=b is not None)


def _run(net, key, *, syn=False, out_key=None):
    """Run ``net`` in Rockpool on X (record=True), export it; return (path, traces). ``key`` names the
    module whose vmem (isyn) is recorded; ``out_key`` a module whose output is the compared 'spikes'."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, _, rec = net(_t(XB), record=True)
        if out_key is not None:
            out = rec[out_key + "_output"].detach()
        g = to_nir(net)
    r = rec[key]
    v = r["vmem"] if "vmem" in r else rec[key + "_output"].detach()  # ExpSynTorch: its output is its current
    ref = {"spikes": out.numpy().transpose(1, 0, 2).copy(), "v": v.numpy().transpose(1, 0, 2).copy()}
    if syn:
        ref["i"] = r["isyn"].numpy()[..., 0].transpose(1, 0, 2).copy()  # one synapse per neuron
    return _write(g, "rockpool"), ref


def _lif_neuron(tau=TAU_MEM, thr=THR, bias=0.0):
    return LIFNeuronTorch(NOUT, tau_mem=_t(tau), threshold=_t(thr), bias=bias, dt=DT)


def _lif_torch(**kw):
    return LIFTorch(NOUT, tau_mem=_t(TAU_MEM), tau_syn=_t(TAU_SYN), threshold=_t(THR), dt=DT, **kw)


@functools.cache
def model(kind):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Rockpool's parameter code trips NumPy 2 deprecation warnings
        return _model(kind)


def _model(kind):
    torch.manual_seed(0)
    w, b = make_weights()
    if kind == "lif":
        return _run(Sequential(_linear(w, b, 0.6), _lif_neuron()), "1_LIFNeuronTorch")
    if kind == "lif_single":  # max_spikes_per_dt=1: at most one spike per step, the rest of v kept
        n = LIFNeuronTorch(NOUT, tau_mem=_t(TAU_MEM), threshold=_t(THR), dt=DT, max_spikes_per_dt=1)
        return _run(Sequential(_linear(w, b, 0.9), n), "1_LIFNeuronTorch")
    if kind == "lif_tie":
        # a = exp(-dt/tau) is exactly 0.5 in float32 for this tau, threshold 1, weights on a 0.25 grid:
        # the voltage lands exactly on the threshold
        tau = np.full(NOUT, np.float32(0.0014426952), np.float32)
        wt, bt = make_tie_weights()
        return _run(Sequential(_linear(wt, bt), _lif_neuron(tau, np.ones(NOUT, np.float32))), "1_LIFNeuronTorch")
    if kind == "cubalif":
        return _run(Sequential(_linear(w, b, 0.15), _lif_torch()), "1_LIFTorch", syn=True)
    if kind == "cubalif_bias":
        return _run(Sequential(_linear(w, b, 0.15), _lif_torch(bias=_t(BIAS))), "1_LIFTorch", syn=True)
    if kind == "lif_bias":
        return _run(Sequential(_linear(w, b, 0.6), _lif_neuron(bias=_t(BIAS))), "1_LIFNeuronTorch")
    if kind == "recurrent":
        wr, _ = make_rec_weights(scale=REC_SCALE)
        return _run(Sequential(_linear(w, b, 0.15), _lif_torch(has_rec=True, w_rec=_t(wr.T))), "1_LIFTorch",
                    syn=True)
    if kind == "readout":
        # Linear -> LIFTorch -> Linear -> ExpSynTorch: the hidden spike counts and the readout current
        w2, _ = make_rec_weights(seed=4, scale=0.25)
        # ExpSynTorch's exporter writes tau without detaching it: a trainable tau (the default) makes
        # nir.write fail ("Can't call numpy() on Tensor that requires grad"); a Constant tau exports
        net = Sequential(_linear(w, b, 0.15), _lif_torch(), _linear(w2, None),
                         ExpSynTorch(NOUT, tau=Constant(_t(TAU_MEM)), dt=DT))
        return _run(net, "3_ExpSynTorch", out_key="1_LIFTorch")
    raise ValueError(kind)


def _raw(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the RepairWarnings _load checks
        return nb.load(path, strict=False)


def _load(path, **kw):
    with pytest.warns(RepairWarning) as rec:  # Input [1, 8] and Output [1, 1, 6]: the exporter's sample leaked
        raw = nb.load(path, strict=False)
    assert any("[1, 8] -> [8]" in str(r.message) for r in rec)
    g, dyn, warns = quiet_import(raw, "rockpool", **kw)
    quirks = [w for w in warns if w.category is presets.ExporterQuirkWarning]
    assert quirks and all("dt = 0.001 read from r" in str(w.message) for w in quirks)
    return raw, g, dyn


def test_lif_neuron_feed_forward(backend):
    path, ref = model("lif")
    assert ref["spikes"].max() >= 2  # several spikes in one step occur
    raw, g, dyn = _load(path)
    assert [s.node.type for s in g.plan.steps] == ["Input", "Affine", "LIF", "Output"]
    assert dyn.dt == DT  # read back from r
    compare("rockpool", "LIFNeuronTorch (Affine -> LIF)", g, dyn, backend, ref)
    if backend == "reference":
        # the exported r = (tau/dt) exp(-dt/tau) taken as NIR's r: wrong gains
        assert int((nb.simulate(raw, X, dyn)["output"] != ref["spikes"]).sum()) > 0


def test_lif_ties_pick_inclusive_threshold(backend):
    path, ref = model("lif_tie")
    _, g, dyn = _load(path)
    n = "1_LIFNeuronTorch"
    assert float(g.plan[n].node.params["r"][0]) == 2.0  # 1/(1 - a), a = 0.5: the update is v = v/2 + x exactly
    compare("rockpool", "LIFNeuronTorch, v == threshold", g, dyn, backend, ref)
    if backend == "reference":  # '>' would not spike where v == threshold
        out = nb.simulate(g, X, dyn.replace(threshold=">"), record=[(n, "v")])
        assert int((out["output"] != ref["spikes"]).sum()) > 0


def test_liftorch_cubalif(backend):
    path, ref = model("cubalif")
    raw, g, dyn = _load(path)
    assert [s.node.type for s in g.plan.steps] == ["Input", "Affine", "CubaLIF", "Output"]
    p = g.plan["1_LIFTorch"].node.params
    a_s = np.exp(-DT / TAU_SYN.astype(np.float64))
    np.testing.assert_allclose(p["w_in"], a_s / (1 - a_s), rtol=1e-6)
    compare("rockpool", "LIFTorch (Affine -> CubaLIF)", g, dyn, backend, ref)
    if backend == "reference":
        assert int((nb.simulate(raw, X, dyn)["output"] != ref["spikes"]).sum()) > 0


def test_readout_expsyn_li(backend):
    """Linear -> LIFTorch -> Linear -> ExpSynTorch: the hidden spike counts are identical and the
    readout (an LI, r = a/(1 - a) after import_graph) within the voltage tolerance."""
    path, ref = model("readout")
    _, g, dyn = _load(path)
    assert [s.node.type for s in g.plan.steps] == ["Input", "Affine", "CubaLIF", "Linear", "LI", "Output"]
    compare("rockpool", "LIFTorch + ExpSynTorch readout (Affine -> CubaLIF -> Linear -> LI)", g, dyn, backend, ref,
            neuron="3_ExpSynTorch", spikes_of="1_LIFTorch")


def test_bias_is_not_exported(backend):
    """LIFTorch(bias=...) writes the same file as without a bias (v_leak = 0). Given by hand as
    v_leak = bias / (1 - a_m) (the exact update adds (1 - a_m) v_leak per step), it reproduces Rockpool."""
    path, ref = model("cubalif_bias")
    assert _raw(path).equals(_raw(model("cubalif")[0]))
    _, g, dyn = _load(path)
    a_m = np.exp(-DT / TAU_MEM.astype(np.float64))
    fixed = g.replace_params({"1_LIFTorch": {"v_leak": (BIAS / (1 - a_m)).astype(np.float32)}})
    compare("rockpool", "LIFTorch with bias (v_leak = bias/(1 - a_m) set by hand)", fixed, dyn, backend, ref)
    rec = compare("rockpool", "LIFTorch with bias (file only: bias lost)", g, dyn, backend, ref, expect_exact=False,
                  note="the bias is not exported")
    assert rec["spike_mismatches"] > 0


@pytest.mark.parametrize("kind", ["cubalif_bias", "lif_bias"])
def test_bias_by_its_own_name(kind, backend):
    """import_graph(path, 'rockpool', bias=[...]), Rockpool's own parameter name (one value per
    neuron): the dropped bias becomes v_leak = bias / (1 - a) and the one call reproduces Rockpool
    (LIFTorch and LIFNeuronTorch), with no warning that the preset assumes no bias."""
    path, ref = model(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepairWarning)
        g, dyn, warns = quiet_import(nb.load(path, strict=False), "rockpool", bias=BIAS)
    assert not [w for w in warns if w.category is presets.LostInformationWarning]
    n = "1_LIFTorch" if kind == "cubalif_bias" else "1_LIFNeuronTorch"
    a = np.exp(-DT / TAU_MEM.astype(np.float64))
    np.testing.assert_allclose(g.node(n).params["v_leak"], BIAS / (1 - a), rtol=1e-6)
    compare("rockpool", f"{'LIFTorch' if kind == 'cubalif_bias' else 'LIFNeuronTorch'} with bias (import_graph "
            "option bias)", g, dyn, backend, ref)


def test_recurrent_weights_are_not_exported(backend):
    """LIFTorch(has_rec=True) writes the same file as the feed-forward LIFTorch: w_rec is dropped.
    With the recurrent weights added by hand (neuron -> Linear(w_rec^T) -> neuron: the previous
    step's spike counts), nirbridge reproduces Rockpool."""
    import nir

    path, ref = model("recurrent")
    assert _raw(path).equals(_raw(model("cubalif")[0]))
    _, g, dyn = _load(path)
    rec = compare("rockpool", "LIFTorch(has_rec=True) (file only: w_rec lost)", g, dyn, backend, ref,
                  expect_exact=False, note="the recurrent weights are not exported", recurrent=True)
    assert rec["spike_mismatches"] > 0
    wr, _ = make_rec_weights(scale=REC_SCALE)  # Rockpool adds spikes @ w_rec with w_rec = wr.T: NIR weight wr
    n = g.to_nir()
    nodes = dict(n.nodes, w_rec=nir.Linear(weight=wr))
    edges = list(n.edges) + [("1_LIFTorch", "w_rec"), ("w_rec", "1_LIFTorch")]
    g_rec = nb.Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    assert len(g_rec.plan.recurrent) == 1
    compare("rockpool", "LIFTorch(has_rec=True) (w_rec added by hand)", g_rec, dyn, backend, ref,
            neuron="1_LIFTorch")


def test_rockpool_does_not_reproduce_its_own_file():
    """Rockpool's importer guesses dt = min(tau_mem / (1 + r)) (0.98 ms here, not 1 ms), so its
    own round trip changes the spikes; import_graph reads dt = tau W0(1/r) exactly."""
    path, ref = model("cubalif")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        net = from_nir(_raw(path).to_nir())  # nir.read rejects the file (Input [1, 8])
        out = net(_t(XB))
    out = (out[0] if isinstance(out, tuple) else out).numpy().transpose(1, 0, 2)
    dts = [m.dt for m in net.modules() if hasattr(m, "dt")]
    assert dts and abs(min(dts) - DT) > 1e-5
    assert int((out != ref["spikes"]).sum()) > 0


def test_import_graph_checks_dt_against_the_file():
    path, _ = model("lif")
    raw = _raw(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g, dyn = presets.import_graph(raw, "rockpool", dt=1e-3)  # agrees with r: fine
    assert dyn.dt == 1e-3
    with pytest.raises(nb.errors.ParameterError, match=r"node '1_LIFNeuronTorch', field 'r'.*dt = 0.001"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        presets.import_graph(raw, "rockpool", dt=1e-4)
    with pytest.raises(nb.errors.ParameterError, match="field 'r'.*across its neurons"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        presets.import_graph(g, "rockpool")  # corrected already: r no longer encodes one dt


def test_conv_is_not_exportable():
    """Rockpool 3.1.0 has no convolutional module; to_nir writes None for a torch Conv2d/Flatten."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), LIFNeuronTorch(72))
        g = to_nir(net, torch.zeros(1, 1, 8, 8))
    assert g.nodes["0"] is None and g.nodes["1"] is None  # nir.write cannot store this graph
    record_unsupported("rockpool", "Conv2d -> Flatten -> LIFNeuronTorch", ["Conv2d", "LIF"],
                       "to_nir maps no Conv2d/Flatten (the nodes are None)")


def test_strict_load_refuses_the_leaked_batch_dimension():
    import nir

    path, _ = model("lif")
    with pytest.raises(ValueError, match="type mismatch"):
        nir.read(str(path))
    with pytest.raises(nb.errors.ShapeError, match="strict=False"):
        nb.load(path)


# ---------------------------------------------------------------------- re-export: Rockpool -> Sinabs
def test_reexport_rockpool_to_sinabs_end_to_end(tmp_path):
    """A Rockpool LIFNeuronTorch net exported by Rockpool, loaded with its preset, rewritten for
    Sinabs' importer (tau in steps: x 1000; the exact gain (1 - a) r = 1 folded into the Affine,
    r := 1), read by sinabs.from_nir and run in Sinabs (LIFSqueeze, norm_input=False, MultiSpike,
    MembraneSubtract): Rockpool's spike counts, and its voltages (both after the reset)."""
    import nir

    sinabs = pytest.importorskip("sinabs")
    path, ref = model("lif")
    _, g, dyn = _load(path)
    with pytest.warns(presets.ExporterQuirkWarning, match="1_LIFNeuronTorch"):
        out = presets.export_graph(g, dyn, "sinabs")
    np.testing.assert_allclose(out.plan["1_LIFNeuronTorch"].node.params["tau"], TAU_MEM / DT, rtol=1e-6)
    nb.save(out, tmp_path / "for_sinabs.nir")
    b, t = XB.shape[:2]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        net = sinabs.from_nir(nir.read(str(tmp_path / "for_sinabs.nir")), batch_size=b)
        lif = net.get_submodule("1_LIFNeuronTorch")
        lif.record_states = True
        s = net(_t(XB.reshape(b * t, -1)))[0]  # Sinabs' squeezed layers run (B*T, N); (output, state)
    s = s.numpy().reshape(b, t, -1).transpose(1, 0, 2)
    v = lif.recordings["v_mem"].numpy().reshape(b, t, -1).transpose(1, 0, 2)
    assert int((s != ref["spikes"]).sum()) == 0 and ref["spikes"].max() >= 2
    # float32: Sinabs' exp(-1/tau') against Rockpool's exp(-dt/tau); see interop_common.VTOL
    np.testing.assert_allclose(v, ref["v"], rtol=0, atol=1e-5)


def test_reexport_refuses_what_the_target_cannot_reproduce():
    """Rockpool's LIFTorch (a CubaLIF) -> Sinabs: Sinabs reads no CubaLIF. Rockpool -> Norse: Norse
    integrates with Euler, Rockpool exactly. A neuron bias (v_leak) -> Sinabs: its importer
    refuses v_leak != 0."""
    _, g, dyn = _load(model("cubalif")[0])
    with pytest.raises(nb.errors.UnsupportedError, match=r"node '1_LIFTorch', field 'type'.*CubaLIF"):
        presets.export_graph(g, dyn, "sinabs")
    _, g, dyn = _load(model("lif")[0])
    with pytest.raises(nb.errors.UnsupportedError, match=r"node '1_LIFNeuronTorch', field 'method'.*'exact'"):
        presets.export_graph(g, dyn, "norse")
    biased = g.replace_params({"1_LIFNeuronTorch": {"v_leak": np.full(NOUT, 0.1, np.float32)}})
    with pytest.raises(nb.errors.UnsupportedError, match=r"field 'v_leak'"):
        presets.export_graph(biased, dyn, "sinabs")


def test_max_spikes_per_dt_by_its_own_name(backend):
    path, ref = model("lif_single")
    assert ref["spikes"].max() == 1 and ref["spikes"].sum() > 50
    _, g, dyn = _load(path, max_spikes_per_dt=1)
    compare("rockpool", "LIFNeuronTorch max_spikes_per_dt=1 (import_graph option)", g, dyn, backend, ref)
    if backend == "reference":  # the default reading (spike counts) differs where v holds 2 thresholds
        _, g0, dyn0 = _load(path)
        assert int((nb.simulate(g0, X, dyn0)["output"] != ref["spikes"]).sum()) > 0


# ---------------------------------------------------------------------- back to Rockpool: export_graph
def test_round_trip_train_in_jax_export_to_rockpool(tmp_path):
    """Rockpool LIFTorch (per-neuron tau_mem, tau_syn, thresholds) -> nirbridge (JAX) -> 10 Adam
    steps on the weights -> export_graph(..., 'rockpool') -> Rockpool's from_nir: its spike counts
    are nirbridge's for the trained graph, in every backend; the file reads back into nirbridge."""
    pytest.importorskip("jax")
    from interop_common import train_weights

    path, ref = model("cubalif")
    _, g, dyn = _load(path)
    trained = train_weights(g, dyn, lr=1e-2)
    assert not np.array_equal(trained.node("0_LinearTorch").params["weight"], g.node("0_LinearTorch").params["weight"])
    n = "1_LIFTorch"
    want = {b: nb.simulate(trained, X, dyn, backend=b, record=[(n, "v")]) for b in ("reference", "jax", "torch")}
    with pytest.warns(presets.ExporterQuirkWarning, match="from_nir"):
        out = presets.export_graph(trained, dyn, "rockpool")
    nb.save(out, tmp_path / "for_rockpool.nir")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        net = from_nir(nb.load(tmp_path / "for_rockpool.nir").to_nir())
        s = net(_t(XB))
        s = s[0] if isinstance(s, tuple) else s
        lif = net.get_submodule(n)
        lif.reset_state()  # the layer again, recording its voltage
        h = net.get_submodule("0_LinearTorch")(_t(XB))
        _, _, rec = lif.evolve(h[0] if isinstance(h, tuple) else h, record=True)
    assert abs(lif.dt - DT) <= 1e-9  # the dt it guessed from r
    s = s.detach().numpy().transpose(1, 0, 2)
    v = rec["vmem"].numpy().transpose(1, 0, 2)
    assert want["reference"]["output"].sum() > 20
    assert int((s != ref["spikes"]).sum()) > 0  # training changed the spikes
    for b, w in want.items():
        assert int((s != w["output"]).sum()) == 0, b
        np.testing.assert_allclose(v, w[(n, "v")], rtol=0, atol=1e-5)
    back, dyn2, _ = quiet_import(nb.load(tmp_path / "for_rockpool.nir"), "rockpool")  # dt read from r = tau/dt - 1
    assert dyn2.dt == DT
    assert int((nb.simulate(back, X, dyn2)["output"] != want["reference"]["output"]).sum()) == 0


def test_export_to_rockpool_refuses_what_its_importer_cannot_build():
    _, g, dyn = _load(model("lif")[0])
    with pytest.raises(nb.errors.UnsupportedError, match=r"node '1_LIFNeuronTorch', field 'type'.*tau_mem"):
        presets.export_graph(g, dyn, "rockpool")
    _, g, dyn = _load(model("cubalif")[0])
    with pytest.raises(nb.errors.UnsupportedError, match=r"node '1_LIFTorch', field 'spikes'"):
        presets.export_graph(g, dyn.replace(spikes="single"), "rockpool")
    with pytest.raises(nb.errors.UnsupportedError, match=r"field 'v_leak'"):
        presets.export_graph(g.replace_params({"1_LIFTorch": {"v_leak": np.full(NOUT, 0.1, np.float32)}}), dyn,
                             "rockpool")
