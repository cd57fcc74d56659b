"""Chunked runs (``nirbridge.stream``, ``simulate(chunk=...)``) against the NumPy reference run over the
whole sequence at once: the state (recurrent edges, a Delay's buffer) must carry across chunks."""

from __future__ import annotations

import numpy as np
import pytest
from cases import recurrent_case

import nirbridge as nb
from nirbridge.errors import InputError, UnsupportedError
from nirbridge.stream import stream

pytest.importorskip("jax")


def _case(T=60, B=3):
    g, x, dt = recurrent_case(seed=1, T=T, B=B)
    return g, x.astype(np.float32), nb.Dynamics(dt=dt)


def _reference(g, x, dyn, record=None):
    return nb.simulate(g, x, dyn, backend="reference", record=record)


def test_simulate_in_chunks_equals_the_reference_run():
    g, x, dyn = _case()
    rec = ["lif", ("lif", "v"), ("li", "v")]
    want = _reference(g, x, dyn, rec)
    for chunk in (7, 60, 100):  # not dividing T, exactly T, longer than T
        got = nb.simulate(g, x, dyn, backend="jax", record=rec, chunk=chunk)
        assert set(got) == set(want)
        np.testing.assert_array_equal(got["lif"], want["lif"])  # spikes identical
        for k in ("output", ("lif", "v"), ("li", "v")):
            assert got[k].shape == want[k].shape
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)


def test_counts_rates_and_last_state_equal_the_reduced_reference():
    g, x, dyn = _case()
    want = _reference(g, x, dyn, ["lif", ("lif", "v")])
    out = stream(g, x, dyn, chunk=9, keep=("count", "rate", "last"), record=["lif"])
    assert out["steps"] == 60
    np.testing.assert_array_equal(out["count"]["lif"], want["lif"].sum(axis=0))
    assert out["count"]["lif"].sum() > 0  # the case spikes
    np.testing.assert_allclose(out["rate"]["lif"], want["lif"].astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(out["count"]["output"], want["output"].sum(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["last"]["nodes"]["lif"]["v"], want[("lif", "v")][-1], rtol=1e-5, atol=1e-5)


def test_an_iterator_of_chunks_of_any_lengths_equals_the_array():
    g, x, dyn = _case()
    cuts = [0, 5, 6, 20, 33, 60]

    def pieces():  # a generator: pulled one chunk at a time
        for a, b in zip(cuts, cuts[1:]):
            yield {"input": x[a:b]}

    want = _reference(g, x, dyn, ["lif"])
    out = stream(g, pieces(), dyn, keep=("count", "trace"), record=["lif"])
    assert out["steps"] == 60
    np.testing.assert_array_equal(out["trace"]["lif"], want["lif"])
    np.testing.assert_array_equal(out["count"]["lif"], want["lif"].sum(axis=0))


def test_continuing_from_the_last_state_equals_one_run():
    g, x, dyn = _case()
    want = _reference(g, x, dyn, [("li", "v")])
    first = stream(g, x[:25], dyn, chunk=10, keep=("last",))
    second = stream(g, x[25:], dyn, chunk=10, keep=("trace",), record=[("li", "v")], state=first["last"])
    np.testing.assert_allclose(second["trace"][("li", "v")], want[("li", "v")][25:], rtol=1e-5, atol=1e-5)


def test_a_recorded_subset_keeps_only_its_index():
    g, x, dyn = _case(B=4)
    want = _reference(g, x, dyn, [("lif", "v")])
    out = stream(g, x, dyn, chunk=16, keep=("trace",), record=[("lif", "v")],
                 trace={("lif", "v"): np.s_[1:3, :2]})
    assert list(out["trace"]) == [("lif", "v")]
    np.testing.assert_allclose(out["trace"][("lif", "v")], want[("lif", "v")][:, 1:3, :2], rtol=1e-5, atol=1e-5)


def test_a_progress_bar_over_chunks(capsys):
    pytest.importorskip("tqdm")
    g, x, dyn = _case()
    stream(g, x, dyn, chunk=20, keep=("count",), progress=True)
    err = capsys.readouterr().err
    assert "60/60" in err


def test_repeated_chunks_compile_once_per_chunk_length():
    g, x, dyn = _case()
    from nirbridge.backends.jax import compiled_model

    model = compiled_model(g, dyn, dtype="float32")
    before = model._core.traces
    stream(g, x, dyn, chunk=10, keep=("count",))  # first chunk (no state) + one length with state
    mid = model._core.traces
    stream(g, x, dyn, chunk=10, keep=("count",))
    assert mid - before <= 2
    assert model._core.traces == mid


def test_bad_arguments_say_what_to_do():
    g, x, dyn = _case()
    with pytest.raises(InputError, match="reducer"):
        stream(g, x, dyn, keep=("median",))
    with pytest.raises(InputError, match="chunk"):
        stream(g, x, dyn, chunk=0)
    with pytest.raises(InputError, match="trace keys"):
        stream(g, x, dyn, keep=("trace",), trace={"nope": 0})
    with pytest.raises(InputError, match="no time steps"):
        stream(g, iter([]), dyn)
    with pytest.raises(InputError, match="batch"):
        stream(g, iter([x[:5], x[5:10, :2]]), dyn)
    with pytest.raises(UnsupportedError, match="backend='jax'"):
        nb.simulate(g, x, dyn, backend="reference", chunk=10)
