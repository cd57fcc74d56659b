"""SpikingJelly 2.0.0: models built, run and exported with SpikingJelly, reproduced by nirbridge.

Preset ``"spikingjelly"``: Euler at the export dt (default 1e-4; an argument of the exporter, not
stored), hard reset to v_reset, ``v >= v_threshold``, current first, the voltage starts at v_reset
and is reported after the reset. The exporter names the Input ``input_1``: a valid name, no repair.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from interop_common import (
    NIN,
    NOUT,
    VTOL,
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

torch = pytest.importorskip("torch")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional, layer, neuron  # noqa: E402
    from spikingjelly.activation_based.nir_exchange import export_to_nir  # noqa: E402


def _run(node, scale=1.0, wb=None, syn=False, dt=None, wrap=None):
    w, b = make_weights() if wb is None else wb
    lin = torch.nn.Linear(NIN, NOUT)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w * np.float32(scale)))
        lin.bias.copy_(torch.from_numpy(b * np.float32(scale)))
    net = torch.nn.Sequential(lin, node if wrap is None else wrap(node))
    functional.reset_net(net)
    s, v, i = [], [], []
    with torch.no_grad():
        for t in range(X.shape[0]):
            out = net(torch.from_numpy(X[t]))
            s.append(out.numpy().copy())
            v.append(node.v.numpy().copy())
            if syn:
                i.append(node.c.numpy().copy() if hasattr(node, "c") else node.current.numpy().copy())
    functional.reset_net(net)
    ref = {"spikes": np.array(s), "v": np.array(v)}
    if syn:
        ref["i"] = np.array(i)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = export_to_nir(net, torch.from_numpy(X[0]), **({} if dt is None else {"dt": dt}))
    return _write(g, "spikingjelly"), ref


@functools.cache
def model(kind):
    if kind == "lif":
        return _run(neuron.LIFNode(tau=4.0, v_threshold=0.5))
    if kind == "lif_dt1e-3":
        return _run(neuron.LIFNode(tau=4.0, decay_input=False, v_threshold=1.0, v_reset=-0.1), 0.5, dt=1e-3)
    if kind == "cubalif":
        return _run(neuron.CUBALIFNode(c_decay=0.6, v_decay=0.8, v_threshold=0.5), 0.3, syn=True)
    if kind == "if":
        return _run(neuron.IFNode(v_threshold=0.8, v_reset=-0.1), 0.5)
    if kind == "lif_tie":
        return _run(neuron.LIFNode(tau=2.0, v_threshold=1.0), wb=make_tie_weights())
    if kind == "cubalif_tie":
        return _run(neuron.CUBALIFNode(c_decay=0.5, v_decay=0.5, v_threshold=1.0), wb=make_tie_weights(), syn=True)
    raise ValueError(kind)


def _load(path, **kw):
    g, dyn, warns = quiet_import(nb.load(path), "spikingjelly", **kw)
    assert warns and "dt" in str(warns[0].message)  # dt is not in the file
    return g, dyn


def test_lif_feed_forward(backend):
    path, ref = model("lif")
    g, dyn = _load(path)
    assert g.inputs == ["input_1"]  # SpikingJelly's name, loaded as is
    compare("spikingjelly", "LIFNode (Affine -> LIF)", g, dyn, backend, ref)


def test_lif_ties_pick_inclusive_threshold(backend):
    path, ref = model("lif_tie")
    g, dyn = _load(path)
    compare("spikingjelly", "LIFNode, v == threshold", g, dyn, backend, ref)
    if backend == "reference":
        assert int((nb.simulate(g, X, dyn.replace(threshold=">"))["output"] != ref["spikes"]).sum()) > 0


def test_export_dt_is_not_in_the_file(backend):
    """decay_input=False, v_reset=-0.1 (the initial voltage too), exported with dt=1e-3: the preset's
    default dt 1e-4 is wrong for it, dt=1e-3 given by hand reproduces it."""
    path, ref = model("lif_dt1e-3")
    g, dyn = _load(path, dt=1e-3)
    compare("spikingjelly", "LIFNode decay_input=False, v_reset=-0.1, dt=1e-3", g, dyn, backend, ref)
    if backend == "reference":
        wrong = nb.simulate(g, X, dyn.replace(dt=1e-4))["output"]
        assert int((wrong != ref["spikes"]).sum()) > 0


@pytest.mark.parametrize("kind", ["cubalif", "cubalif_tie"])
def test_cubalif(kind, backend):
    path, ref = model(kind)
    g, dyn = _load(path)
    compare("spikingjelly", "CUBALIFNode (Affine -> CubaLIF)" + (", v == threshold" if "tie" in kind else ""),
            g, dyn, backend, ref)


def test_soft_reset_and_recurrent_are_not_exportable():
    with pytest.raises(NotImplementedError, match="soft reset"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _run(neuron.LIFNode(tau=4.0, v_threshold=0.5, v_reset=None))
    record_unsupported("spikingjelly", "LIFNode(v_reset=None) (soft reset)", ["LIF"],
                       "export_to_nir raises NotImplementedError('NIR does not distinguish soft reset.')")

    def wrap(node):
        return layer.LinearRecurrentContainer(node, in_features=NOUT, out_features=NOUT, bias=True)

    with pytest.raises(Exception, match="(?i)iterat|trace"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _run(neuron.LIFNode(tau=4.0, v_threshold=0.5), wrap=wrap)
    record_unsupported("spikingjelly", "LinearRecurrentContainer", ["LIF"], "torch.fx cannot trace it",
                       recurrent=True)


# ---------------------------------------------------------------------- a conv net
@functools.cache
def conv_net():
    """layer.Conv2d(1->4, 3x3) -> LIFNode -> layer.AvgPool2d(2) -> layer.Flatten -> layer.Linear(36->5)
    -> LIFNode on 8x8 spike frames."""
    torch.manual_seed(0)
    x = make_frames()
    conv, lin = layer.Conv2d(1, 4, 3), layer.Linear(36, 5)
    with torch.no_grad():
        conv.weight.mul_(3.0)
        lin.weight.mul_(8.0).add_(0.5)  # excitatory enough that every output neuron spikes (input gain 1/tau)
    n1, n2 = neuron.LIFNode(tau=2.0, v_threshold=0.5), neuron.LIFNode(tau=3.0, v_threshold=0.5, v_reset=-0.1)
    net = torch.nn.Sequential(conv, n1, layer.AvgPool2d(2), layer.Flatten(), lin, n2)
    functional.reset_net(net)
    s, v, v1, s1 = [], [], [], []
    with torch.no_grad():
        for t in range(x.shape[0]):
            h = n1(conv(torch.from_numpy(x[t])))
            s1.append(h.numpy().copy())
            s.append(net[5](net[4](net[3](net[2](h)))).numpy().copy())
            v.append(n2.v.numpy().copy())
            v1.append(n1.v.numpy().copy())
    functional.reset_net(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = export_to_nir(net, torch.from_numpy(x[0]))
    ref = {"spikes": np.array(s), "v": np.array(v), "hidden": np.array(s1)}
    return _write(g, "spikingjelly_cnn"), x, ref, np.array(v1)


def test_conv_net(backend):
    path, x, ref, v1 = conv_net()
    g, dyn = _load(path)
    assert [s.node.type for s in g.plan.steps] == ["Input", "Conv2d", "LIF", "AvgPool2d", "Flatten", "Affine", "LIF",
                                                   "Output"]
    assert ref["spikes"].sum() > 40
    compare("spikingjelly", "CNN: Conv2d -> LIFNode -> AvgPool2d -> Flatten -> Linear -> LIFNode", g, dyn, backend,
            ref, neuron="_5", x=x)
    res = nb.simulate(g, x, dyn, backend=backend, record=["_1", ("_1", "v")])  # the conv layer's spikes, voltage
    assert ref["hidden"].sum() > 100
    assert int((res["_1"] != ref["hidden"]).sum()) == 0
    np.testing.assert_allclose(res[("_1", "v")], v1, rtol=0, atol=VTOL)


# ---------------------------------------------------------------------- back to SpikingJelly: export_graph
def _sj_import_run(graph, x, tmp_path, dt=1e-4):
    """Write ``graph``, read it with SpikingJelly's own importer at ``dt`` and run it step by step."""
    import nir
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    nb.save(graph, tmp_path / "for_spikingjelly.nir")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = import_from_nir(nir.read(str(tmp_path / "for_spikingjelly.nir")), dt=dt)
    functional.reset_net(net)
    out, state = [], None
    with torch.no_grad():
        for t in range(x.shape[0]):
            z, state = net(torch.from_numpy(x[t]), state)
            out.append(z.numpy().copy())
    return np.array(out)


