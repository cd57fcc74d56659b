"""Each torch SNN library's own NIR export and import, once with the real NIRTorch 2.6 and once with
``nirbridge.nirtorch.install()`` standing in for it: the results must be identical.

``install()`` replaces ``nirtorch`` in ``sys.modules``, so each side runs in its own interpreter:
this file doubles as the script (``python test_nirtorch_route.py {real,ours} OUT``) that builds the
same seeded models in snnTorch, Norse, Sinabs, SpikingJelly and Rockpool, exports each through the
library's exporter, imports graphs through the library's importer, runs them on a fixed input and
pickles everything. The tests compare the two pickles: every node, edge and parameter bit for bit;
outputs within 1e-6. A scenario that fails with the real NIRTorch too is recorded as such (the
library's own path is broken there), and it must fail the same way with nirbridge.nirtorch.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

LIBS = ("snntorch", "norse", "sinabs", "spikingjelly", "rockpool")
T, B, NIN, NOUT = 20, 2, 8, 6


# ------------------------------------------------------------------------------ the side script
def _graph_record(g):
    """Nodes, edges and parameters of a NIR graph (or node) as plain, comparable Python/NumPy values."""
    import nir

    def value(v):
        if isinstance(v, dict):
            return {k: value(x) for k, x in v.items()}
        if isinstance(v, nir.NIRNode):
            return _graph_record(v)
        if hasattr(v, "detach"):
            v = v.detach().cpu().numpy()
        if isinstance(v, np.ndarray):
            return ("array", str(v.dtype), v.shape, v.tobytes())
        return repr(v)

    if g is None:
        return None
    if not isinstance(g, nir.NIRGraph):
        return (type(g).__name__, {k: value(v) for k, v in sorted(vars(g).items())})
    return {"nodes": {k: _graph_record(v) for k, v in sorted(g.nodes.items())},
            "edges": sorted(tuple(e) for e in g.edges)}


def _x(seed=0, shape=(T, B, NIN)):
    return (np.random.default_rng(seed).random(shape) < 0.3).astype(np.float32)


def _weights(seed, n_out=NOUT, n_in=NIN, scale=1.0):
    rng = np.random.default_rng(seed)
    return ((rng.normal(size=(n_out, n_in)) * scale).astype(np.float32),
            (rng.normal(size=n_out) * 0.1 * scale).astype(np.float32))


def _recurrent_lif_graph(tau=2e-3, dt_r=1.0, v_leak=0.0, v_reset=0.0):
    """A hand-built recurrent NIR graph (Affine -> LIF <-> Affine) for the import-only scenarios."""
    import nir

    w, b = _weights(11, scale=1.5)
    wr, br = _weights(12, NOUT, NOUT, 0.2)
    n = NOUT
    return nir.NIRGraph(
        nodes={"input": nir.Input(np.array([NIN])), "fc": nir.Affine(w, b),
               "lif": nir.LIF(np.full(n, tau, np.float32), np.full(n, dt_r, np.float32),
                              np.full(n, v_leak, np.float32), np.full(n, 0.5, np.float32),
                              np.full(n, v_reset, np.float32)),
               "rec": nir.Affine(wr, br), "output": nir.Output(np.array([n]))},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")])


def _lin(torch, w, b):
    lin = torch.nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        lin.bias.copy_(torch.from_numpy(b))
    return lin


def _step_all(model, xs, torch, call="state"):
    """Run a stateful module ``(y, state) = model(x, state)`` over the time-major ``xs``."""
    ys, state = [], None
    with torch.no_grad():
        for t in range(xs.shape[0]):
            x = torch.from_numpy(xs[t])
            y, state = model(x) if state is None else model(x, state)
            ys.append(y.detach().numpy().copy())
    return np.array(ys)


def _scenarios_snntorch(torch):
    import snntorch as snn
    from snntorch.export_nir import export_to_nir
    from snntorch.import_nir import import_from_nir

    def export(neuron, w, b, extra=()):
        net = torch.nn.Sequential(*extra, _lin(torch, w, b), neuron)
        return export_to_nir(net, torch.from_numpy(_x()[0]), ignore_dims=[0])

    w, b = _weights(1)
    out = {}
    beta = torch.linspace(0.5, 0.9, NOUT)
    out["ff"] = lambda: export(snn.Leaky(beta=beta, threshold=torch.ones(NOUT), init_hidden=True), w, b)
    out["cuba"] = lambda: export(snn.Synaptic(alpha=torch.full((NOUT,), 0.7), beta=beta, threshold=torch.ones(NOUT),
                                              init_hidden=True), w, b)

    def rec():
        n = snn.RLeaky(beta=0.9, linear_features=NOUT, threshold=0.8, init_hidden=True)
        wr, br = _weights(2, NOUT, NOUT, 0.3)
        with torch.no_grad():
            n.recurrent.weight.copy_(torch.from_numpy(wr))
            n.recurrent.bias.copy_(torch.from_numpy(br))
        return export(n, w, b)

    out["recurrent"] = rec

    def conv():
        torch.manual_seed(0)
        c = torch.nn.Conv2d(1, 2, 3)
        lin = torch.nn.Linear(2 * 3 * 3, 4)
        net = torch.nn.Sequential(c, snn.Leaky(beta=torch.full((2, 6, 6), 0.8), threshold=torch.full((2, 6, 6), 0.5),
                                               init_hidden=True),
                                  torch.nn.AvgPool2d(2), torch.nn.Flatten(), lin,
                                  snn.Leaky(beta=torch.full((4,), 0.8), threshold=torch.full((4,), 0.5),
                                            init_hidden=True))
        return export_to_nir(net, torch.from_numpy(_x(3, (1, 1, 8, 8))[0:1]), ignore_dims=[0])

    out["conv"] = conv
    return out, lambda g: import_from_nir(g)


def _scenarios_norse(torch):
    import norse.torch as norse

    w, b = _weights(1, scale=2.0)
    p = norse.LIFBoxParameters(tau_mem_inv=torch.tensor(100.0), v_th=torch.tensor(0.3))
    out = {
        "ff": lambda: norse.to_nir(torch.nn.Sequential(_lin(torch, w, b), norse.LIFBoxCell(p)),
                                   torch.from_numpy(_x()[0, 0])),
        "cuba": lambda: norse.to_nir(torch.nn.Sequential(_lin(torch, w, b), norse.LIFCell()),
                                     torch.from_numpy(_x()[0, 0])),
        "recurrent": lambda: norse.to_nir(norse.LIFRecurrentCell(NIN, NOUT), torch.from_numpy(_x()[0, 0])),
    }

    def conv():
        torch.manual_seed(0)
        return norse.to_nir(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), norse.LIFBoxCell(p)),
                            torch.from_numpy(_x(3, (1, 8, 8))))

    out["conv"] = conv
    out["recurrent (import only)"] = lambda: _recurrent_lif_graph(tau=1e-2)
    return out, lambda g: norse.from_nir(g, dt=1e-3)


def _scenarios_sinabs(torch):
    import sinabs
    import sinabs.layers as sl

    w, b = _weights(1, scale=0.6)
    tau = torch.linspace(5.0, 20.0, NOUT)
    thr = torch.linspace(0.3, 0.6, NOUT)
    sample = torch.from_numpy(_x()[0, :1])
    out = {
        "ff": lambda: sinabs.to_nir(torch.nn.Sequential(_lin(torch, w, b), sl.LIF(tau_mem=tau, spike_threshold=thr)),
                                    sample),
        "cuba": lambda: sinabs.to_nir(torch.nn.Sequential(_lin(torch, w, b),
                                                          sl.LIF(tau_mem=tau, tau_syn=tau / 2, spike_threshold=thr)),
                                      sample),
    }

    def conv():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), sl.IAFSqueeze(batch_size=1), torch.nn.Flatten(),
                                  torch.nn.Linear(2 * 6 * 6, 4), sl.IAFSqueeze(batch_size=1))
        with torch.no_grad():  # weights large enough that both layers fire within T steps
            net[0].weight.mul_(8.0)
            net[3].weight.mul_(8.0)
        return sinabs.to_nir(net, torch.from_numpy(_x(3, (1, 1, 8, 8))))

    out["conv"] = conv
    return out, lambda g: sinabs.from_nir(g, batch_size=B)


def _scenarios_spikingjelly(torch):
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.nir_exchange import export_to_nir, import_from_nir

    w, b = _weights(1)

    def ex(node, extra=None):
        net = torch.nn.Sequential(_lin(torch, w, b), node) if extra is None else extra
        functional.reset_net(net)
        return export_to_nir(net, torch.from_numpy(_x()[0]))

    out = {"ff": lambda: ex(neuron.LIFNode(tau=4.0, v_threshold=0.5)),
           "cuba": lambda: ex(neuron.CUBALIFNode(c_decay=0.6, v_decay=0.8, v_threshold=0.5))}

    def conv():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), neuron.IFNode(), torch.nn.Flatten(),
                                  torch.nn.Linear(2 * 6 * 6, 4), neuron.IFNode())
        with torch.no_grad():  # strong enough weights that both layers spike
            net[0].weight.mul_(10.0)
            net[3].weight.mul_(10.0)
        functional.reset_net(net)
        return export_to_nir(net, torch.from_numpy(_x(3, (B, 1, 8, 8))))

    out["conv"] = conv
    out["recurrent (import only)"] = lambda: _recurrent_lif_graph(tau=4e-4)
    return out, lambda g: import_from_nir(g, dt=1e-4)


def _scenarios_rockpool(torch):
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch, LinearTorch
    from rockpool.nn.modules.torch.nir import from_nir, to_nir

    w, b = _weights(1)

    def lin():
        return LinearTorch((NIN, NOUT), weight=torch.from_numpy(w.T.copy()), has_bias=False)

    out = {
        "cuba": lambda: to_nir(Sequential(lin(), LIFTorch(NOUT, tau_mem=0.02, tau_syn=0.01, threshold=0.5, dt=1e-3))),
    }

    def rec():
        wr, _ = _weights(2, NOUT, NOUT, 0.1)
        return to_nir(Sequential(lin(), LIFTorch(NOUT, tau_mem=0.02, tau_syn=0.01, has_rec=True,
                                                 w_rec=torch.from_numpy(wr), dt=1e-3)))

    out["recurrent"] = rec
    return out, from_nir


def _import_run(lib, importer, g, torch):
    """Import the exported graph ``g`` with the library's importer and run it on a fixed input."""
    model = importer(g)
    inp = next(v for v in g.nodes.values() if type(v).__name__ == "Input")
    shape = tuple(int(i) for i in np.asarray(next(iter(inp.input_type.values()))).reshape(-1))
    if lib == "rockpool":  # Rockpool modules run (B, T, N) in one call
        xs = _x(5, (B, T) + shape[-1:])
        with torch.no_grad():
            y = model(torch.from_numpy(xs))
        y = y[0] if isinstance(y, tuple) else y
        # Rockpool's as_graph reads the executor's graph.node_list, find_source_nodes_of, execution_order
        holder = model.as_graph()
        wiring = (type(holder).__name__, len(holder.input_nodes), len(holder.output_nodes),
                  [n.name for n in model.execution_order])
        return {"outputs": np.asarray(y.detach().numpy()), "as_graph": wiring}
    if lib == "sinabs":  # one call: (B, T, N) for LIF layers; (B*T, C, H, W) for the Squeeze layers of a CNN
        xs = _x(5, (B, T) + shape[-1:]) if len(shape) == 1 else _x(5, (B * T,) + shape[-3:])
        with torch.no_grad():
            y = model(torch.from_numpy(xs))
        y = y[0] if isinstance(y, tuple) else y
        return {"outputs": np.asarray(y.detach().numpy())}
    if lib == "spikingjelly":
        from spikingjelly.activation_based import functional

        functional.reset_net(model)
    xs = _x(5, (T, B) + shape)
    return {"outputs": _step_all(model, xs, torch)}


