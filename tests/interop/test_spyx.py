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
from interop_common import NIN, NOUT, X, compare, make_rec_weights, make_tie_weights, make_weights, quiet_import
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
