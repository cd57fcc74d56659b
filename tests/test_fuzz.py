"""The fuzz suite in CI: a fixed set of seeds, a few hundred cases per kind, every one in a worker
subprocess with a 2 GiB address-space limit and a deadline (see ``tests/fuzzing.py``).

Each case must end in a NirBridgeError that names a node or a field, or in a load whose
save -> load is bit-exact (and whose short reference simulation runs or raises a NirBridgeError).
The long campaign (10,000 cases and more) is ``benchmarks/fuzz_long.py``.
"""

from __future__ import annotations

import fuzzing
import pytest

pytestmark = pytest.mark.slow


def _check(cases):
    verdicts = fuzzing.run_batch(cases)
    assert len(verdicts) == len(cases)
    counts = fuzzing.tally(verdicts)
    bad = [(v, d, c) for c, (v, d) in zip(cases, verdicts) if v in fuzzing.FAILURES]
    assert not bad, f"{counts}; first failures: {bad[:5]}"
    return counts


@pytest.mark.parametrize("seed", [14, 15])
def test_fuzz_fixed_seeds(seed):
    cases = fuzzing.draw_cases(300, seed)
    assert {c["kind"] for c in cases} == {"file", "bytes", "memory"}
    counts = _check(cases)
    assert counts["ok"] > 0 and counts["named"] > 0  # both outcomes are reached


def test_fuzz_byte_mutations_of_every_shipped_example():
    cases = [{"kind": "bytes", "base": base, "ops": [["flip", (k * 0.6180339887) % 1.0, k]]}
             for base in fuzzing.EXAMPLES for k in range(40)]
    _check(cases)


def test_fuzz_every_node_type_with_every_odd_value():
    specials = ["torch", "torch_f16", "torch_bf16", "list", "pyfloat", "pyint", "none", "nested_list", "ragged",
                "huge_int"]
    cases = [{"kind": "memory", "base": t, "t": k, "v": {"special": s}}
             for t in fuzzing.NODE_TYPES for k, s in enumerate(specials)]
    _check(cases)


def test_the_harness_sees_hangs_and_aborts():
    """The harness itself: a case that never answers is a hang, one that kills its worker an abort,
    and the cases after them still run (in a fresh worker)."""
    ok = {"kind": "memory", "base": "LIF", "t": 0, "v": {"special": "list"}}
    out = fuzzing.run_batch([{"kind": "sleep"}, ok, {"kind": "abort"}, ok], deadline=5.0)
    verdicts = [v for v, _ in out]
    assert verdicts[0] == "hang" and verdicts[2] == "abort" and verdicts[1] == verdicts[3] in ("named", "ok")