def _err(e: Exception) -> str:
    """An error as its builtin kind and message (nirbridge's errors subclass the builtins)."""
    kinds = (NotImplementedError, ValueError, TypeError, KeyError, AttributeError, AssertionError, RuntimeError)
    kind = next((k.__name__ for k in kinds if isinstance(e, k)), type(e).__name__)
    return f"error {kind}: {str(e)[:200]}"


def run_side(side: str, out_path: str, libs=LIBS) -> None:
    """Run every scenario of ``libs`` with the real NIRTorch (``real``) or nirbridge's (``ours``)."""
    if side == "ours":
        import nirbridge.nirtorch

        nirbridge.nirtorch.install()
    warnings.simplefilter("ignore")
    import logging

    logging.disable(logging.CRITICAL)
    import nirtorch
    import torch

    torch.set_num_threads(1)
    result = {"nirtorch": nirtorch.__file__}
    for lib in libs:
        res = result[lib] = {}
        try:
            scenarios, importer = globals()[f"_scenarios_{lib}"](torch)
        except Exception as e:  # the library itself does not import
            res["error"] = f"{type(e).__name__}: {e}"
            continue
        for name, make in scenarios.items():
            r = res[name] = {}
            try:
                torch.manual_seed(0)
                g = make()
                r["export"] = _graph_record(g)
            except Exception as e:
                r["export"] = _err(e)
                continue
            try:
                torch.manual_seed(0)
                r.update(_import_run(lib, importer, g, torch))
            except Exception as e:
                r["outputs"] = _err(e)
    with open(out_path, "wb") as f:
        pickle.dump(result, f)


