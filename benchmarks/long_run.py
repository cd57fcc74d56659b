"""Long runs in bounded memory: peak RSS of a chunked run at T=10,000 vs T=100,000 (B=64).

Each length runs in a fresh subprocess: the 700-256-20 network of ``baselines.ff_graph`` through
:func:`nirbridge.stream.stream` in chunks of ``--chunk`` steps, keeping spike counts and rates of
the hidden LIF layer and the output, the last state, and a recorded subset (the output of the
first batch row, every step). The input is an iterator: it cycles a pool of 8 seeded random spike
chunks (bool), so the sequence never exists in memory and drawing it costs nothing. The child
prints its peak RSS (VmHWM, after the imports and after the run) and its wall time; the parent
prints a table and the ratio of the two peaks (the goal: they differ by under 10%).

    python benchmarks/long_run.py                 # T=10k and T=100k, chunk 1000
    python benchmarks/long_run.py --steps 2000 20000 --chunk 500
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def child(steps: int, batch: int, chunk: int) -> dict:
    import numpy as np

    sys.path.insert(0, str(HERE))
    import baselines as bl

    import nirbridge as nb
    from nirbridge.stream import stream

    graph = nb.Graph.from_nir(bl.ff_graph(0))
    rng = np.random.default_rng(0)
    pool = [rng.random((chunk, batch, 700)) < 0.05 for _ in range(8)]

    def chunks():
        made = 0
        for piece in itertools.cycle(pool):
            if made >= steps:
                return
            n = min(chunk, steps - made)
            yield piece[:n]
            made += n

    imported = _status_kib("VmHWM")
    t0 = time.perf_counter()
    out = stream(graph, chunks(), nb.Dynamics(dt=1e-3), keep=("count", "rate", "last", "trace"), record=["lif"],
                 trace={"output": np.s_[:1]})
    wall = time.perf_counter() - t0
    assert out["steps"] == steps and out["trace"]["output"].shape == (steps, 1, 20)
    return {"steps": steps, "batch": batch, "chunk": chunk, "wall_s": wall,
            "rss_after_imports_mib": imported / 1024, "peak_rss_mib": _status_kib("VmHWM") / 1024,
            "hidden_rate": float(out["rate"]["lif"].mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(args.steps[0], args.batch, args.chunk)))
        return 0
    rows = []
    for steps in args.steps:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--steps", str(steps),
               "--batch", str(args.batch), "--chunk", str(args.chunk)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
        if res.returncode or not line:
            print(res.stdout, res.stderr, file=sys.stderr)
            return 1
        rows.append(json.loads(line[0][7:]))
        r = rows[-1]
        print(f"T={r['steps']:>7}  B={r['batch']}  chunk={r['chunk']}  peak RSS {r['peak_rss_mib']:.1f} MiB "
              f"(after imports {r['rss_after_imports_mib']:.1f})  {r['wall_s']:.1f} s  "
              f"{r['steps'] / r['wall_s']:.0f} steps/s  hidden rate {r['hidden_rate']:.4f}", flush=True)
    peaks = [r["peak_rss_mib"] for r in rows]
    spread = max(peaks) / min(peaks) - 1
    print(f"peak RSS spread over T={args.steps}: {100 * spread:.1f}% (goal: under 10%)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "spread": spread}, indent=1))
    return 0 if spread < 0.10 else 2


if __name__ == "__main__":
    raise SystemExit(main())
