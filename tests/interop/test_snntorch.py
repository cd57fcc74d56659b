"""snnTorch 1.0.0: models built, run and exported with snnTorch, reproduced by nirbridge.

Preset ``"snntorch"``: Euler at dt = 1e-4 (hard-coded in the exporter), subtraction applied one
step late (``reset_delay=True``), ``>``, current first, voltage before the reset, and a recurrent
Affine that gives its bias from step 0. What the file does not hold (the reset mechanism,
``reset_delay``, dt) is stated per test; ``import_graph`` warns about it.
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
    make_rec_weights,
    make_tie_weights,
    make_weights,
    quiet_import,
    write_nir,
)

import nirbridge as nb
from nirbridge import presets

snn = pytest.importorskip("snntorch")
torch = pytest.importorskip("torch")
from snntorch.export_nir import export_to_nir  # noqa: E402  (snntorch.export_to_nir does not exist in 1.0.0)

BETA = np.array([0.8, 0.85, 0.9, 0.92, 0.95, 0.7], np.float32)
ALPHA = np.array([0.5, 0.6, 0.7, 0.75, 0.8, 0.9], np.float32)
THR = np.array([0.5, 0.7, 0.9, 1.0, 1.1, 0.6], np.float32)


def _linear(w, b):
    lin = torch.nn.Linear(NIN, NOUT)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        lin.bias.copy_(torch.from_numpy(b))
    return lin


def _run(neuron, w, b, syn=False):
    """Run Linear -> neuron step by step in snnTorch, export it; return (path, traces)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(_linear(w, b), neuron)
    neuron.reset_mem()
    s, v, i = [], [], []
    with torch.no_grad():
        for t in range(X.shape[0]):
            out = net(torch.from_numpy(X[t]))
            s.append(out.numpy().copy())
            v.append(neuron.mem.numpy().copy())
            if syn:
                i.append(neuron.syn.numpy().copy())
    neuron.reset_mem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nirtorch's deprecation warning for extract_nir_graph
        g = export_to_nir(net, torch.from_numpy(X[0]), ignore_dims=[0])
    ref = {"spikes": np.array(s), "v": np.array(v)}
    if syn:
        ref["i"] = np.array(i)
    return write_nir(g, "snntorch"), ref


@functools.cache
def leaky(reset="subtract", tie=False):
    w, b = make_tie_weights() if tie else make_weights()
    beta, thr = (np.full(6, 0.5, np.float32), np.ones(6, np.float32)) if tie else (BETA, THR)
    return _run(snn.Leaky(beta=torch.from_numpy(beta), threshold=torch.from_numpy(thr), init_hidden=True,
                          reset_mechanism=reset), w, b)


@functools.cache
def synaptic(reset="subtract", tie=False):
    w, b = make_tie_weights() if tie else make_weights(scale=0.6)
    if not tie:
        w, b = w * np.float32(0.3), b * np.float32(0.3)
    alpha, beta, thr = ((np.full(6, 0.5, np.float32),) * 2 + (np.ones(6, np.float32),)) if tie else (ALPHA, BETA, THR)
    return _run(snn.Synaptic(alpha=torch.from_numpy(alpha), beta=torch.from_numpy(beta),
                             threshold=torch.from_numpy(thr), init_hidden=True, reset_mechanism=reset), w, b, syn=True)


@functools.cache
def recurrent(kind, reset="subtract"):
    wr, br = make_rec_weights()
    cls, kw, scale = ((snn.RLeaky, dict(beta=0.9), 1.0) if kind == "rleaky"
                      else (snn.RSynaptic, dict(alpha=0.7, beta=0.9), 0.3))
    n = cls(linear_features=NOUT, threshold=0.8, init_hidden=True, reset_mechanism=reset, **kw)
    with torch.no_grad():
        n.recurrent.weight.copy_(torch.from_numpy(wr))
        n.recurrent.bias.copy_(torch.from_numpy(br))
    w, b = make_weights()
    return _run(n, w * np.float32(scale), b * np.float32(scale), syn=kind == "rsynaptic")


def _load(path):
    g, dyn, warns = quiet_import(nb.load(path), "snntorch")
    # the reset mechanism and reset_delay are not in the file: one warning per neuron says what is assumed
    assert warns and all("reset" in str(w.message) for w in warns)
    return g, dyn


