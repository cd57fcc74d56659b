"""Side-by-side benchmark of nirbridge against hand-written baselines, in one run.

Rows per workload (see ``baselines.py`` for the workloads and the baselines):

* ``nirbridge-jax``: ``nb.to_jax(graph, dyn)``, the whole sequence as one jitted ``lax.scan``;
* ``nirbridge-torch``: ``nb.to_torch(graph, dyn)`` under ``torch.no_grad()`` (and ``-compile``:
  ``nb.to_torch(graph, dyn, compile=True)``, the time loop as compiled chunks of 8 steps);
* ``handwritten_scan`` (+ ``_hoisted``, ``_layerwise``): the same network written by hand in JAX;
* ``nirtorch_baseline``: NIRTorch 2.6 with a hand-written neuron map, one step per Python call;
* ``matmul_floor_jax`` / ``_torch``: only the weight products over all T*B rows (the arithmetic floor).
* ``matmul_floor_in_loop``: only the weight products, one step at a time inside a ``lax.scan`` (the
  floor of a loop over small products; graphs of Affine and neuron nodes).

Method: every row is built and compiled first (compile time reported apart, not timed), warmed
up once, and checked against ``handwritten_scan`` (spikes identical, LI voltage within 1e-4).
Then the rows are timed in interleaved rounds (round r runs every row once, in a shuffled order)
so that load from other processes hits all rows alike; the table reports the median over rounds
and ratios computed from those medians. ``others`` is the share of the machine's CPU other
processes used meanwhile: above a few percent the run is contaminated and should be repeated.
Peak memory (``--memory``) is measured per row in a fresh subprocess (Linux): the peak resident
set size is reset after the input is made, and the growth of the peak over building, compiling
and running the row once is reported.

    python benchmarks/run.py                 # all workloads, table + JSON in benchmarks/results/
    python benchmarks/run.py --workloads braille --rounds 9
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import baselines as bl  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import nirbridge as nb  # noqa: E402
from nirbridge import examples  # noqa: E402

WORKLOADS: dict[str, Callable[[], bl.Workload]] = {
    "ff_700_256_20": lambda: bl.ff_workload(),
    "braille": lambda: bl.braille_workload(examples.path("braille_noDelay_bias_zero")),
    "cnn": lambda: bl.cnn_workload(examples.path("cnn_sinabs")),
}


def dynamics_for(wl: bl.Workload) -> nb.Dynamics:
    """The Dynamics that means what the hand-written baselines compute (see baselines.py)."""
    if wl.kind == "braille":
        # CubaLIF with the new current feeding the voltage; the recurrent Affine gives its bias at
        # step 0 (its input, the previous spikes, is zero), as the hand-written scan computes it
        return nb.Dynamics(dt=wl.dt, synapse="current_first", recurrent_start="rest")
    return nb.Dynamics(dt=wl.dt)


def nirbridge_jax(wl: bl.Workload, hoist: Any = "auto") -> bl.Baseline:
    model = nb.to_jax(nb.Graph.from_nir(wl.graph), dynamics_for(wl), hoist=hoist)
    out = model.graph.outputs[0]

    @jax.jit
    def run(params, x):
        return model.run(params, x)[0][out]

    return bl.Baseline("nirbridge-jax", "jax", run, model.params)


def nirbridge_torch(wl: bl.Workload, compiled: bool = False) -> bl.Baseline:
    # compile=True: the time loop as torch.compile-d chunks of 8 steps
    module = nb.to_torch(nb.Graph.from_nir(wl.graph), dynamics_for(wl), compile=compiled)
    return bl.Baseline("nirbridge-torch" + ("-compile" if compiled else ""), "torch", module)


ROWS: dict[str, Callable[[bl.Workload], bl.Baseline]] = {
    "nirbridge-jax": nirbridge_jax,
    "nirbridge-torch": nirbridge_torch,
    "nirbridge-torch-compile": lambda wl: nirbridge_torch(wl, compiled=True),
    **bl.ALL_BASELINES,
}


def _cpu_seconds() -> tuple[float, float]:
    """(all processes' busy CPU seconds, this process's CPU seconds)."""
    with open("/proc/stat") as f:
        fields = [float(v) for v in f.readline().split()[1:]]
    busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    return busy, time.process_time()


def build(wl: bl.Workload, name: str, x: np.ndarray) -> tuple[bl.Baseline, Any, float, np.ndarray]:
    """Build a row, compile it (timed apart) and run it once (warm-up); returns its output."""
    b = ROWS[name](wl)
    xb = b.prepare(x)
    compile_s = b.compile(xb)  # JAX: ahead-of-time compile; 0 for torch
    t0 = time.perf_counter()
    y = b(xb)  # warm-up; with torch.compile the first call is the compilation
    if name.endswith("-compile"):
        compile_s = time.perf_counter() - t0
    return b, xb, compile_s, bl.Baseline.to_numpy(y)


def bench_workload(wl: bl.Workload, names: list[str], rounds: int, log) -> dict:
    x = wl.inputs()
    built, result = {}, {}
    for name in names:
        log(f"  building {name} ...")
        try:
            b, xb, compile_s, y = build(wl, name, x)
        except Exception as e:  # a row that cannot run is reported, not fatal
            result[name] = {"error": f"{type(e).__name__}: {e}"}
            log(f"    failed: {e}")
            continue
        built[name] = (b, xb)
        result[name] = {"compile_s": compile_s, "output": y}
    ref = result.get("handwritten_scan", {}).get("output")
    for name, r in result.items():
        if "output" in r:
            y = r.pop("output")
            if ref is not None and not name.startswith("matmul_floor"):
                r["agrees_with_handwritten"] = bl.outputs_match(wl, y, ref)
                r["difference"] = bl.compare_outputs(wl, y, ref)
    timed = _interleaved({n: (lambda b=b, xb=xb: b(xb)) for n, (b, xb) in built.items()}, rounds, log, wl.name)
    others = 0.0
    for name, t in timed.items():
        others = t.pop("others")
        result[name].update(t, steps_per_s=wl.steps / t["median_s"])
    med = {n: result[n]["median_s"] for n in timed}
    for name in timed:
        for base in ("nirtorch_baseline", "handwritten_scan", "matmul_floor_jax"):
            if base in med:
                result[name][f"ratio_to_{base}"] = med[name] / med[base]
    return {"workload": wl.name, "batch": wl.batch, "steps": wl.steps, "dt": wl.dt, "others": others,
            "rows": result}


def peak_memory(workload: str, name: str) -> float | None:
    """Growth of peak RSS (MiB) over building and running one row once, in a fresh process."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-memory", workload, name]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    for line in out.stdout.splitlines():
        if line.startswith("PEAK_MIB "):
            return float(line.split()[1])
    return None


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _child_memory(workload: str, name: str) -> None:
    wl = WORKLOADS[workload]()
    x = wl.inputs()
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:  # Linux: reset the peak RSS (VmHWM) to the current RSS
        f.write("5")
    before = _status_kib("VmRSS")
    build(wl, name, x)
    print(f"PEAK_MIB {(_status_kib('VmHWM') - before) / 1024:.1f}")


