"""Shared pieces of the interop suite: the fixed input, weights, the comparison and the outcome log.

Every test builds a small model in a real library, runs it there on the fixed random spike input
``X`` (T=50 steps, batch 3, 8 inputs, seed 0, p=0.3), exports it with the library's own exporter,
loads the file with nirbridge and the library's preset, and compares in each backend:

* spikes: identical (``spike_mismatches == 0``);
* voltages (and currents): within ``VTOL = 1e-5``. Every library computes in float32 and so does
  nirbridge, but the operations differ (``beta v + x`` against ``v + k (v_leak - v + r x)``,
  ``exp`` in another library, BLAS sums): a few float32 ulps per step of values of order 1-10,
  measured up to 8.1e-6 (Rockpool LIFTorch with recurrent weights, |v| up to ~7, tau = 30 steps:
  torch's float32 ``exp(-dt/tau)`` one ulp from NumPy's, the difference summed over ~1/(1 - a)
  steps). 1e-5 is 2^-17 relative at |v| = 10.

Outcomes are collected in :data:`OUTCOMES` and written as JSON at the end of the session when the
environment variable ``NIRBRIDGE_INTEROP_JSON`` names a file; ``tests/interop/render_table.py``
turns that file into the table of ``docs/presets.md``.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

import nirbridge as nb

T, B, NIN, NOUT = 50, 3, 8, 6
VTOL = 1e-5
BACKENDS = ("reference", "jax", "torch")

#: one dict per checked (library, model, backend)
OUTCOMES: list[dict] = []


def make_input(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((T, B, NIN)) < 0.3).astype(np.float32)  # time-major (T, B, 8)


def make_weights(seed: int = 1, scale: float = 0.6, shift: float = 0.15):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((NOUT, NIN)) * scale + shift).astype(np.float32)
    b = (rng.standard_normal(NOUT) * 0.05).astype(np.float32)
    return w, b


def make_rec_weights(seed: int = 2, scale: float = 0.3):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((NOUT, NOUT)) * scale).astype(np.float32)
    b = (rng.standard_normal(NOUT) * 0.02).astype(np.float32)
    return w, b


def make_tie_weights(seed: int = 3):
    """Weights on a 0.25 grid, no bias: with decay 0.5 every voltage is an exact binary fraction, so
    v == threshold happens and ``>`` against ``>=`` shows."""
    rng = np.random.default_rng(seed)
    return (rng.integers(-1, 4, (NOUT, NIN)) * 0.25).astype(np.float32), np.zeros(NOUT, np.float32)


X = make_input()


def make_frames(seed: int = 5, steps: int = 20, batch: int = 2) -> np.ndarray:
    """Spike frames for the conv nets: (T=20, B=2, 1, 8, 8), p=0.3, time-major, channels first."""
    rng = np.random.default_rng(seed)
    return (rng.random((steps, batch, 1, 8, 8)) < 0.3).astype(np.float32)


def write_nir(nir_graph, name: str) -> Path:
    """Write a nir graph to a fresh temporary file with ``nir.write`` (as a user would)."""
    import nir

    d = Path(tempfile.mkdtemp(prefix="nirbridge-interop-"))
    path = d / f"{name}.nir"
    nir.write(str(path), nir_graph)
    return path


def neuron_of(graph: nb.Graph, types=("LIF", "CubaLIF", "IF", "LI")) -> str:
    names = [s.name for s in graph.plan.steps if s.node.type in types]
    assert len(names) == 1, names
    return names[0]


def simulate(graph, dyn, backend, x=X, neuron=None, current=False, spikes_of=None):
    neuron = neuron or neuron_of(graph)
    rec = [(neuron, "v")] + ([(neuron, "i")] if current else []) + ([spikes_of] if spikes_of else [])
    out = nb.simulate(graph, x, dyn, backend=backend, record=rec)
    return (out[spikes_of or graph.outputs[0]], out[(neuron, "v")], (out[(neuron, "i")] if current else None))


def compare(library: str, model: str, graph, dyn, backend, ref: dict, *, neuron=None, x=X,
            note: str = "", expect_exact: bool = True, spikes_of: str | None = None,
            recurrent: bool | None = None) -> dict:
    """Simulate ``graph`` with ``dyn`` in ``backend`` and compare with the library's traces
    ``ref = {"spikes", "v"[, "i"]}``; record the outcome; assert it when ``expect_exact``.
    ``spikes`` are the graph's output, or the output of node ``spikes_of``; ``v`` (and ``i``)
    the state of ``neuron`` (default: the graph's only neuron). ``recurrent`` records whether the
    library's model is recurrent (default: whether ``graph`` is; an export may drop the loop)."""
    neuron = neuron or neuron_of(graph)
    s, v, i = simulate(graph, dyn, backend, x, neuron, current="i" in ref, spikes_of=spikes_of)
    mism = int(np.sum(s != ref["spikes"]))
    dv = float(np.max(np.abs(v - ref["v"])))
    di = float(np.max(np.abs(i - ref["i"]))) if "i" in ref else None
    exact = mism == 0 and dv <= VTOL and (di is None or di <= VTOL)
    rec = dict(library=library, model=model, node_types=sorted({st.node.type for st in graph.plan.steps
                                                                if st.role == "compute"}),
               backend=backend, spike_mismatches=mism, spikes=int(np.size(s)), max_dv=dv, max_di=di,
               status="exact" if exact else "approximate", note=note,
               recurrent=bool(graph.plan.recurrent) if recurrent is None else recurrent)
    OUTCOMES.append(rec)
    if expect_exact:
        assert mism == 0, f"{library}/{model} [{backend}]: {mism}/{np.size(s)} spikes differ"
        assert dv <= VTOL, f"{library}/{model} [{backend}]: max |dv| = {dv:.3g} > {VTOL}"
        if di is not None:
            assert di <= VTOL, f"{library}/{model} [{backend}]: max |di| = {di:.3g} > {VTOL}"
    return rec


def record_unsupported(library: str, model: str, node_types, reason: str, recurrent: bool = False) -> None:
    for backend in BACKENDS:
        OUTCOMES.append(dict(library=library, model=model, node_types=sorted(node_types), backend=backend,
                             spike_mismatches=None, spikes=None, max_dv=None, max_di=None, status="unsupported",
                             note=reason, recurrent=recurrent))


def quiet_import(graph, library, **kw):
    """``nb.presets.import_graph`` with its warnings captured: returns (graph, dyn, warnings)."""
    from nirbridge import presets
    from nirbridge.repair import NirBridgeWarning

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        g, dyn = presets.import_graph(graph, library, **kw)
    return g, dyn, [x for x in w if issubclass(x.category, NirBridgeWarning)]


def results_path() -> str | None:
    return os.environ.get("NIRBRIDGE_INTEROP_JSON") or None


def cli_simulate(path, *flags, x=X) -> tuple[int, np.ndarray | None, str]:
    """``nirbridge simulate PATH --input x.npy --out o.npz FLAGS``: (exit code, the output, stderr)."""
    import contextlib
    import io

    from nirbridge.cli import main

    d = Path(tempfile.mkdtemp(prefix="nirbridge-cli-"))
    np.save(d / "x.npy", x)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["simulate", str(path), "--input", str(d / "x.npy"), "--out", str(d / "o.npz"),
                     *[str(f) for f in flags]])
    out = np.load(d / "o.npz")["output"] if code == 0 else None
    return code, out, err.getvalue()


def train_weights(graph, dyn, steps: int = 10, lr: float = 2e-2, x=X):
    """``steps`` Adam steps on the weights only (``JaxModel.mask()``) of ``graph`` in JAX, towards a
    spike rate of 0.3 per output neuron; returns the trained graph (``from_jax``)."""
    import jax
    import optax

    model = nb.to_jax(graph, dyn)
    mask = model.mask()
    xj = jax.numpy.asarray(x)

    def loss(p):
        out = model.run(p, xj)[0]["output"]
        return ((out.mean(axis=(0, 1)) - 0.3) ** 2).sum()

    opt = optax.adam(lr)
    params, state = model.params, opt.init(model.params)
    step = jax.jit(jax.value_and_grad(loss))
    for _ in range(steps):
        _, grads = step(params)
        with jax.numpy_dtype_promotion("standard"):  # optax's bias correction
            updates, state = opt.update(grads, state, params)
        updates = jax.tree.map(lambda u, m: u if m else u * 0, updates, mask)
        params = optax.apply_updates(params, updates)
    return nb.from_jax(model, params)