def test_leaky_feed_forward(backend):
    path, ref = leaky()
    g, dyn = _load(path)
    assert [s.node.type for s in g.plan.steps] == ["Input", "Affine", "LIF", "Output"]
    compare("snntorch", "Leaky (Affine -> LIF)", g, dyn, backend, ref)


def test_leaky_ties_pick_strict_threshold(backend):
    # weights on a 0.25 grid and beta 0.5: v lands exactly on the threshold; snnTorch does not spike there
    path, ref = leaky(tie=True)
    g, dyn = _load(path)
    n = next(s.name for s in g.plan.steps if s.node.type == "LIF")
    assert int((ref["v"] == 1.0).sum()) > 0  # ties happen
    compare("snntorch", "Leaky, v == threshold", g, dyn, backend, ref)
    if backend == "reference":  # '>=' would spike at the ties
        out = nb.simulate(g, X, dyn.replace(threshold=">="), record=[(n, "v")])
        assert int((out["output"] != ref["spikes"]).sum()) > 0


def test_synaptic_cubalif(backend):
    path, ref = synaptic()
    g, dyn = _load(path)
    assert "CubaLIF" in [s.node.type for s in g.plan.steps]
    compare("snntorch", "Synaptic (Affine -> CubaLIF)", g, dyn, backend, ref)


def test_synaptic_ties(backend):
    path, ref = synaptic(tie=True)
    g, dyn = _load(path)
    compare("snntorch", "Synaptic, v == threshold", g, dyn, backend, ref)


@pytest.mark.parametrize("kind", ["rleaky", "rsynaptic"])
def test_recurrent(kind, backend):
    path, ref = recurrent(kind)
    g, dyn = _load(path)
    assert len(g.plan.recurrent) == 1  # neuron <-> w_rec (an Affine with the recurrent bias)
    label = "RLeaky (LIF + recurrent Affine)" if kind == "rleaky" else "RSynaptic (CubaLIF + recurrent Affine)"
    compare("snntorch", label, g, dyn, backend, ref)
    if backend == "reference":
        # the NIR cycle convention (the recurrent edge carries zeros at step 0) drops the bias at step 0
        out = nb.simulate(g, X, dyn.replace(recurrent_start="zero"))
        assert int((out["output"] != ref["spikes"]).sum()) > 0


def test_reset_zero_is_not_in_the_file_but_expressible(backend):
    """reset_mechanism='zero' writes the same file as 'subtract': the default preset cannot know.
    Leaky: v = beta (1 - R) v + x, i.e. reset to 0 in the step of the spike, voltage before the
    reset. Synaptic: v = (1 - R)(beta v + i): the late reset to 0 drops the new input too."""
    path_z, ref_z = leaky(reset="zero")
    path_s, _ = leaky()
    assert nb.load(path_z).equals(nb.load(path_s))  # identical files
    g, dyn = _load(path_z)
    compare("snntorch", "Leaky reset_mechanism='zero'", g,
            dyn.replace(reset="zero", reset_timing="same", voltage="pre"), backend, ref_z)
    if backend == "reference":
        assert int((nb.simulate(g, X, dyn)["output"] != ref_z["spikes"]).sum()) > 0  # the default preset
    path, ref = synaptic(reset="zero")
    g, dyn = _load(path)
    compare("snntorch", "Synaptic reset_mechanism='zero'", g, dyn.replace(reset="zero"), backend, ref)