def _interleaved(rows: dict[str, Callable[[], Any]], rounds: int, log, label: str) -> dict[str, dict]:
    """Median seconds of each callable, timed in interleaved shuffled rounds (after one warm-up)."""
    times: dict[str, list[float]] = {n: [] for n in rows}
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    for r in range(rounds):
        order = list(rows)
        random.Random(r).shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            rows[name]()
            times[name].append(time.perf_counter() - t0)
        log(f"  {label}: round {r + 1}/{rounds} done")
    cpu1, wall = _cpu_seconds(), time.perf_counter() - wall0
    others = max(0.0, (cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1])) / (wall * (os.cpu_count() or 1))
    log(f"  {label}: other processes used {100 * others:.0f}% of the CPU during timing")
    return {n: {"median_s": statistics.median(ts), "min_s": min(ts), "times_s": ts, "others": others}
            for n, ts in times.items()}


#: training steps run before timing: a Spyx (flax nnx) step is compiled anew on each of its first
#: three calls (measured: 2.4, 2.6, 2.2 s, then 0.12-0.2 s), so each row gets this many warm-up steps
WARMUP_TRAIN_STEPS = 4
TRAIN_ROWS = ("nirbridge-jax", "spyx", "handwritten_jax", "snntorch", "nirbridge-torch")


