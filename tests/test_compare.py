"""nb.compare and nirbridge.testing: agreement is found, and a deliberately wrong backend is caught
at the exact step and node where it goes wrong.

The wrong backends are copies of the NumPy reference (its time loop, the shared kernels) with one
node's output changed from some step on; the change flows on to later nodes and later steps as a
real bug would, so the report must pick the first node in plan order among all that differ then.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from cases import NODE_TYPES, node_case, recurrent_case

import nirbridge as nb
from nirbridge import examples
from nirbridge.backends.reference import NumpyOps, ReferenceModel, cast_params
from nirbridge.compare import default_tolerance, spiking_nodes
from nirbridge.errors import InputError, MissingDependencyError
from nirbridge.kernels import NoState
from nirbridge.program import (
    build_program,
    graph_step,
    init_carry,
    normalize_inputs,
    parse_record,
    prepare,
    resolve_dtype,
)
from nirbridge.testing import assert_equivalent, random_spikes


class PerturbedReference:
    """The reference time loop, with ``change(t, y) -> y`` applied to node ``node``'s output at every
    step ``t`` (the changed value is what later nodes and recurrent edges see)."""

    def __init__(self, name, node=None, change=None, compute_dtype=None):
        self.name, self.node, self.change, self.compute_dtype = name, node, change, compute_dtype

    def simulate(self, graph, dynamics, x, *, record=None, dtype=None, progress=False):
        prog = build_program(graph, dynamics, "reference")
        dtype = resolve_dtype(dtype)
        work = resolve_dtype(self.compute_dtype or dtype)
        ops = NumpyOps()
        coeffs = prepare(ops, prog, cast_params(prog, work))
        inputs, T, B = normalize_inputs(prog, x, work, convert=lambda v, d: np.asarray(v).astype(d))
        rec_nodes, rec_states = parse_record(prog, record)
        keys = list(dict.fromkeys([*prog.outputs, *rec_nodes]))
        res = {k: [] for k in [*keys, *rec_states]}
        state = init_carry(ops, prog, coeffs, B, work)
        for t in range(T):
            state, outs = self._step(ops, prog, coeffs, state, {n: a[t] for n, a in inputs.items()}, t)
            for k in keys:
                res[k].append(outs[k])
            for n, v in rec_states:
                res[(n, v)].append(getattr(state["nodes"][n], v))
        return {k: np.stack(v).astype(dtype) for k, v in res.items()}

    def _step(self, ops, prog, coeffs, state, inputs_t, t):
        if self.node is None:
            return graph_step(ops, prog, coeffs, state, inputs_t)
        outs, nodes, prev = {}, dict(state["nodes"]), state["prev"]
        for s in prog.steps:
            if s.role == "input":
                outs[s.name] = inputs_t[s.name]
                continue
            x = None
            for src, rec in s.sources:
                v = prev[src] if rec else outs[src]
                x = v if x is None else x + v
            new, y = prog.kernels[s.name].step(ops, coeffs[s.name], nodes.get(s.name, NoState()), x)
            if s.name == self.node:
                y = self.change(t, y)
            if s.name in nodes:
                nodes[s.name] = new
            outs[s.name] = y
        return {"nodes": nodes, "prev": {a: outs[a] for a in prog.recurrent_sources}}, outs


def register(name, **kw):
    nb.register_backend(name, lambda: PerturbedReference(name, **kw), replace=True)
    return name


def add_from(step, delta):
    return lambda t, y: y + np.asarray(delta if t >= step else 0.0, dtype=y.dtype)


@pytest.fixture
def rec():
    g, x, dt = recurrent_case()
    return g, x, nb.Dynamics(dt=dt)


def test_reference_agrees_with_a_copy_of_itself(rec):
    g, x, dyn = rec
    register("copy")
    r = nb.compare(g, x, dyn, backends=("reference", "copy"), require=True)
    assert r.ok and r.ran == ["reference", "copy"] and r.first_divergence is None
    c = r.comparisons["copy"]
    # every node output and every state variable, in plan order
    assert [e.key for e in c.entries] == ["input", "fc_in", ("lif", "v"), "lif", ("delay", "buffer"), "delay",
                                          "fc_out", ("li", "v"), "li", "output", "rec"]
    assert c.max_abs == 0.0 and c.spikes_differ == 0
    assert c.entry("lif").spikes_differ == 0 and c.entry("fc_in").spikes_differ is None
    assert "OK: reference, copy agree" in str(r)


@pytest.mark.parametrize("node_type", NODE_TYPES)
def test_float64_computation_agrees_with_float32_within_the_default_tolerance(node_type):
    # an independent check of the default float32 tolerance: the same kernels computed in float64
    # and rounded once at the end differ from float32 arithmetic by float32 rounding only, the
    # same size of difference as between two float32 backends
    g, x, dt = node_case(node_type)
    register("f64", compute_dtype="float64")
    r = nb.compare(g, x, nb.Dynamics(dt=dt), backends=("reference", "f64"), require=True)
    assert r.ok, str(r)
    assert r.comparisons["f64"].max_abs < default_tolerance("float32")[0]


def test_float64_computation_differs_from_float32_and_a_tight_tolerance_catches_it(rec):
    g, x, dyn = rec
    register("f64", compute_dtype="float64")
    loose = nb.compare(g, x, dyn, backends=("reference", "f64"))
    assert loose.ok and 0 < loose.comparisons["f64"].max_abs < 1e-5
    tight = nb.compare(g, x, dyn, backends=("reference", "f64"), atol=0, rtol=0)
    assert not tight.ok and tight.first_divergence is not None


def test_a_perturbed_node_is_named_at_the_step_it_first_differs(rec):
    g, x, dyn = rec
    register("perturbed", node="fc_in", change=add_from(7, 1e-3))
    r = nb.compare(g, x, dyn, backends=("reference", "perturbed"))
    assert not r.ok
    d = r.first_divergence
    assert (d.backend, d.step, d.node, d.var) == ("perturbed", 7, "fc_in", None)
    assert d.value - d.baseline_value == pytest.approx(1e-3, abs=2e-7)  # float32 rounding of ~1.8 + 1e-3
    base, bad = r.results["reference"], r.results["perturbed"]
    np.testing.assert_array_equal(d.baseline_value, base["fc_in"][(7, *d.index)])
    c = r.comparisons["perturbed"]
    # the change reaches lif's voltage in the same step: plan order decides
    assert c.entry("fc_in").first_step == 7 and c.entry(("lif", "v")).first_step == 7
    assert c.entry("input").ok and c.entry("input").max_abs == 0
    assert c.entry("fc_in").max_abs == pytest.approx(1e-3, abs=2e-7)
    for k in base:  # nothing differs before step 7
        np.testing.assert_array_equal(bad[k][:7], base[k][:7])
    text = str(r)
    assert "perturbed first diverges at step 7, node 'fc_in' output" in text
    assert "DIFFERENT: backends disagree; first at step 7, node 'fc_in' (perturbed)" in text


def test_a_change_on_a_recurrent_edge_arrives_one_step_later(rec):
    # rec closes the cycle lif -> rec -> lif, so it runs last in the plan and lif sees its output
    # of the previous step: a change of rec at step 12 reaches lif's voltage at step 13
    g, x, dyn = rec
    register("rec_bad", node="rec", change=add_from(12, 0.5))
    r = nb.compare(g, x, dyn, backends=("reference", "rec_bad"))
    d = r.first_divergence
    assert (d.step, d.node, d.var) == (12, "rec", None)
    c = r.comparisons["rec_bad"]
    assert c.entry(("lif", "v")).first_step == 13
    assert c.entry("fc_in").ok and c.entry("input").ok


def test_a_node_state_is_named_before_the_node_output(rec):
    # a backend whose LIF kernel starts every step 5 above the true voltage: at step 0 lif spikes
    # where the reference does not, so its voltage (reset) and its output both differ; the state
    # is updated first, so the report names it
    g, x, dyn = rec
    from nirbridge.kernels import KERNELS, register_kernel

    def buggy_lif(step, dyn):
        k = KERNELS["LIF"](step, dyn)
        return k.replace(step=lambda ops, c, st, x: k.step(ops, c, st._replace(v=st.v + 5.0), x))

    register_kernel("LIF", buggy_lif, backend="lifbug", replace=True)

    class LifBug:
        name = "lifbug"

        def simulate(self, graph, dynamics, x, *, record=None, dtype=None, progress=False):
            model = ReferenceModel(None, program=build_program(graph, dynamics, "lifbug"), dtype=dtype)
            return model.run(x, record=record)[0]

    nb.register_backend("lifbug", LifBug, replace=True)
    r = nb.compare(g, x, dyn, backends=("reference", "lifbug"))
    c = r.comparisons["lifbug"]
    assert c.entry(("lif", "v")).first_step == 0 and c.entry("lif").first_step == 0
    d = r.first_divergence
    assert (d.step, d.node, d.var) == (0, "lif", "v")
    assert r.results["lifbug"]["lif"][0].all() and not r.results["reference"]["lif"][0].any()


def test_spike_disagreements_are_counted_exactly(rec):
    g, x, dyn = rec
    T, B = x.shape[:2]

    def flip_neuron0_last_step(t, y):
        if t != T - 1:
            return y
        y = y.copy()
        y[:, 0] = 1 - y[:, 0]
        return y

    register("flipper", node="lif", change=flip_neuron0_last_step)
    r = nb.compare(g, x, dyn, backends=("reference", "flipper"))
    c = r.comparisons["flipper"]
    assert c.entry("lif").spikes_differ == B  # one flipped spike per batch row
    assert c.entry(("lif", "v")).ok  # the voltage is computed before the output was changed
    assert c.spikes_differ == B  # lif is the only spiking node: the rest is not counted as spikes
    d = r.first_divergence
    assert (d.step, d.node, d.var) == (T - 1, "lif", None)
    assert abs(d.value - d.baseline_value) == 1.0


def test_spiking_nodes():
    g, _, _ = recurrent_case()
    assert spiking_nodes(g) == {"lif"}
    braille = nb.load(examples.path("braille_noDelay_bias_zero"))
    assert spiking_nodes(braille) == {"lif1.lif", "lif2", "output"}
    for t in ("LIF", "IF", "CubaLIF", "Threshold"):
        assert "node" in spiking_nodes(node_case(t)[0])
    assert spiking_nodes(node_case("LI")[0]) == set()


def test_nan_agrees_only_with_nan(rec):
    g, x, dyn = rec

    def nan_at(t, y):
        if t == 5:
            y = y.copy()
            y[1, 1] = np.nan
        return y

    register("nan", node="fc_out", change=nan_at)
    r = nb.compare(g, x, dyn, backends=("reference", "nan"))
    d = r.first_divergence
    assert (d.step, d.node, d.index) == (5, "fc_out", (1, 1)) and np.isnan(d.value)
    assert r.comparisons["nan"].entry("fc_out").max_abs == float("inf")
    # NaN in both: agreement
    register("nan2", node="fc_out", change=nan_at)
    r2 = nb.compare(g, x, dyn, backends=("nan", "nan2"))
    assert r2.ok and r2.baseline == "nan"


def test_tolerance_rule_is_atol_plus_rtol_times_baseline(rec):
    g, x, dyn = rec
    register("small", node="fc_out", change=add_from(0, 4e-6))
    assert nb.compare(g, x, dyn, backends=("reference", "small")).ok  # 4e-6 < atol 1e-5
    assert not nb.compare(g, x, dyn, backends=("reference", "small"), atol=1e-6, rtol=0).ok
    # fc_out values are O(1): rtol 1e-2 covers 4e-6 wherever |y| >= 4e-4
    y = np.abs(nb.simulate(g, x, dyn, record=["fc_out"], dtype="float32")["fc_out"])
    r = nb.compare(g, x, dyn, backends=("reference", "small"), atol=0, rtol=1e-2)
    assert r.ok == bool(np.all(4e-6 <= 1e-2 * y + 1e-9))


def test_default_tolerances():
    assert default_tolerance("float32") == (1e-5, 1e-5)
    assert default_tolerance(np.float64) == (1e-10, 1e-10)
    g, x, dt = node_case("LIF")
    r = nb.compare(g, x, nb.Dynamics(dt=dt), backends=("reference",), dtype="float64")
    assert (r.atol, r.rtol, r.dtype) == (1e-10, 1e-10, np.dtype("float64"))


def test_missing_backend_is_reported_unless_required(rec):
    g, x, dyn = rec

    def missing():
        raise MissingDependencyError("this needs 'fakeframework'. Fix: pip install fakeframework")

    nb.register_backend("absent", missing, replace=True)
    register("copy")
    r = nb.compare(g, x, dyn, backends=("reference", "absent", "copy"))
    assert r.ok and r.ran == ["reference", "copy"] and "fakeframework" in r.unavailable["absent"]
    assert "absent" in str(r) and "unavailable" in str(r)
    with pytest.raises(MissingDependencyError, match="fakeframework"):
        nb.compare(g, x, dyn, backends=("reference", "absent"), require=["absent"])
    with pytest.raises(MissingDependencyError):
        nb.compare(g, x, dyn, backends=("reference", "absent"), require=True)
    only = nb.compare(g, x, dyn, backends=("reference", "absent"))
    assert not only.ok and "NOT CHECKED" in str(only)
    # without the reference, the first backend that is available is the baseline
    register("copy2")
    r = nb.compare(g, x, dyn, backends=("absent", "copy", "copy2"))
    assert r.ok and r.baseline == "copy" and list(r.comparisons) == ["copy2"]
    with pytest.raises(MissingDependencyError, match="none of the backends"):
        nb.compare(g, x, dyn, backends=("absent",))


def test_failing_and_malformed_backends_make_the_report_fail(rec):
    g, x, dyn = rec

    class Broken:
        name = "broken"

        def simulate(self, graph, dynamics, x, **kw):
            raise RuntimeError("kaput")

    class Short:
        name = "short"

        def simulate(self, graph, dynamics, x, **kw):
            out = nb.simulate(graph, x, dynamics, record=kw["record"], dtype=kw["dtype"])
            out["fc_in"] = out["fc_in"][:-1]
            del out["rec"]
            return out

    nb.register_backend("broken", Broken, replace=True)
    nb.register_backend("short", Short, replace=True)
    r = nb.compare(g, x, dyn, backends=("reference", "broken", "short"))
    assert not r.ok and r.failed == {"broken": "RuntimeError: kaput"}
    c = r.comparisons["short"]
    assert "shape (59, 3, 5) instead of (60, 3, 5)" in c.entry("fc_in").problem
    assert "did not return it" in c.entry("rec").problem
    assert c.entry("lif").ok
    text = str(r)
    assert "FAILED" in text and "kaput" in text and "MISMATCH" in text


def test_bad_arguments(rec):
    g, x, dyn = rec
    with pytest.raises(InputError, match="unknown backends"):
        nb.compare(g, x, dyn, backends=("reference", "nope"))
    with pytest.raises(InputError, match="listed twice"):
        nb.compare(g, x, dyn, backends=("reference", "reference"))
    with pytest.raises(InputError, match=">= 0"):
        nb.compare(g, x, dyn, backends=("reference",), atol=-1)
    with pytest.raises(InputError, match="require"):
        nb.compare(g, x, dyn, backends=("reference",), require=["jax"])
    with pytest.raises(InputError, match="expected"):
        nb.compare(g, x[:, :, :2], dyn, backends=("reference",))
    with pytest.raises(nb.NirBridgeError, match="Graph"):
        nb.compare(42, x, dyn, backends=("reference",))
    with pytest.raises(nb.NirBridgeError, match="not a file"):
        nb.compare("no-such-net.nir", x, dyn, backends=("reference",))


def test_reference_is_the_baseline_wherever_it_is_listed(rec):
    g, x, dyn = rec
    register("copy")
    r = nb.compare(g, x, dyn, backends=("copy", "reference"))
    assert r.baseline == "reference" and r.backends == ("reference", "copy")


def test_assert_equivalent(rec):
    g, x, dyn = rec
    register("copy")
    register("perturbed", node="fc_in", change=add_from(7, 1e-3))
    rep = assert_equivalent(g, x, dyn, backends=("reference", "copy"))
    assert rep.ok
    with pytest.raises(AssertionError) as e:
        assert_equivalent(g, x, dyn, backends=("reference", "perturbed"))
    msg = str(e.value)
    assert "backends disagree" in msg and "first diverges at step 7, node 'fc_in'" in msg and "max abs" in msg
    with pytest.raises(AssertionError, match="fewer than min_backends=2"):
        assert_equivalent(g, x, dyn, backends=("reference",))


def test_random_spikes_is_seeded_and_bernoulli():
    g, _, _ = recurrent_case()
    a = random_spikes(g, 2000, 3, 0.2, seed=5)
    assert a.shape == (2000, 3, 4) and a.dtype == np.float32 and set(np.unique(a)) <= {0.0, 1.0}
    np.testing.assert_array_equal(a, random_spikes(g, 2000, 3, 0.2, seed=5))
    assert abs(a.mean() - 0.2) < 0.01  # 24000 draws: std of the mean 0.0026
    with pytest.raises(InputError):
        random_spikes(g, 10, 1, 1.5)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None or importlib.util.find_spec("torch") is None,
                    reason="needs jax and torch installed")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_real_backends_agree_on_the_braille_graph(dtype):
    g = nb.load(examples.path("braille_noDelay_bias_zero"))
    dyn = nb.Dynamics(dt=1e-4, synapse="current_first", reset="subtract")
    x = random_spikes(g, 64, 4, 0.1, seed=0)
    r = assert_equivalent(g, x, dyn, backends=("reference", "jax", "torch"), dtype=dtype)
    assert set(r.comparisons) == {"jax", "torch"}
    assert r.results["reference"]["lif1.lif"].sum() > 0  # the hidden layer spikes: spikes are compared
