"""The NIRTorch route: real NIRTorch 2.6 against nirbridge.nirtorch, side by side in one run.

The same graphs and the same node map (plain torch modules for LIF / CubaLIF / LI and Affine) go
through ``nirtorch.nir_to_torch`` (the real package) and ``nirbridge.nirtorch.nir_to_torch``; each
side runs in its own interpreter, since the latter can replace the former in ``sys.modules``.
Reported: the time to build the module, and the time of a stepped run (``y, state = m(x, state)``
per step), best of ``--rounds``; ratio = real / ours (above 1: nirbridge.nirtorch is faster). The
outputs of the two sides are checked to agree (1e-6).

    python benchmarks/nirtorch_route.py [--rounds 5] [--T 100] [--B 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _node_map(torch, nir):
    class LIF(torch.nn.Module):
        def __init__(self, n, syn=False):
            super().__init__()
            self.syn = syn
            self.register_buffer("tau", torch.as_tensor(n.tau if not syn else n.tau_mem, dtype=torch.float32))
            self.register_buffer("thr", torch.as_tensor(n.v_threshold, dtype=torch.float32))
            self.register_buffer("r", torch.as_tensor(n.r, dtype=torch.float32))
            if syn:
                self.register_buffer("tau_syn", torch.as_tensor(n.tau_syn, dtype=torch.float32))

        def forward(self, x, state=None):
            dt = 1e-4
            if state is None:
                v = torch.zeros_like(x)
                i = torch.zeros_like(x)
            else:
                v, i = state
            if self.syn:
                i = i + dt / self.tau_syn * (-i) + x
                x = i
            v = v + dt / self.tau * (self.r * x - v)
            z = (v > self.thr).to(x.dtype)
            v = v * (1 - z)
            return z, (v, i)

    class LI(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.register_buffer("tau", torch.as_tensor(n.tau, dtype=torch.float32))
            self.register_buffer("r", torch.as_tensor(n.r, dtype=torch.float32))

        def forward(self, x, state=None):
            v = torch.zeros_like(x) if state is None else state
            v = v + 1e-4 / self.tau * (self.r * x - v)
            return v, v

    def affine(n):  # mapped here, since NIRTorch 2.6's default Affine mapping leaves the bias random
        lin = torch.nn.Linear(n.weight.shape[1], n.weight.shape[0])
        lin.weight.data = torch.as_tensor(n.weight, dtype=torch.float32)
        lin.bias.data = torch.as_tensor(n.bias, dtype=torch.float32)
        return lin

    return {nir.LIF: lambda n: LIF(n), nir.CubaLIF: lambda n: LIF(n, syn=True), nir.LI: LI, nir.Affine: affine}


def _graphs(nir, np):
    import nirbridge as nb

    rng = np.random.default_rng(0)
    braille = nir.read(str(nb.examples.path("braille_noDelay_bias_zero")))
    n_in, n_h, n_out = 700, 256, 20
    dense = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([n_in])),
               "fc1": nir.Affine((rng.normal(size=(n_h, n_in)) * 0.05).astype(np.float32), np.zeros(n_h, np.float32)),
               "lif": nir.LIF(np.full(n_h, 2e-3), np.ones(n_h), np.zeros(n_h), np.ones(n_h)),
               "fc2": nir.Affine((rng.normal(size=(n_out, n_h)) * 0.1).astype(np.float32), np.zeros(n_out, np.float32)),
               "li": nir.LI(np.full(n_out, 2e-3), np.ones(n_out), np.zeros(n_out)),
               "output": nir.Output(np.array([n_out]))},
        edges=[("input", "fc1"), ("fc1", "lif"), ("lif", "fc2"), ("fc2", "li"), ("li", "output")])
    return {"braille": (braille, 12), "700-256-20": (dense, n_in)}


def side(which: str, rounds: int, T: int, B: int) -> dict:
    import warnings

    warnings.simplefilter("ignore")
    if which == "ours":
        import nirbridge.nirtorch as nt
    else:
        import nirtorch as nt
    import nir
    import numpy as np
    import torch

    torch.set_num_threads(1)
    out = {}
    nmap = _node_map(torch, nir)
    for name, (g, n_in) in _graphs(nir, np).items():
        x = torch.from_numpy((np.random.default_rng(1).random((T, B, n_in)) < 0.2).astype(np.float32))
        build = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            m = nt.nir_to_torch(g, nmap)
            build.append(time.perf_counter() - t0)
        runs, ys = [], None
        with torch.no_grad():
            for _ in range(rounds):
                state, acc = None, []
                t0 = time.perf_counter()
                for t in range(T):
                    y, state = m(x[t]) if state is None else m(x[t], state)
                    acc.append(y)
                runs.append(time.perf_counter() - t0)
                ys = torch.stack(acc)
        out[name] = {"build_s": min(build), "run_s": min(runs), "checksum": ys.numpy().tolist()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--B", type=int, default=16)
    ap.add_argument("--side", choices=["real", "ours"])
    a = ap.parse_args()
    if a.side:
        print(json.dumps(side(a.side, a.rounds, a.T, a.B)))
        return
    import numpy as np

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    res = {}
    for s in ("real", "ours"):
        r = subprocess.run([sys.executable, __file__, "--side", s, "--rounds", str(a.rounds), "--T", str(a.T),
                            "--B", str(a.B)], capture_output=True, text=True, env=env, check=True)
        res[s] = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"NIRTorch route, T={a.T}, B={a.B}, best of {a.rounds}, one intra-op thread")
    cols = ("build real", "build ours", "ratio", "run real", "run ours", "ratio")
    widths = (11, 11, 6, 9, 9, 6)
    print(f"{'graph':<12} " + " ".join(f"{c:>{w}}" for c, w in zip(cols, widths)))
    for g in res["real"]:
        r, o = res["real"][g], res["ours"][g]
        diff = float(np.abs(np.array(r["checksum"]) - np.array(o["checksum"])).max())
        assert diff <= 1e-6, f"{g}: the outputs differ by {diff}"
        print(f"{g:<12} {r['build_s'] * 1e3:>9.2f}ms {o['build_s'] * 1e3:>9.2f}ms {r['build_s'] / o['build_s']:>6.2f}"
              f" {r['run_s'] * 1e3:>7.1f}ms {o['run_s'] * 1e3:>7.1f}ms {r['run_s'] / o['run_s']:>6.2f}")


if __name__ == "__main__":
    main()