# ---------------------------------------------------------------------- a conv net
@functools.cache
def conv_net(reset1="subtract"):
    """Conv2d(1->4, 3x3) -> Leaky(reset_mechanism=reset1) -> AvgPool2d(2) -> Flatten -> Linear(36->5)
    -> Leaky on 8x8 spike frames. beta and threshold are per-neuron tensors of the layer's shape (a
    scalar beta does not export); MaxPool2d has no NIR node, AvgPool2d has. ``ref["hidden"]``: the
    conv layer's spikes."""
    torch.manual_seed(0)
    x = make_frames()
    conv, lin = torch.nn.Conv2d(1, 4, 3), torch.nn.Linear(36, 5)
    with torch.no_grad():
        conv.weight.mul_(2.0)
        lin.weight.mul_(4.0).add_(0.1)  # excitatory enough that every output neuron spikes
    beta1 = torch.tensor([0.7, 0.8, 0.9, 0.95]).reshape(4, 1, 1).expand(4, 6, 6).contiguous()
    l1 = snn.Leaky(beta=beta1, threshold=torch.full((4, 6, 6), 1.0), init_hidden=True, reset_mechanism=reset1)
    l2 = snn.Leaky(beta=torch.from_numpy(BETA[:5].copy()), threshold=torch.full((5,), 0.5), init_hidden=True)
    net = torch.nn.Sequential(conv, l1, torch.nn.AvgPool2d(2), torch.nn.Flatten(), lin, l2)
    s, v, v1, s1 = [], [], [], []
    with torch.no_grad():
        for t in range(x.shape[0]):
            h = net[1](net[0](torch.from_numpy(x[t])))
            s1.append(h.numpy().copy())
            s.append(net[5](net[4](net[3](net[2](h)))).numpy().copy())
            v.append(l2.mem.numpy().copy())
            v1.append(l1.mem.numpy().copy())
    l1.reset_mem()
    l2.reset_mem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = export_to_nir(net, torch.from_numpy(x[0]), ignore_dims=[0])
    ref = {"spikes": np.array(s), "v": np.array(v), "hidden": np.array(s1)}
    return write_nir(g, "snntorch_cnn"), x, ref, np.array(v1)


def test_conv_net(backend):
    path, x, ref, v1 = conv_net()
    g, dyn = _load(path)
    assert [s.node.type for s in g.plan.steps] == ["Input", "Conv2d", "LIF", "AvgPool2d", "Flatten", "Affine", "LIF",
                                                   "Output"]
    assert ref["spikes"].sum() > 40
    compare("snntorch", "CNN: Conv2d -> Leaky -> AvgPool2d -> Flatten -> Linear -> Leaky", g, dyn, backend, ref,
            neuron="5", x=x)
    # the conv layer's voltage too (4 x 6 x 6 neurons per sample); tolerance as for every voltage here
    v = nb.simulate(g, x, dyn, backend=backend, record=[("1", "v")])[("1", "v")]
    np.testing.assert_allclose(v, v1, rtol=0, atol=VTOL)


# ---------------------------------------------------------------------- snnTorch's own option names
@pytest.mark.parametrize("kind", ["rleaky", "rsynaptic"])
def test_recurrent_zero_reset_by_its_own_name(kind, backend):
    """RLeaky / RSynaptic(reset_mechanism='zero'): import_graph(path, 'snntorch',
    reset_mechanism='zero') reproduces the recurrent layer (its bias acting from step 0)."""
    path, ref = recurrent(kind, "zero")
    g, dyn, _ = quiet_import(path, "snntorch", reset_mechanism="zero")
    assert len(g.plan.recurrent) == 1 and ref["spikes"].sum() > 20
    compare("snntorch", f"{'RLeaky' if kind == 'rleaky' else 'RSynaptic'} reset_mechanism='zero' (import_graph "
            "option)", g, dyn, backend, ref)
    if backend == "reference":  # the default reading is wrong for it
        g0, dyn0, _ = quiet_import(path, "snntorch")
        assert int((nb.simulate(g0, X, dyn0)["output"] != ref["spikes"]).sum()) > 0


def test_conv_net_with_mixed_layers_by_their_own_names(backend):
    """The CNN with a zero-reset conv layer and a subtracting output layer: options={'1':
    {'reset_mechanism': 'zero'}} reproduces the output, the conv layer's recorded spikes and both
    layers' voltages."""
    path, x, ref, v1 = conv_net("zero")
    g, dyn, _ = quiet_import(path, "snntorch", options={"1": {"reset_mechanism": "zero"}})
    assert ref["hidden"].sum() > 100 and ref["spikes"].sum() > 40
    compare("snntorch", "CNN, conv layer reset_mechanism='zero', output layer 'subtract' (options per node)", g, dyn,
            backend, ref, neuron="5", x=x)
    res = nb.simulate(g, x, dyn, backend=backend, record=["1", ("1", "v")])
    assert int((res["1"] != ref["hidden"]).sum()) == 0
    np.testing.assert_allclose(res[("1", "v")], v1, rtol=0, atol=VTOL)
    if backend == "reference":  # one setting for both layers is wrong
        g0, dyn0, _ = quiet_import(path, "snntorch", reset_mechanism="zero")
        assert int((nb.simulate(g0, x, dyn0)["output"] != ref["spikes"]).sum()) > 0