def bench_training(steps: list[int], rounds: int, log) -> list[dict]:
    """Training rows: forward + backward + Adam step on 700-256-20, B=64, per T (see baselines.py)."""
    out = []
    for T in steps:
        wl = bl.ff_workload(steps=T)
        dyn = dynamics_for(wl)
        makers = {"nirbridge-jax": lambda wl=wl, dyn=dyn: bl.train_nirbridge_jax(wl, dyn),
                  "spyx": lambda wl=wl: bl.train_spyx(wl),
                  "handwritten_jax": lambda wl=wl: bl.train_handwritten_jax(wl),
                  "snntorch": lambda wl=wl: bl.train_snntorch(wl),
                  "nirbridge-torch": lambda wl=wl, dyn=dyn: bl.train_nirbridge_torch(wl, dyn)}
        rows, res = {}, {}
        for name in TRAIN_ROWS:
            log(f"  training T={T}: building {name} ...")
            try:
                row = makers[name]()
                t0 = time.perf_counter()
                row()  # compile (JAX) / warm-up
                res[name] = {"first_call_s": time.perf_counter() - t0}
                for _ in range(WARMUP_TRAIN_STEPS - 1):  # Spyx's nnx step recompiles on its first 3 calls
                    row()
                rows[name] = row
            except Exception as e:  # reported, not fatal
                res[name] = {"error": f"{type(e).__name__}: {e}"}
                log(f"    failed: {e}")
        for name, r in _interleaved(rows, rounds, log, f"training T={T}").items():
            res[name].update(r)
        for name in rows:
            for base in ("spyx", "handwritten_jax", "snntorch"):
                if base in rows:
                    res[name][f"ratio_to_{base}"] = res[name]["median_s"] / res[base]["median_s"]
        out.append({"workload": "ff_700_256_20 training", "batch": wl.batch, "steps": T, "rows": res})
    return out


def bench_repeated_simulate(names: list[str], rounds: int, log) -> list[dict]:
    """``nb.simulate(..., backend="jax")`` called again and again on one graph and input shape (NumPy in,
    NumPy out) against ``model.run`` of a model built once (NumPy in, device arrays out)."""
    out = []
    for w in names:
        wl = WORKLOADS[w]()
        g, dyn, x = nb.Graph.from_nir(wl.graph), dynamics_for(wl), wl.inputs()
        model = nb.to_jax(g, dyn)

        def run(model=model, x=x):
            return jax.block_until_ready(model.run(model.params, x)[0])

        def sim(g=g, x=x, dyn=dyn):
            return nb.simulate(g, x, dyn, backend="jax")

        run()
        sim()  # the first call compiles; later ones reuse the compiled program
        res = _interleaved({"model.run": run, "simulate": sim}, rounds, log, f"repeated simulate {w}")
        res["simulate"]["ratio_to_model.run"] = res["simulate"]["median_s"] / res["model.run"]["median_s"]
        out.append({"workload": w, "batch": wl.batch, "steps": wl.steps, "rows": res})
    return out


def extra_table(results: list[dict], bases: tuple[str, ...]) -> str:
    head = ("workload", "T", "row", "median ms") + tuple(f"x {b}" for b in bases)
    lines = [head]
    for w in results:
        for name, r in w["rows"].items():
            if "error" in r:
                lines.append((w["workload"], str(w["steps"]), name, "error") + ("",) * len(bases))
                continue
            lines.append((w["workload"], str(w["steps"]), name, f"{r['median_s'] * 1e3:.1f}")
                         + tuple(f"{r[f'ratio_to_{b}']:.2f}" if f"ratio_to_{b}" in r else "-" for b in bases))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = ["  ".join(c.rjust(wd) if i >= 3 else c.ljust(wd) for i, (c, wd) in enumerate(zip(row, widths)))
           for row in lines]
    out.insert(1, "-" * len(out[0]))
    return "\n".join(out)


