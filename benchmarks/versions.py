"""Two versions of nirbridge side by side, in one run: is the new one slower anywhere?

Each version runs in its own worker process (both are the package ``nirbridge``, so they cannot
share one interpreter) with its checkout first on ``sys.path``. Both load the same graph files and
inputs, build the same models through the public API (``nb.to_jax``, ``nb.simulate``,
``nb.to_torch``), and check that their outputs agree (spikes identical, values within 1e-4)
before anything is timed. Then the rounds are interleaved: round r times every row once in each
worker, alternating which version goes first, so load from other processes hits both alike. The
table shows the median per row and the ratio new/old (below 1: the new version is faster).

Rows, each what a user calls (no extra ``jax.jit`` around it):

* ``jax run``: ``model.run(model.params, x)`` of a model built once by ``nb.to_jax``;
* ``simulate jax``: ``nb.simulate(graph, x, dyn, backend="jax")`` called again and again;
* ``torch``: ``module(x)`` under ``torch.no_grad()`` (one intra-op thread);
* ``torch train``: ``module(x)``, a loss and ``backward()`` (one intra-op thread).

    python benchmarks/versions.py --old ../nirbridge-previous            # all workloads
    python benchmarks/versions.py --old OLD --workloads braille --rounds 9
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

_WORKER = r'''
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import jax, torch
import nirbridge as nb
torch.set_num_threads(1)
spec = json.loads(sys.argv[2])
rows, outs = {}, {}
for wl in spec["workloads"]:
    g = nb.load(wl["path"])
    d = nb.Dynamics(**wl["dynamics"])
    x = np.load(wl["input"])
    xj, xt = jax.numpy.asarray(x), torch.from_numpy(x)
    model = nb.to_jax(g, d)
    module = nb.to_torch(g, d)
    train = nb.to_torch(g, d)
    out = g.plan.outputs[0]
    def jax_run(model=model, xj=xj, out=out):
        return np.asarray(jax.block_until_ready(model.run(model.params, xj)[0][out]))
    def sim(g=g, x=x, d=d, out=out):
        return nb.simulate(g, x, d, backend="jax")[out]
    def tor(module=module, xt=xt):
        with torch.no_grad():
            return module(xt).numpy()
    def tor_train(train=train, xt=xt):
        y = train(xt)
        y.square().mean().backward()
        return y.detach().numpy()
    for name, fn in (("jax run", jax_run), ("simulate jax", sim), ("torch", tor), ("torch train", tor_train)):
        key = f"{wl['name']} | {name}"
        rows[key] = fn
        outs[key] = fn()  # the warm-up: compilation happens here
np.savez(spec["outputs"], **{k.replace(" | ", "__").replace(" ", "_"): v for k, v in outs.items()})
print(json.dumps({"ready": list(rows)}), flush=True)
for line in sys.stdin:
    key = json.loads(line)["row"]
    t0 = time.perf_counter()
    rows[key]()
    print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)
'''


def _workloads(names: list[str], tmp: Path) -> list[dict]:
    import numpy as np

    sys.path.insert(0, str(HERE))
    import baselines as bl
    import nir

    from nirbridge import examples

    made = {
        "ff_700_256_20": lambda: bl.ff_workload(),
        "braille": lambda: bl.braille_workload(examples.path("braille_noDelay_bias_zero")),
        "cnn": lambda: bl.cnn_workload(examples.path("cnn_sinabs")),
    }
    out = []
    for name in names:
        wl = made[name]()
        path = tmp / f"{name}.nir"
        nir.write(str(path), wl.graph)
        x = np.ascontiguousarray(wl.inputs(), dtype=np.float32)
        np.save(tmp / f"{name}.npy", x)
        dyn = {"dt": wl.dt}
        if wl.kind == "braille":  # what the hand-written baselines compute (see run.py)
            dyn.update(synapse="current_first", recurrent_start="rest")
        out.append({"name": name, "path": str(path), "input": str(tmp / f"{name}.npy"), "dynamics": dyn,
                    "T": int(x.shape[0]), "B": int(x.shape[1])})
    return out


class _Worker:
    def __init__(self, label: str, checkout: Path, spec: dict):
        self.label = label
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.p = subprocess.Popen([sys.executable, "-c", _WORKER, str(checkout), json.dumps(spec)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                  cwd=str(checkout))
        line = self.p.stdout.readline()
        if not line:
            raise SystemExit(f"the {label} worker failed to start (see its error above)")
        self.rows = json.loads(line)["ready"]

    def time(self, row: str) -> float:
        self.p.stdin.write(json.dumps({"row": row}) + "\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())["seconds"]

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, type=Path, help="a checkout of the earlier nirbridge")
    ap.add_argument("--new", default=ROOT, type=Path, help="a checkout of the newer one (default: this one)")
    ap.add_argument("--workloads", nargs="+", default=["ff_700_256_20", "braille", "cnn"])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    import numpy as np

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        wls = _workloads(args.workloads, tmp)
        print(f"building and warming up {len(wls)} workloads in both versions ...", flush=True)
        workers = {}
        for label, checkout in (("old", args.old.resolve()), ("new", args.new.resolve())):
            workers[label] = _Worker(label, checkout, {"workloads": wls, "outputs": str(tmp / f"{label}.npz")})
        old, new = np.load(tmp / "old.npz"), np.load(tmp / "new.npz")
        for k in old.files:  # the same numbers before any timing
            a, b = old[k], new[k]
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-4):
                raise SystemExit(f"{k}: the versions disagree (max |diff| {np.max(np.abs(a - b)):.3g}); not timed")
        rows = workers["new"].rows
        times = {label: {r: [] for r in rows} for label in workers}
        for r in range(args.rounds):
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            for row in rows:
                for label in order:
                    times[label][row].append(workers[label].time(row))
            print(f"  round {r + 1}/{args.rounds}", flush=True)
        for w in workers.values():
            w.close()
    print(f"\n{'workload | row':36s} {'old ms':>10s} {'new ms':>10s} {'new/old':>8s}")
    worst = 0.0
    for row in rows:
        o = statistics.median(times["old"][row]) * 1e3
        n = statistics.median(times["new"][row]) * 1e3
        worst = max(worst, n / o)
        print(f"{row:36s} {o:10.2f} {n:10.2f} {n / o:8.2f}")
    print(f"\nworst ratio new/old: {worst:.2f} (median of {args.rounds} interleaved rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
