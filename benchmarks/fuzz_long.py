"""The long fuzz campaign: many more cases than the CI run of tests/test_fuzz.py, same verdicts.

Draws ``--cases`` case specs (structurally mutated NIR files, byte mutations of the shipped
examples, odd in-memory graphs; see ``tests/fuzzing.py``) from the hypothesis strategies with
seeds ``--seed``, ``--seed + 1``, ..., runs them in worker subprocesses (2 GiB address-space limit,
a deadline per case) and prints the count of every verdict, then each failing case (its spec, so
it can be replayed with ``tests.fuzzing.run_batch([spec])``).

    python benchmarks/fuzz_long.py --cases 10000
    python benchmarks/fuzz_long.py --cases 500 --seed 7 --json results/fuzz.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzzing  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=500, help="cases drawn per seed")
    ap.add_argument("--json", type=Path, default=None, help="write counts and failures here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    verdicts, cases, seed = [], [], args.seed
    while len(cases) < args.cases:
        drawn = fuzzing.draw_cases(min(args.batch, args.cases - len(cases)), seed)
        cases += drawn
        verdicts += fuzzing.run_batch(drawn)
        seed += 1
        print(f"{len(cases)} cases, {time.perf_counter() - t0:.0f} s: {fuzzing.tally(verdicts)}", flush=True)
    counts = fuzzing.tally(verdicts)
    kinds = {}
    for c in cases:
        kinds[c["kind"]] = kinds.get(c["kind"], 0) + 1
    failures = [(v, d, c) for c, (v, d) in zip(cases, verdicts) if v in fuzzing.FAILURES]
    print(f"\n{len(cases)} cases ({kinds}) in {time.perf_counter() - t0:.0f} s")
    for k, n in counts.items():
        print(f"  {k:13s} {n}")
    for v, d, c in failures:
        print(v, d, json.dumps(c))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"counts": counts, "kinds": kinds, "failures": failures}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
