"""Load and plan time against graph size: nesting depth and number of nodes, to show both linear.

Three families of valid graphs, each written once with ``nb.save`` and then timed:

* ``depth``: graphs nested ``d`` deep (each level an Input, the next level, an Output; a LIF at
  the bottom), d = 10 .. 1000;
* ``chain``: a chain of ``n`` Scale nodes with dotted names, n = 10 .. 10,000;
* ``loops``: ``n`` LIF nodes, each with a recurrent self-loop through an Affine, built in memory
  with ``Graph.from_nir`` (the plan's recurrent edges), n = 10 .. 10,000.

For each size the table gives the best of ``--rounds`` runs of ``nb.load(path)`` (file families)
or ``Graph.from_nir`` (in memory), including the plan, and the time per unit (per level, per node):
linear growth shows as a flat last column. The last lines also time the shipped examples, the
"under a second" promise for every file of the corpus.

    python benchmarks/load_plan.py              # all sizes, 3 rounds
    python benchmarks/load_plan.py --quick      # fewer sizes
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nir
import numpy as np

import nirbridge as nb
from nirbridge import examples


def _lif(n: int) -> nir.LIF:
    f = lambda v: np.full(n, v, np.float32)  # noqa: E731
    return nir.LIF(tau=f(0.01), r=f(1.0), v_leak=f(0.0), v_threshold=f(1.0), v_reset=f(0.0))


def _io(n: int):
    return nir.Input(input_type={"input": np.array([n])}), nir.Output(output_type={"output": np.array([n])})


def nested(depth: int) -> nir.NIRGraph:
    """A LIF inside ``depth`` levels of nested graphs."""
    i, o = _io(2)
    g = nir.NIRGraph(nodes={"input": i, "lif": _lif(2), "output": o},
                     edges=[("input", "lif"), ("lif", "output")], type_check=False)
    for _ in range(depth):
        i, o = _io(2)
        g = nir.NIRGraph(nodes={"input": i, "sub": g, "output": o}, edges=[("input", "sub"), ("sub", "output")],
                         type_check=False)
    return g


def chain(n: int) -> nir.NIRGraph:
    i, o = _io(2)
    nodes, edges, prev = {"input": i}, [], "input"
    for k in range(n):
        name = f"layer.{k}"
        nodes[name] = nir.Scale(scale=np.array([1.0, 2.0], np.float32))
        edges.append((prev, name))
        prev = name
    nodes["output"] = o
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def loops(n: int) -> nir.NIRGraph:
    i, o = _io(2)
    nodes, edges = {"input": i, "output": o}, []
    for k in range(n):
        nodes[f"lif{k}"] = _lif(2)
        nodes[f"rec{k}"] = nir.Affine(weight=np.eye(2, dtype=np.float32), bias=np.zeros(2, np.float32))
        edges += [("input", f"lif{k}"), (f"lif{k}", f"rec{k}"), (f"rec{k}", f"lif{k}"), (f"lif{k}", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def _best(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer sizes")
    args = ap.parse_args()
    depths = [10, 50, 200, 1000] if args.quick else [10, 50, 100, 200, 500, 1000]
    sizes = [10, 1000, 10_000] if args.quick else [10, 100, 1000, 3000, 10_000]
    rows = [("family", "size", "seconds", "us per unit")]
    with tempfile.TemporaryDirectory() as tmp:
        for family, make, grid in (("depth", nested, depths), ("chain", chain, sizes)):
            for n in grid:
                path = Path(tmp) / f"{family}{n}.nir"
                g = nb.Graph.from_nir(make(n))
                nb.save(g, path)

                def run(path=path):
                    nb.load(path).plan  # noqa: B018

                s = _best(run, args.rounds)
                rows.append((family, str(n), f"{s:.3f}", f"{1e6 * s / n:.1f}"))
                print(*rows[-1], sep="\t", flush=True)
        for n in sizes:
            raw = loops(n)
            s = _best(lambda raw=raw: nb.Graph.from_nir(raw).plan, args.rounds)
            rows.append(("loops (memory)", str(n), f"{s:.3f}", f"{1e6 * s / n:.1f}"))
            print(*rows[-1], sep="\t", flush=True)
    for name in examples.names():
        s = _best(lambda name=name: nb.load(examples.path(name)).plan, args.rounds)
        rows.append((f"example {name}", "-", f"{s:.3f}", "-"))
        print(*rows[-1], sep="\t", flush=True)


if __name__ == "__main__":
    main()
