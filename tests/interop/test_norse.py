"""Norse 1.1.0: models built, run and exported with Norse, reproduced by nirbridge.

Preset ``"norse"``: Euler at dt = 1e-3, reset to v_reset, ``>``, current first, the voltage starts
at v_leak and is reported after the reset. Norse 1.1.0's exporter writes ``tau = dt * tau_mem``
(norse#411) and ``w_in = 1`` for a current that jumps by the input: ``import_graph(graph, "norse",
export_dt=1e-3)`` corrects both, with one warning per node. v_reset is not exported (lost).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from interop_common import (
    NIN,
    NOUT,
    X,
    compare,
    make_frames,
    make_tie_weights,
    make_weights,
    quiet_import,
    record_unsupported,
)
from interop_common import write_nir as _write

import nirbridge as nb
from nirbridge import presets
from nirbridge.errors import UnsupportedError
from nirbridge.repair import RepairWarning

torch = pytest.importorskip("torch")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # norse warns (torch.jit.script deprecation) while importing
    norse = pytest.importorskip("norse.torch")

TAU_MEM = np.array([5e-3, 8e-3, 10e-3, 15e-3, 20e-3, 30e-3], np.float32)
TAU_SYN = np.array([2e-3, 3e-3, 4e-3, 5e-3, 6e-3, 8e-3], np.float32)
THR = np.array([0.3, 0.4, 0.5, 0.6, 0.45, 0.35], np.float32)


def _t(a):
    return torch.from_numpy(np.asarray(a, np.float32))


def _linear(w, b):
    lin = torch.nn.Linear(NIN, NOUT)
    with torch.no_grad():
        lin.weight.copy_(_t(w))
        lin.bias.copy_(_t(b))
    return lin


def _sim(lin, cell, x=X, syn=False):
    s, v, i, state = [], [], [], None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in range(x.shape[0]):
            z, state = cell(lin(_t(x[t])), state)
            s.append(z.numpy().copy())
            v.append(state.v.numpy().copy())
            if syn:
                i.append(state.i.numpy().copy())
    ref = {"spikes": np.array(s), "v": np.array(v)}
    return ref


def _export(lin, cell, sample=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = norse.to_nir(torch.nn.Sequential(lin, cell), _t(X[0, 0]) if sample is None else sample)
    return _write(g, "norse")


def _lifbox(v_leak=0.0, v_reset=0.0, tie=False):
    if tie:  # tau_mem = 2 ms: dt/tau = 0.5; threshold 1; weights on a 0.25 grid
        p = norse.LIFBoxParameters(tau_mem_inv=torch.full((6,), 500.0), v_th=torch.ones(6),
                                   v_leak=torch.zeros(6), v_reset=torch.zeros(6))
        return norse.LIFBoxCell(p), make_tie_weights()
    p = norse.LIFBoxParameters(tau_mem_inv=_t(1 / TAU_MEM), v_th=_t(THR), v_leak=torch.full((6,), v_leak),
                               v_reset=torch.full((6,), v_reset))
    w, b = make_weights()
    return norse.LIFBoxCell(p), (w * np.float32(1.5), b * np.float32(1.5))


@functools.cache
def lifbox(v_leak=0.0, v_reset=0.0, tie=False):
    cell, (w, b) = _lifbox(v_leak, v_reset, tie)
    lin = _linear(w, b)
    ref = _sim(lin, cell)
    return _export(lin, cell), ref


@functools.cache
def lifcell(tie=False):
    if tie:
        p = norse.LIFParameters(tau_syn_inv=torch.full((6,), 500.0), tau_mem_inv=torch.full((6,), 500.0),
                                v_th=torch.ones(6), v_leak=torch.zeros(6), v_reset=torch.zeros(6))
        w, b = make_tie_weights()
    else:
        p = norse.LIFParameters(tau_syn_inv=_t(1 / TAU_SYN), tau_mem_inv=_t(1 / TAU_MEM), v_th=_t(THR),
                                v_leak=torch.zeros(6), v_reset=torch.zeros(6))
        w, b = make_weights()
        w, b = w * np.float32(0.8), b * np.float32(0.8)
    cell, lin = norse.LIFCell(p), _linear(w, b)
    return _export(lin, cell), _sim(lin, cell)


def _load(path):
    g, dyn, warns = quiet_import(nb.load(path), "norse", export_dt=1e-3)
    quirks = [w for w in warns if w.category is presets.ExporterQuirkWarning]
    assert len(quirks) == 1 and "'1'" in str(quirks[0].message) and "tau" in str(quirks[0].message)
    return g, dyn


def test_lifbox_feed_forward(backend):
    path, ref = lifbox()
    raw = nb.load(path)
    assert float(raw.plan["1"].node.params["tau"][0]) == pytest.approx(5e-6)  # 1e-3 * 5 ms: norse#411
    g, dyn = _load(path)
    assert float(g.plan["1"].node.params["tau"][0]) == pytest.approx(5e-3)
    compare("norse", "LIFBoxCell (Affine -> LIF)", g, dyn, backend, ref)
    if backend == "reference":  # tau taken literally: nonsense
        assert int((nb.simulate(raw, X, dyn)["output"] != ref["spikes"]).sum()) > 100


def test_lifbox_ties(backend):
    path, ref = lifbox(tie=True)
    g, dyn = _load(path)
    compare("norse", "LIFBoxCell, v == threshold", g, dyn, backend, ref)


def test_lifcell_cubalif(backend):
    path, ref = lifcell()
    raw = nb.load(path)
    assert float(raw.plan["1"].node.params["w_in"][0]) == 1.0  # as exported
    g, dyn = _load(path)
    np.testing.assert_allclose(g.plan["1"].node.params["w_in"], TAU_SYN / 1e-3, rtol=1e-6)
    compare("norse", "LIFCell (Affine -> CubaLIF)", g, dyn, backend, ref)


def test_lifcell_ties(backend):
    path, ref = lifcell(tie=True)
    g, dyn = _load(path)
    compare("norse", "LIFCell, v == threshold", g, dyn, backend, ref)


def test_v_reset_is_lost_and_v_leak_is_the_start(backend):
    """v_leak = 0.1 (also Norse's initial v) and v_reset = -0.2: the file says v_reset = 0. With
    the true v_reset supplied by hand nirbridge reproduces Norse; from the file alone it cannot."""
    path, ref = lifbox(v_leak=0.1, v_reset=-0.2)
    g, dyn = _load(path)
    assert float(g.plan["1"].node.params["v_reset"][0]) == 0.0
    fixed = g.replace_params({"1": {"v_reset": np.full(6, -0.2, np.float32)}})
    compare("norse", "LIFBoxCell v_leak=0.1, v_reset=-0.2 (v_reset set by hand)", fixed, dyn, backend, ref)
    rec = compare("norse", "LIFBoxCell v_leak=0.1, v_reset=-0.2 (file only: v_reset lost)", g, dyn, backend, ref,
                  expect_exact=False, note="v_reset is not exported")
    assert rec["spike_mismatches"] > 0
    if backend == "reference":  # and Norse starts at v_leak, not 0
        out = nb.simulate(fixed, X, dyn.replace(v_init="zero"))
        assert int((out["output"] != ref["spikes"]).sum()) > 0


def test_v_reset_by_its_own_name(backend):
    """import_graph(path, 'norse', export_dt=1e-3, v_reset=-0.2), Norse's own parameter name, writes
    the dropped v_reset into the graph (globally, or per node with options=): Norse exactly, and no
    warning that the preset assumes v_reset; Dynamics.preset cannot take it and says so."""
    from interop_common import cli_simulate

    path, ref = lifbox(v_leak=0.1, v_reset=-0.2)
    g, dyn, warns = quiet_import(path, "norse", export_dt=1e-3, v_reset=-0.2)
    assert not [w for w in warns if w.category is presets.LostInformationWarning]
    np.testing.assert_array_equal(g.node("1").params["v_reset"], np.full(6, -0.2, np.float32))
    compare("norse", "LIFBoxCell v_leak=0.1, v_reset=-0.2 (import_graph option v_reset)", g, dyn, backend, ref)
    g2, dyn2, _ = quiet_import(path, "norse", export_dt=1e-3, options={"1": {"v_reset": -0.2}})
    assert g2.equals(g)
    if backend == "reference":
        with pytest.raises(nb.errors.DynamicsError, match=r"import_graph\(path, 'norse', v_reset=...\)"):
            nb.Dynamics.preset("norse", v_reset=-0.2)
        code, out, err = cli_simulate(path, "--library", "norse", "--export-dt", "1e-3", "--option", "v_reset=-0.2")
        assert code == 0, err
        assert int((out != ref["spikes"]).sum()) == 0


def test_recurrent_cell_is_not_exportable():
    cell = norse.LIFRecurrentCell(NIN, NOUT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = norse.to_nir(cell, _t(X[0, 0]))
    assert any(v is None for v in g.nodes.values())  # to_nir gives no node for it
    record_unsupported("norse", "LIFRecurrentCell", ["CubaLIF"], "norse.torch.to_nir returns no node for "
                       "LIFRecurrentCell (nir.write fails)", recurrent=True)


def test_paper_lif_norse_needs_no_tau_correction():
    """The NIR paper's lif_norse.nir holds tau = 2.5e-3 s (LIFBoxCell(tau_mem_inv=400)): written by
    an exporter that kept tau in seconds, so import_graph refuses to 'correct' it."""
    from nirbridge import examples

    with pytest.raises(nb.errors.ParameterError, match="tau.*seconds"):
        presets.import_graph(nb.load(examples.path("lif_norse")), "norse", export_dt=1e-4)


def test_batched_sample_writes_a_file_only_lenient_load_reads(backend):
    """to_nir with a batched (3, 8) sample writes Input [3, 8] / Output [3, 6]: nir.read rejects
    it, nb.load too (naming strict=False), and nb.load(strict=False) repairs both with a warning."""
    cell, (w, b) = _lifbox()
    lin = _linear(w, b)
    ref = _sim(lin, cell)
    path = _export(lin, cell, sample=_t(X[0]))
    with pytest.raises(nb.errors.ShapeError, match="strict=False"):
        nb.load(path)
    with pytest.warns(RepairWarning) as rec:
        raw = nb.load(path, strict=False)
    msgs = [str(r.message) for r in rec if r.category is RepairWarning]
    assert len(msgs) == 2 and "'input'" in msgs[0] and "[3, 8] -> [8]" in msgs[0] and "'output'" in msgs[1]
    g, dyn, _ = quiet_import(raw, "norse", export_dt=1e-3)
    compare("norse", "LIFBoxCell, file written with a batched sample (strict=False)", g, dyn, backend, ref)


# ---------------------------------------------------------------------- re-export: snnTorch -> Norse
def test_reexport_snntorch_to_norse_end_to_end(tmp_path):
    """A snnTorch Leaky(reset_mechanism='zero') exported by snnTorch, loaded with its preset,
    rewritten for Norse's importer (dt 1e-4 -> 1e-3: tau x 10; r folded into the Affine), read by
    norse.torch.from_nir and run in Norse: the spikes are snnTorch's. Voltages agree where no spike
    happens (snnTorch reports the voltage before the reset, Norse after it)."""
    snn = pytest.importorskip("snntorch")
    from test_snntorch import leaky

    path, ref = leaky(reset="zero")
    g, dyn, _ = quiet_import(nb.load(path), "snntorch")
    dyn = dyn.replace(reset="zero", reset_timing="same", voltage="pre")
    with pytest.warns(presets.ExporterQuirkWarning) as rec:
        out = presets.export_graph(g, dyn, "norse")
    assert {str(r.message).split("'")[1] for r in rec} == {"0", "1"}  # the Affine (r folded) and the LIF (tau)
    nb.save(out, tmp_path / "for_norse.nir")
    import nir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = norse.from_nir(nir.read(str(tmp_path / "for_norse.nir")), dt=1e-3)
        s, v, state = [], [], None
        with torch.no_grad():
            for t in range(X.shape[0]):
                z, state = model(_t(X[t]), state)
                s.append(z.numpy().copy())
                v.append(state.state["1"][0].v.detach().numpy().copy())  # nirtorch GraphExecutorState
    s, v = np.array(s), np.array(v)
    assert int((s != ref["spikes"]).sum()) == 0 and ref["spikes"].sum() > 20
    quiet = (ref["spikes"] == 0)
    # float32 rounding of r * W and of two different update formulas; see interop_common.VTOL
    np.testing.assert_allclose(v[quiet], ref["v"][quiet], rtol=0, atol=1e-5)
    assert snn is not None


def test_reexport_refuses_snntorch_delayed_subtraction():
    """snnTorch's default (subtraction one step late) has no Norse counterpart: a clear error."""
    pytest.importorskip("snntorch")
    from test_snntorch import leaky

    g, dyn, _ = quiet_import(nb.load(leaky()[0]), "snntorch")
    with pytest.raises(UnsupportedError, match=r"node '1', field 'reset_timing'.*late"):
        presets.export_graph(g, dyn, "norse")


# ---------------------------------------------------------------------- a conv net
@functools.cache
def conv_net():
    """Conv2d(1->4, 3x3) -> LIFBoxCell on 8x8 spike frames (parameters of the layer's shape 4x6x6).
    Norse's to_nir leaves the Conv2d's input_shape None, which nir.write cannot store: a user sets
    it before writing (nirbridge repairs files, not graphs that were never written)."""
    torch.manual_seed(0)
    x = make_frames()
    conv = torch.nn.Conv2d(1, 4, 3)
    with torch.no_grad():
        conv.weight.mul_(2.0)
    shape = (4, 6, 6)
    tau = torch.tensor([5e-3, 8e-3, 10e-3, 20e-3]).reshape(4, 1, 1).expand(shape).contiguous()
    p = norse.LIFBoxParameters(tau_mem_inv=1 / tau, v_th=torch.full(shape, 0.3), v_leak=torch.zeros(shape),
                               v_reset=torch.zeros(shape))
    cell = norse.LIFBoxCell(p)
    s, v, state = [], [], None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in range(x.shape[0]):
            z, state = cell(conv(_t(x[t])), state)
            s.append(z.numpy().copy())
            v.append(state.v.numpy().copy())
        g = norse.to_nir(torch.nn.Sequential(conv, cell), _t(x[0, 0]))
    assert g.nodes["0"].input_shape is None
    g.nodes["0"].input_shape = np.array([8, 8])
    return _write(g, "norse_cnn"), x, {"spikes": np.array(s), "v": np.array(v)}


def test_conv_net(backend):
    path, x, ref = conv_net()
    g, dyn = _load(path)
    assert [s.node.type for s in g.plan.steps] == ["Input", "Conv2d", "LIF", "Output"]
    assert ref["spikes"].sum() > 50
    compare("norse", "CNN: Conv2d -> LIFBoxCell", g, dyn, backend, ref, x=x)


def test_flatten_is_not_exportable():
    """Norse's exporter maps no Flatten (nor pooling): to_nir of a conv net with Flatten -> Linear
    fails inside nirtorch."""
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), norse.LIFBoxCell(), torch.nn.Flatten(),
                              torch.nn.Linear(144, 5))
    with pytest.raises(AttributeError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        norse.to_nir(net, _t(make_frames()[0, 0]))
    record_unsupported("norse", "CNN with Flatten: Conv2d -> LIFBoxCell -> Flatten -> Linear", ["Conv2d", "LIF"],
                       "to_nir maps no Flatten (fails inside nirtorch)")


def test_load_and_preset_warns_and_the_named_fix_is_exact():
    """nb.load + Dynamics.preset('norse') on a LIFBoxCell export (tau = dt * tau_mem): the simulation
    warns naming the node and the import_graph call; that call gives 0 differing spikes."""
    path, ref = lifbox()
    raw = nb.load(path)
    fix = r"node '1'.*import_graph\(path, 'norse', export_dt=0.001\)"
    with pytest.warns(presets.ExporterSignatureWarning, match=fix):
        wrong = nb.simulate(raw, X, nb.Dynamics.preset("norse"))
    assert int((wrong["output"] != ref["spikes"]).sum()) > 100
    g, dyn, _ = quiet_import(path, "norse", export_dt=0.001)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fixed graph is not flagged again
        right = nb.simulate(g, X, dyn)
    assert int((right["output"] != ref["spikes"]).sum()) == 0


def test_paper_file_with_tau_in_seconds_is_not_flagged():
    from nirbridge import examples

    g = nb.load(examples.path("lif_norse"))
    x = np.zeros((5, 1) + tuple(g.plan[g.inputs[0]].output_shape), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nb.simulate(g, x, nb.Dynamics.preset("norse", dt=1e-4))


def test_cli_library_norse_on_the_lifbox_file():
    from interop_common import cli_simulate

    path, ref = lifbox()
    code, out, err = cli_simulate(path, "--preset", "norse")
    assert code == 0 and "--library norse --export-dt 0.001" in err
    assert int((out != ref["spikes"]).sum()) > 100
    code, out, err = cli_simulate(path, "--library", "norse", "--export-dt", "1e-3")
    assert code == 0, err
    assert int((out != ref["spikes"]).sum()) == 0


def test_round_trip_train_in_jax_export_to_norse(tmp_path):
    """Norse LIFBoxCell -> nirbridge (JAX) -> 10 Adam steps on the weights -> export_graph(..., 'norse')
    -> norse.torch.from_nir: its spikes are nirbridge's for the trained graph, in every backend."""
    pytest.importorskip("jax")
    import nir
    from interop_common import train_weights

    path, ref = lifbox()
    g, dyn, _ = quiet_import(path, "norse", export_dt=1e-3)
    trained = train_weights(g, dyn)
    assert not np.array_equal(trained.node("0").params["weight"], g.node("0").params["weight"])
    want = {b: nb.simulate(trained, X, dyn, backend=b)["output"] for b in ("reference", "jax", "torch")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", presets.ExporterQuirkWarning)
        out = presets.export_graph(trained, dyn, "norse")
    nb.save(out, tmp_path / "for_norse.nir")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = norse.from_nir(nir.read(str(tmp_path / "for_norse.nir")), dt=1e-3)
        s, state = [], None
        with torch.no_grad():
            for t in range(X.shape[0]):
                z, state = model(_t(X[t]), state)
                s.append(z.numpy().copy())
    s = np.array(s)
    assert want["reference"].sum() > 20
    for b, w in want.items():
        assert int((s != w).sum()) == 0, b


# ---------------------------------------------------------------------- the exporter's graph in memory
def test_in_memory_export_with_torch_tensors(backend):
    """norse.to_nir returns a graph whose weights and time constants are torch tensors: nb.load and
    import_graph take it as it is, equal bit for bit to the written file, and reproduce Norse."""
    cell, (w, b) = _lifbox()
    lin = _linear(w, b)
    ref = _sim(lin, cell)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mem = norse.to_nir(torch.nn.Sequential(lin, cell), _t(X[0, 0]))
    assert isinstance(mem.nodes["0"].weight, torch.Tensor) and isinstance(mem.nodes["1"].tau, torch.Tensor)
    loaded = nb.load(mem)
    assert loaded.equals(nb.load(_write(mem, "norse_mem")))  # the same numbers and dtypes as the file
    assert loaded.node("1").params["tau"].dtype == np.float32
    g, dyn, _ = quiet_import(mem, "norse", export_dt=1e-3)
    compare("norse", "LIFBoxCell, the exporter's in-memory graph (torch tensors)", g, dyn, backend, ref)