# ------------------------------------------------------------------------------ the tests
@pytest.fixture(scope="module")
def sides(tmp_path_factory):
    pytest.importorskip("torch")
    import importlib.util

    spec = importlib.util.find_spec("nirtorch")
    if spec is None or "nirbridge" in str(spec.origin):
        pytest.skip("the real nirtorch (2.6) is the reference here; it is not installed")
    d = tmp_path_factory.mktemp("nirtorch_sides")
    out = {}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH", "")])}
    for side in ("real", "ours"):
        path = d / f"{side}.pkl"
        r = subprocess.run([sys.executable, __file__, side, str(path)], capture_output=True, text=True,
                           timeout=900, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        out[side] = pickle.loads(path.read_bytes())
    assert "nirbridge" not in out["real"]["nirtorch"] and "nirbridge" in out["ours"]["nirtorch"]
    return out


def _assert_same_outputs(a, b, where):
    if isinstance(a, str) or isinstance(b, str):
        assert a == b, f"{where}: real NIRTorch gave {a if isinstance(a, str) else 'outputs'}, " \
                       f"nirbridge.nirtorch {b if isinstance(b, str) else 'outputs'}"
        return
    assert a.shape == b.shape, where
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-6, err_msg=where)


@pytest.mark.slow
@pytest.mark.parametrize("lib", LIBS)
def test_library_route_matches_real_nirtorch(sides, lib):
    real, ours = sides["real"][lib], sides["ours"][lib]
    assert "error" not in real, real.get("error")
    assert set(real) == set(ours)
    worked = active = 0
    for name in real:
        r, o = real[name], ours[name]
        assert o["export"] == r["export"], f"{lib}/{name}: the exported graphs differ"
        if "outputs" in r or "outputs" in o:
            _assert_same_outputs(r.get("outputs"), o.get("outputs"), f"{lib}/{name}")
        assert o.get("as_graph") == r.get("as_graph"), f"{lib}/{name}: Rockpool's as_graph differs"
        worked += not isinstance(r["export"], str)
        active += isinstance(r.get("outputs"), np.ndarray) and bool(np.any(r["outputs"] != 0))
    assert worked > 0, f"{lib}: no scenario exported with the real NIRTorch"
    assert active > 0, f"{lib}: no imported model produced a nonzero output, so the comparison shows little"


if __name__ == "__main__":
    run_side(sys.argv[1], sys.argv[2], tuple(sys.argv[3:]) or LIBS)