def test_reset_zero_by_its_own_name(backend):
    """import_graph(path, 'snntorch', reset_mechanism='zero'): the one call, snnTorch's own option."""
    path, ref = leaky(reset="zero")
    g, dyn, warns = quiet_import(path, "snntorch", reset_mechanism="zero")
    assert not [w for w in warns if "assumes" in str(w.message)]  # stated: nothing assumed
    compare("snntorch", "Leaky reset_mechanism='zero' (import_graph option)", g, dyn, backend, ref)
    path, ref = synaptic(reset="zero")
    g, dyn, _ = quiet_import(path, "snntorch", reset_mechanism="zero")
    compare("snntorch", "Synaptic reset_mechanism='zero' (import_graph option)", g, dyn, backend, ref)


@functools.cache
def leaky_no_delay(reset):
    w, b = make_weights()
    return _run(snn.Leaky(beta=torch.from_numpy(BETA), threshold=torch.from_numpy(THR), init_hidden=True,
                          reset_mechanism=reset, reset_delay=False), w, b)


def test_reset_delay_false(backend):
    reset = "zero"
    path, ref = leaky_no_delay(reset)
    g, dyn, _ = quiet_import(path, "snntorch", reset_mechanism=reset, reset_delay=False)
    compare("snntorch", f"Leaky reset_delay=False, {reset}", g, dyn, backend, ref)
    if backend == "reference":  # reset_delay=True gives the same spikes, but mem before the reset
        d0 = nb.Dynamics.preset("snntorch", reset_mechanism="zero")
        n = next(s.name for s in g.plan.steps if s.node.type == "LIF")
        v = nb.simulate(g, X, d0, record=[(n, "v")])[(n, "v")]
        assert float(np.max(np.abs(v - ref["v"]))) > 0.1


def test_reset_delay_false_with_subtraction_is_an_error_naming_why():
    # snnTorch re-tests the spike after a second subtraction where v stays above the threshold
    path, ref = leaky_no_delay("subtract")
    v = ref["v"]
    assert int((v > THR).sum()) > 0  # post-reset voltages above the threshold: the case no rule covers
    with pytest.raises(nb.errors.DynamicsError, match="reset_delay=False with reset_mechanism='subtract'"):
        presets.import_graph(path, "snntorch", reset_delay=False)


@functools.cache
def mixed_layers():
    """Linear -> Leaky(reset_mechanism='zero') -> Linear -> Leaky('subtract'): layers that differ.
    Returns the file, the output spikes, layer 1's spikes and both voltages."""
    w1, b1 = make_weights(seed=1, scale=0.8)
    w2, b2 = make_weights(seed=4, scale=0.9, shift=0.3)
    w2 = np.ascontiguousarray(w2[:, :NOUT])
    l1 = snn.Leaky(beta=torch.from_numpy(BETA), threshold=torch.from_numpy(THR), init_hidden=True,
                   reset_mechanism="zero")
    l2 = snn.Leaky(beta=torch.from_numpy(BETA[::-1].copy()), threshold=torch.from_numpy(THR * 0.8),
                   init_hidden=True)
    lin2 = torch.nn.Linear(NOUT, NOUT)
    with torch.no_grad():
        lin2.weight.copy_(torch.from_numpy(w2))
        lin2.bias.copy_(torch.from_numpy(b2))
    net = torch.nn.Sequential(_linear(w1, b1), l1, lin2, l2)
    s1, s2, v1, v2 = [], [], [], []
    with torch.no_grad():
        for t in range(X.shape[0]):
            h = net[1](net[0](torch.from_numpy(X[t])))
            s1.append(h.numpy().copy())
            s2.append(net[3](net[2](h)).numpy().copy())
            v1.append(l1.mem.numpy().copy())
            v2.append(l2.mem.numpy().copy())
    l1.reset_mem()
    l2.reset_mem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = export_to_nir(net, torch.from_numpy(X[0]), ignore_dims=[0])
    return write_nir(g, "snntorch_mixed"), np.array(s2), np.array(s1), np.array(v1), np.array(v2)