def test_if_node(backend):
    path, ref = model("if")
    g, dyn = _load(path)
    assert [s.node.type for s in g.plan.steps] == ["Input", "Affine", "IF", "Output"] and ref["spikes"].sum() > 20
    compare("spikingjelly", "IFNode v_reset=-0.1 (Affine -> IF)", g, dyn, backend, ref)


@pytest.mark.parametrize("kind", ["lif", "cubalif", "if", "cnn"])
def test_round_trip_train_in_jax_export_to_spikingjelly(kind, tmp_path):
    """SpikingJelly -> nirbridge (JAX) -> 10 Adam steps on the weights -> export_graph(...,
    'spikingjelly') -> import_from_nir: its spikes are nirbridge's for the trained graph, in every
    backend."""
    pytest.importorskip("jax")
    from interop_common import train_weights

    if kind == "cnn":
        path, x, ref, _ = conv_net()
    else:
        (path, ref), x = model(kind), X
    g, dyn = _load(path)
    assert int((nb.simulate(g, x, dyn)["output"] != ref["spikes"]).sum()) == 0  # the way in
    trained = train_weights(g, dyn, x=x, lr=5e-2)
    w0 = next(s.name for s in g.plan.steps if s.node.type in ("Affine", "Conv2d"))
    assert not np.array_equal(trained.node(w0).params["weight"], g.node(w0).params["weight"])  # it trained
    want = {b: nb.simulate(trained, x, dyn, backend=b)["output"] for b in ("reference", "jax", "torch")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nb.presets.ExporterQuirkWarning)
        out = nb.presets.export_graph(trained, dyn, "spikingjelly")
    got = _sj_import_run(out, x, tmp_path)
    assert want["reference"].sum() > 20
    for b, w in want.items():
        assert int((got != w).sum()) == 0, b
    assert int((got != ref["spikes"]).sum()) > 0  # training changed the spikes


def test_export_to_spikingjelly_refuses_what_its_importer_cannot_build():
    path, _ = model("lif")
    g, dyn = _load(path)
    lif = next(s.name for s in g.plan.steps if s.node.type == "LIF")
    thr = np.linspace(0.4, 0.6, NOUT).astype(np.float32)
    with pytest.raises(nb.errors.UnsupportedError, match=rf"node '{lif}', field 'v_threshold'.*one value per layer"):
        nb.presets.export_graph(g.replace_params({lif: {"v_threshold": thr}}), dyn, "spikingjelly")
    with pytest.raises(nb.errors.UnsupportedError, match=rf"node '{lif}', field 'reset'"):
        nb.presets.export_graph(g, dyn.replace(reset="subtract"), "spikingjelly")
    fast = g.replace_params({lif: {"tau": np.full(NOUT, 1e-4, np.float32)}})  # tau = dt: LIFNode needs tau > 1 step
    with pytest.raises(nb.errors.UnsupportedError, match=rf"node '{lif}', field 'tau'.*tau > dt"):
        nb.presets.export_graph(fast, dyn, "spikingjelly")