def table(results: list[dict], memory: dict) -> str:
    head = ("workload", "row", "median ms", "steps/s", "x NIRTorch", "x hand scan", "x floor", "compile s",
            "peak MiB", "agrees")
    lines = [head]
    for w in results:
        for name, r in w["rows"].items():
            if "error" in r:
                lines.append((w["workload"], name, "error", r["error"][:40], "", "", "", "", "", ""))
                continue
            mem = memory.get((w["workload"], name))
            lines.append((
                w["workload"], name, f"{r['median_s'] * 1e3:.1f}", f"{r['steps_per_s']:.0f}",
                f"{r.get('ratio_to_nirtorch_baseline', float('nan')):.2f}",
                f"{r.get('ratio_to_handwritten_scan', float('nan')):.2f}",
                f"{r.get('ratio_to_matmul_floor_jax', float('nan')):.2f}",
                f"{r['compile_s']:.2f}", "-" if mem is None else f"{mem:.0f}",
                {True: "yes", False: "NO", None: "-"}[r.get("agrees_with_handwritten")],
            ))
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(head))]
    out = ["  ".join(str(c).rjust(wd) if i >= 2 else str(c).ljust(wd) for i, (c, wd) in enumerate(zip(row, widths)))
           for row in lines]
    out.insert(1, "-" * len(out[0]))
    out.append("x NIRTorch etc.: median time divided by that row's median time in the same run (< 1 is faster).")
    for w in results:
        out.append(f"{w['workload']}: B={w['batch']} T={w['steps']} dt={w['dt']}; other processes used "
                   f"{100 * w['others']:.0f}% of the CPU during timing")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--memory", action="store_true", help="measure peak memory per row (fresh subprocesses)")
    p.add_argument("--training", type=int, nargs="*", metavar="T", default=None,
                   help="also time training steps at these T (default with the flag alone: 100 500)")
    p.add_argument("--repeated-simulate", nargs="*", default=None, choices=list(WORKLOADS),
                   help="also time repeated nb.simulate calls against model.run (default: ff_700_256_20 braille)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--child-memory", nargs=2, metavar=("WORKLOAD", "ROW"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_memory:
        _child_memory(*args.child_memory)
        return 0

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results, extras = [], {}
    if args.training is not None:
        extras["training"] = bench_training(args.training or [100, 500], args.rounds, log)
    if args.repeated_simulate is not None:
        extras["repeated_simulate"] = bench_repeated_simulate(args.repeated_simulate or ["ff_700_256_20", "braille"],
                                                              args.rounds, log)
    for w in args.workloads:
        wl = WORKLOADS[w]()
        log(f"{w}: B={wl.batch} T={wl.steps}")
        results.append(bench_workload(wl, args.rows, args.rounds, log))
    memory: dict[tuple[str, str], float | None] = {}
    if args.memory:
        for w in results:
            for name, r in w["rows"].items():
                if "error" not in r:
                    log(f"  peak memory of {w['workload']} / {name} ...")
                    memory[(w["workload"], name)] = peak_memory(w["workload"], name)
                    r["peak_rss_growth_mib"] = memory[(w["workload"], name)]
    text = table(results, memory) if results else ""
    if "training" in extras:
        text += "\n\ntraining step (forward + backward + Adam), 700-256-20, B=64\n"
        text += extra_table(extras["training"], ("spyx", "handwritten_jax", "snntorch"))
    if "repeated_simulate" in extras:
        text += "\n\nrepeated nb.simulate(backend='jax') vs model.run\n"
        text += extra_table(extras["repeated_simulate"], ("model.run",))
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    meta = {"python": platform.python_version(), "jax": jax.__version__, "torch": torch.__version__,
            "nirbridge": nb.__version__, "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "torch_threads": torch.get_num_threads(), "rounds": args.rounds}
    path = args.out / f"bench-{stamp}.json"
    path.write_text(json.dumps({"meta": meta, "results": results, **extras}, indent=1))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