def test_mixed_layer_settings_per_node(backend):
    path, out, hidden, v1, v2 = mixed_layers()
    g = nb.load(path)
    lifs = [s.name for s in g.plan.steps if s.node.type == "LIF"]
    assert len(lifs) == 2 and hidden.sum() > 20 and out.sum() > 20
    g, dyn, _ = quiet_import(g, "snntorch", options={lifs[0]: {"reset_mechanism": "zero"}})
    res = nb.simulate(g, X, dyn, backend=backend, record=[lifs[0], (lifs[0], "v"), (lifs[1], "v")])
    assert int((res["output"] != out).sum()) == 0
    assert int((res[lifs[0]] != hidden).sum()) == 0  # the recorded hidden layer too
    np.testing.assert_allclose(res[(lifs[0], "v")], v1, rtol=0, atol=VTOL)
    np.testing.assert_allclose(res[(lifs[1], "v")], v2, rtol=0, atol=VTOL)
    if backend == "reference":  # one setting for both layers is wrong for one of them
        for mech in ("zero", "subtract"):
            wrong = nb.simulate(g, X, nb.Dynamics.preset("snntorch", reset_mechanism=mech))
            assert int((wrong["output"] != out).sum()) > 0


def test_load_and_preset_warns_and_the_named_fix_is_exact():
    """nb.load + Dynamics.preset('snntorch') on a reset_mechanism='zero' export: the file cannot say
    it, so the simulation warns naming the option; the option gives 0 differing spikes."""
    path, ref = leaky(reset="zero")
    g = nb.load(path)
    with pytest.warns(presets.LostInformationWarning, match=r"Dynamics.preset\('snntorch', reset_mechanism='zero'\)"):
        wrong = nb.simulate(g, X, nb.Dynamics.preset("snntorch"))
    assert int((wrong["output"] != ref["spikes"]).sum()) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fix is silent
        right = nb.simulate(g, X, nb.Dynamics.preset("snntorch", reset_mechanism="zero"))
    assert int((right["output"] != ref["spikes"]).sum()) == 0


def test_reset_mechanism_none_is_an_error_naming_it():
    path, _ = leaky()
    with pytest.raises(nb.errors.DynamicsError, match="reset_mechanism='none'"):
        presets.import_graph(path, "snntorch", reset_mechanism="none")


def test_cli_library_option_on_the_zero_reset_file():
    from interop_common import cli_simulate

    path, ref = leaky(reset="zero")
    code, out, err = cli_simulate(path, "--preset", "snntorch")
    assert code == 0 and "--library snntorch --option reset_mechanism=zero" in err
    assert int((out != ref["spikes"]).sum()) > 0
    code, out, err = cli_simulate(path, "--library", "snntorch", "--option", "reset_mechanism=zero")
    assert code == 0, err
    assert int((out != ref["spikes"]).sum()) == 0
    path, out_ref, hidden, _, _ = mixed_layers()
    first = [s.name for s in nb.load(path).plan.steps if s.node.type == "LIF"][0]
    code, out, err = cli_simulate(path, "--library", "snntorch", "--option", f"{first}:reset_mechanism=zero")
    assert code == 0, err
    assert int((out != out_ref).sum()) == 0


# ---------------------------------------------------------------------- back to snnTorch: export_graph
def _snntorch_import_run(graph, x=X, tmp=None):
    """Write ``graph``, read it with snnTorch's own importer and run it step by step: the spikes."""
    import nir
    from snntorch.import_nir import import_from_nir

    path = write_nir(graph.to_nir(), "for_snntorch") if tmp is None else tmp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = import_from_nir(nir.read(str(path)))
        out, state = [], None
        with torch.no_grad():
            for t in range(x.shape[0]):
                r = net(torch.from_numpy(x[t]), state)
                z, state = r if isinstance(r, tuple) else (r, state)
                out.append(z.numpy().copy())
    return np.array(out)


@functools.cache
def leaky_importable():
    """What snnTorch's importer builds: Leaky(reset_mechanism='zero', reset_delay=False), one threshold;
    per-neuron beta."""
    w, b = make_weights(scale=0.8)
    return _run(snn.Leaky(beta=torch.from_numpy(BETA), threshold=torch.full((6,), 0.8), init_hidden=True,
                          reset_mechanism="zero", reset_delay=False), w, b)


