"""Spyx 1.0.0 (JAX, Flax NNX): models built, run and exported with Spyx, reproduced by nirbridge.

Preset ``"spyx"``: ``beta = 1 - dt/tau`` at the export dt (an argument of ``to_nir``, not stored),
the input enters unscaled (Spyx ignores r and w_in; the file holds ``r = beta`` and ``w_in = 1``),
``>``, subtractive reset (after the decay in LIF/RLIF, before it in CuBaLIF/RCuBaLIF), the voltage
before the reset, and each layer's spike one step late. ``import_graph(graph, "spyx", dt=...)``
also reroutes the recurrent layers' input, which the exporter sends through the recurrent weights.
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
)
from interop_common import write_nir as _write

import nirbridge as nb
from nirbridge import presets

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    jax = pytest.importorskip("jax")
    pytest.importorskip("spyx")
    import jax.numpy as jnp  # noqa: E402
    import spyx.nir as snir  # noqa: E402
    import spyx.nn as snn  # noqa: E402
    from flax import nnx  # noqa: E402

DT = 1e-3
BETA = np.array([0.8, 0.85, 0.9, 0.92, 0.95, 0.7], np.float32)
ALPHA = np.array([0.5, 0.6, 0.7, 0.75, 0.8, 0.9], np.float32)
THR = np.array([0.5, 0.7, 0.9, 1.0, 1.1, 0.6], np.float32)


def _run(neuron, kind, scale=1.0, wb=None):
    w, b = make_weights() if wb is None else wb
    lin = nnx.Linear(NIN, NOUT, rngs=nnx.Rngs(0))
    lin.kernel[...] = jnp.array((w * np.float32(scale)).T)
    lin.bias[...] = jnp.array(b * np.float32(scale))
    model = snn.Sequential(lin, neuron)
    state = model.initial_state(X.shape[1])
    s, v, i = [], [], []
    for t in range(X.shape[0]):
        out, state = model(jnp.array(X[t]), state)
        st = np.asarray(state[1])
        s.append(np.asarray(out))
        if kind == "cuba":
            v.append(st[:, :NOUT])
            i.append(st[:, NOUT:])
        else:
            v.append(st)
    ref = {"spikes": np.array(s, dtype=np.float32), "v": np.array(v)}
    if kind == "cuba":
        ref["i"] = np.array(i)
    g = snir.to_nir(model, {"input": np.array([NIN])}, {"output": np.array([NOUT])}, dt=DT)
    return _write(g, "spyx"), ref


@functools.cache
def model(name):
    # Spyx's own code relies on JAX's standard dtype promotion (the suite makes it strict)
    with warnings.catch_warnings(), jax.numpy_dtype_promotion("standard"):
        warnings.simplefilter("ignore")
        return _model(name)


def _model(name):
    rngs = nnx.Rngs(0)
    if name == "lif":
        n = snn.LIF((NOUT,), beta=0.9, threshold=jnp.array(THR), rngs=rngs)
        n.beta = nnx.Param(jnp.array(BETA))
        return _run(n, "lif")
    if name == "cubalif":
        n = snn.CuBaLIF((NOUT,), alpha=0.5, beta=0.9, threshold=jnp.array(THR), rngs=rngs)
        n.alpha, n.beta = nnx.Param(jnp.array(ALPHA)), nnx.Param(jnp.array(BETA))
        return _run(n, "cuba", 0.3)
    wr, _ = make_rec_weights()
    if name == "rlif":
        n = snn.RLIF((NOUT,), beta=0.9, threshold=0.8, rngs=rngs)
        n.recurrent_w[...] = jnp.array(wr.T)  # feedback s @ recurrent_w == Wr s
        return _run(n, "lif")
    if name == "rcubalif":
        n = snn.RCuBaLIF((NOUT,), alpha=0.7, beta=0.9, threshold=0.8, rngs=rngs)
        n.recurrent_w[...] = jnp.array(wr.T)
        return _run(n, "cuba", 0.3)
    if name == "lif_tie":
        return _run(snn.LIF((NOUT,), beta=0.5, threshold=1.0, rngs=rngs), "lif", wb=make_tie_weights())
    if name == "cubalif_tie":
        return _run(snn.CuBaLIF((NOUT,), alpha=0.5, beta=0.5, threshold=1.0, rngs=rngs), "cuba",
                    wb=make_tie_weights())
    raise ValueError(name)


LABELS = {"lif": "LIF (Affine -> LIF)", "cubalif": "CuBaLIF (Affine -> CubaLIF)",
          "rlif": "RLIF (nested graph: LIF + recurrent Linear)", "rcubalif": "RCuBaLIF (nested: CubaLIF + Linear)",
          "lif_tie": "LIF, v == threshold", "cubalif_tie": "CuBaLIF, v == threshold"}


@pytest.mark.parametrize("name", ["lif", "cubalif", "lif_tie", "cubalif_tie"])
def test_feed_forward(name, backend):
    path, ref = model(name)
    raw = nb.load(path)
    # the preset alone reproduces Spyx (it ignores r and w_in) ...
    compare("spyx", LABELS[name] + " (preset only)", raw, nb.Dynamics.preset("spyx", dt=DT), backend, ref)
    # ... and so does the corrected graph, whose r and w_in now mean what NIR says
    g, dyn, warns = quiet_import(raw, "spyx", dt=DT)
    assert any(w.category is presets.ExporterQuirkWarning and "r [" in str(w.message) for w in warns)
    compare("spyx", LABELS[name], g, dyn, backend, ref)
    if backend == "reference":
        assert int((nb.simulate(g, X, dyn.replace(input_gain="nir"))["output"] != ref["spikes"]).sum()) == 0
        # the file's r = beta taken as NIR's r is wrong
        assert int((nb.simulate(raw, X, dyn.replace(input_gain="nir"))["output"] != ref["spikes"]).sum()) > 0


@pytest.mark.parametrize("name", ["rlif", "rcubalif"])
def test_recurrent(name, backend):
    path, ref = model(name)
    raw = nb.load(path)
    g, dyn, warns = quiet_import(raw, "spyx", dt=DT)
    rerouted = [w for w in warns if "routed" in str(w.message)]
    assert len(rerouted) == 1 and "layer_1.input" in str(rerouted[0].message)
    compare("spyx", LABELS[name], g, dyn, backend, ref)
    if backend == "reference":  # the file's edges taken literally: the input passes through w_rec
        assert int((nb.simulate(raw, X, dyn)["output"] != ref["spikes"]).sum()) > 0


# ---------------------------------------------------------------------- a conv net
@functools.cache
def conv_net():
    with warnings.catch_warnings(), jax.numpy_dtype_promotion("standard"):
        warnings.simplefilter("ignore")
        return _conv_net()


def _conv_net():
    """nnx.Conv(1->4, 3x3, VALID) -> LIF -> SumPool(2) -> Flatten -> nnx.Linear(36->5) -> LIF on 8x8
    spike frames. Spyx runs channels-last (B, H, W, C); the file is channels-first as NIR says."""
    x = make_frames()
    xl = np.ascontiguousarray(x.transpose(0, 1, 3, 4, 2))
    rngs = nnx.Rngs(0)
    conv = nnx.Conv(1, 4, kernel_size=(3, 3), padding="VALID", rngs=rngs)
    conv.kernel[...] = conv.kernel[...] * 2.0
    lin = nnx.Linear(36, 5, rngs=rngs)
    lin.kernel[...] = lin.kernel[...] * 0.5 + 0.05  # every output neuron spikes, |v| stays below 10
    l1 = snn.LIF((6, 6, 4), beta=0.9, threshold=1.0, rngs=rngs)
    l1.beta = nnx.Param(jnp.broadcast_to(jnp.array([0.7, 0.8, 0.9, 0.95]), (6, 6, 4)))  # per channel (H, W, C)
    model = snn.Sequential(conv, l1, snn.SumPool(2, 2, "VALID"), snn.Flatten(), lin,
                           snn.LIF((5,), beta=0.8, threshold=1.0, rngs=rngs))
    state = model.initial_state(x.shape[1])
    s, v, v1 = [], [], []
    for t in range(x.shape[0]):
        out, state = model(jnp.array(xl[t]), state)
        s.append(np.asarray(out))
        v.append(np.asarray(state[5]))
        v1.append(np.asarray(state[1]).transpose(0, 3, 1, 2))  # (B, H, W, C) -> NIR's (B, C, H, W)
    g = snir.to_nir(model, {"input": np.array([1, 8, 8])}, {"output": np.array([5])}, dt=DT)
    return _write(g, "spyx_cnn"), x, {"spikes": np.array(s, dtype=np.float32), "v": np.array(v)}, np.array(v1)


def test_conv_net(backend):
    """The exporter writes a channels-first Flatten but leaves the next Linear's columns in Spyx's
    channels-last order: import_graph reorders them (one warning); the file as written gives other
    spikes."""
    path, x, ref, v1 = conv_net()
    raw = nb.load(path)
    assert [s.node.type for s in raw.plan.steps] == ["Input", "Conv2d", "LIF", "SumPool2d", "Flatten", "Affine",
                                                     "LIF", "Output"]
    g, dyn, warns = quiet_import(raw, "spyx", dt=DT)
    reordered = [w for w in warns if "channels-last" in str(w.message)]
    assert len(reordered) == 1 and "'layer_4'" in str(reordered[0].message)
    assert ref["spikes"].sum() > 40
    compare("spyx", "CNN: Conv -> LIF -> SumPool -> Flatten -> Linear -> LIF", g, dyn, backend, ref, neuron="layer_5",
            x=x)
    v = nb.simulate(g, x, dyn, backend=backend, record=[("layer_1", "v")])[("layer_1", "v")]  # the conv layer
    np.testing.assert_allclose(v, v1, rtol=0, atol=VTOL)
    if backend == "reference":  # the Linear's columns as written: wrong
        assert int((nb.simulate(raw, x, nb.Dynamics.preset("spyx", dt=DT))["output"] != ref["spikes"]).sum()) > 0


# ---------------------------------------------------------------------- a hidden layer's recorded spikes
def _two_layers():
    rngs = nnx.Rngs(0)
    w1, b1 = make_weights(seed=1, scale=0.8)
    w2, b2 = make_weights(seed=4, scale=0.9, shift=0.3)
    lin1, lin2 = nnx.Linear(NIN, NOUT, rngs=rngs), nnx.Linear(NOUT, NOUT, rngs=rngs)
    lin1.kernel[...], lin1.bias[...] = jnp.array(w1.T), jnp.array(b1)
    lin2.kernel[...], lin2.bias[...] = jnp.array(w2[:, :NOUT].T), jnp.array(b2)
    l1 = snn.LIF((NOUT,), beta=0.9, threshold=jnp.array(THR), rngs=rngs)
    l1.beta = nnx.Param(jnp.array(BETA))
    l2 = snn.CuBaLIF((NOUT,), alpha=0.6, beta=0.85, threshold=jnp.array(THR * 0.5), rngs=rngs)

    def run(m):
        state, out = m.initial_state(X.shape[1]), []
        for t in range(X.shape[0]):
            y, state = m(jnp.array(X[t]), state)
            out.append(np.asarray(y))
        return np.array(out, dtype=np.float32)

    full = snn.Sequential(lin1, l1, lin2, l2)
    hidden = run(snn.Sequential(lin1, l1))  # what Spyx's first LIF layer returns, step by step
    out = run(full)
    g = snir.to_nir(full, {"input": np.array([NIN])}, {"output": np.array([NOUT])}, dt=DT)
    return _write(g, "spyx_two"), out, hidden


@functools.cache
def two_layers():
    with warnings.catch_warnings(), jax.numpy_dtype_promotion("standard"):
        warnings.simplefilter("ignore")
        return _two_layers()


def test_recorded_hidden_layer_is_what_spyx_returns(backend):
    path, out, hidden = two_layers()
    g, dyn, _ = quiet_import(path, "spyx", dt=DT)
    first = next(s.name for s in g.plan.steps if s.node.type == "LIF")
    assert hidden.sum() > 20 and out.sum() > 10
    res = nb.simulate(g, X, dyn, backend=backend, record=[first])
    assert int((res["output"] != out).sum()) == 0
    assert int((res[first] != hidden).sum()) == 0  # the layer's spikes as Spyx records them: one step late


# ---------------------------------------------------------------------- back to Spyx: export_graph
def _spyx_import_run(graph, x, tmp_path):
    """Write ``graph``, read it with ``spyx.nir.from_nir`` at DT and run it on ``x`` (time-major,
    channels first as NIR; Spyx runs channels last): the output spikes."""
    import nir

    nb.save(graph, tmp_path / "for_spyx.nir")
    xs = x if x.ndim == 3 else np.ascontiguousarray(x.transpose(0, 1, 3, 4, 2))
    with warnings.catch_warnings(), jax.numpy_dtype_promotion("standard"):
        warnings.simplefilter("ignore")
        _, out = snir.from_nir(nir.read(str(tmp_path / "for_spyx.nir")), jnp.array(xs), dt=DT)
    return np.asarray(out, dtype=np.float32)


@pytest.mark.parametrize("kind", ["two_layers", "cnn"])
def test_round_trip_train_in_jax_export_to_spyx(kind, tmp_path):
    """Spyx (LIF -> CuBaLIF with per-neuron beta and thresholds; a CNN) -> nirbridge (JAX) -> 10 Adam
    steps on the weights -> export_graph(..., 'spyx', dt=DT) -> spyx.nir.from_nir: its spikes are
    nirbridge's for the trained graph, in every backend. The CNN's Linear after the Flatten goes back
    to Spyx's channels-last column order."""
    from interop_common import train_weights

    if kind == "cnn":
        path, x, ref, _ = conv_net()
        ref = ref["spikes"]
    else:
        (path, ref, _), x = two_layers(), X
    g, dyn, _ = quiet_import(path, "spyx", dt=DT)
    assert int((nb.simulate(g, x, dyn)["output"] != ref).sum()) == 0  # the way in
    trained = train_weights(g, dyn, x=x, lr=5e-2)
    want = {b: nb.simulate(trained, x, dyn, backend=b)["output"] for b in ("reference", "jax", "torch")}
    with warnings.catch_warnings(record=True) as warns:
        warnings.simplefilter("always")
        out = presets.export_graph(trained, dyn, "spyx", dt=DT)
    assert (kind == "cnn") == any("(h, w, c)" in str(w.message) for w in warns)
    got = _spyx_import_run(out, x, tmp_path)
    assert want["reference"].sum() > 20
    assert int((got != ref).sum()) > 0  # training changed the spikes
    for b, w in want.items():
        assert int((got != w).sum()) == 0, b


def test_export_to_spyx_refuses_what_its_importer_cannot_build():
    path, _ = model("lif")
    g, dyn, _ = quiet_import(path, "spyx", dt=DT)
    with pytest.raises(nb.errors.UnsupportedError, match=r"field 'output_delay'"):
        presets.export_graph(g, dyn.replace(output_delay=0), "spyx", dt=DT)
    path, _ = model("rlif")
    g, dyn, _ = quiet_import(path, "spyx", dt=DT)
    with pytest.raises(nb.errors.UnsupportedError, match=r"field 'edges'.*closes a loop"):
        presets.export_graph(g, dyn, "spyx", dt=DT)