def test_round_trip_train_in_jax_export_to_snntorch():
    """snnTorch -> nirbridge (JAX) -> 10 Adam steps on the weights -> export_graph(..., 'snntorch') ->
    snnTorch's importer: its spikes are nirbridge's for the trained graph, in every backend."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    path, ref = leaky_importable()
    g, dyn, _ = quiet_import(path, "snntorch", reset_mechanism="zero", reset_delay=False)
    assert int((nb.simulate(g, X, dyn)["output"] != ref["spikes"]).sum()) == 0  # the way in
    model = nb.to_jax(g, dyn)
    mask = model.mask()
    x = jax.numpy.asarray(X)
    target = jax.numpy.full((NOUT,), 0.3)

    def loss(p):
        out = model.run(p, x, record=[("1", "v")])[0]
        return ((out["output"].mean(axis=(0, 1)) - target) ** 2).sum() + 1e-3 * (out[("1", "v")] ** 2).mean()

    opt = optax.adam(2e-2)
    params, state = model.params, opt.init(model.params)
    step = jax.jit(jax.value_and_grad(loss))
    for _ in range(10):
        _, grads = step(params)
        with jax.numpy_dtype_promotion("standard"):
            updates, state = opt.update(grads, state, params)
        updates = jax.tree.map(lambda u, m: u if m else u * 0, updates, mask)  # the weights only
        params = optax.apply_updates(params, updates)
    trained = nb.from_jax(model, params)
    assert not np.array_equal(trained.node("0").params["weight"], g.node("0").params["weight"])  # it trained
    want = {b: nb.simulate(trained, X, dyn, backend=b)["output"] for b in ("reference", "jax", "torch")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", presets.ExporterQuirkWarning)
        out = presets.export_graph(trained, dyn, "snntorch")
    got = _snntorch_import_run(out)
    assert want["reference"].sum() > 20
    for b, w in want.items():
        assert int((got != w).sum()) == 0, b


def test_export_to_snntorch_refuses_what_its_importer_cannot_build():
    path, _ = leaky()
    g, dyn, _ = quiet_import(path, "snntorch")  # the default Leaky: subtraction one step late
    with pytest.raises(nb.errors.UnsupportedError, match=r"node '1', field 'reset_timing'.*reset_delay=False"):
        presets.export_graph(g, dyn, "snntorch")
    path, _ = leaky(reset="zero")  # per-neuron thresholds
    g, dyn, _ = quiet_import(path, "snntorch", reset_mechanism="zero", reset_delay=False)
    with pytest.raises(nb.errors.UnsupportedError, match=r"node '1', field 'v_threshold'.*one threshold"):
        presets.export_graph(g, dyn, "snntorch")
    # a recurrent graph: snnTorch's own importer fails on it (also on the file as snnTorch wrote it)
    path, _ = recurrent("rleaky", "zero")
    g, dyn, _ = quiet_import(path, "snntorch", reset_mechanism="zero", reset_delay=False)
    with pytest.raises(nb.errors.UnsupportedError, match=r"field 'edges'.*closes a loop.*AttributeError"):
        presets.export_graph(g, dyn, "snntorch")
    with pytest.raises(AttributeError, match="items"):
        _snntorch_import_run(None, tmp=path)


def test_cli_export_to_snntorch_and_the_refusal(tmp_path):
    """``nirbridge export FILE --library snntorch --option ... --to snntorch``: snnTorch's importer
    reads the written file and gives the model's own spikes; the default Leaky is refused naming
    the setting, as one shell error line."""
    import contextlib
    import io

    from nirbridge.cli import main

    def cli(*argv):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main([str(a) for a in argv])
        return code, err.getvalue()

    path, ref = leaky_importable()
    out = tmp_path / "for_snntorch.nir"
    code, err = cli("export", path, "--library", "snntorch", "--option", "reset_mechanism=zero", "--option",
                    "reset_delay=false", "--to", "snntorch", "--out", out)
    assert code == 0, err
    got = _snntorch_import_run(None, tmp=out)
    assert ref["spikes"].sum() > 20
    assert int((got != ref["spikes"]).sum()) == 0
    code, err = cli("export", leaky()[0], "--library", "snntorch", "--to", "snntorch", "--out", out)
    last = err.strip().splitlines()[-1]  # after the warning that the file does not say its reset mechanism
    assert code == 2 and last.startswith("nirbridge: error: ") and "field 'reset_timing'" in last
    assert "reset_delay=False" in last
