"""The JAX backend against the NumPy reference (the oracle), node type by node type and on whole graphs.

Tolerances. float32: every value within ``1e-5 * max(1, max |reference|)`` of the reference, per
recorded array. The backends add the same terms in another order (BLAS / XLA matmuls and
convolutions vs the reference's einsum sums), so the difference is a few float32 roundings
(eps = 1.2e-7) of the largest accumulated magnitudes, growing slowly over the steps; the CNN's IF
voltages reach ~350, hence the scale. float64: the same rule with 1e-10. Spikes must be identical.

Values within rounding of the threshold: if ``|v - v_threshold|`` is within the float32 rounding
difference above at some step, the two backends may legitimately disagree on that spike. The test
inputs here keep a margin (no disagreement happens on them); if one ever does after a change of
inputs, check that ``|v - thr|`` is within a few ulp at that step before calling it a bug.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import nir
import numpy as np
import pytest
from cases import NODE_TYPES, SPIKING, node_case, recurrent_case

import nirbridge as nb
import nirbridge.examples as examples
import nirbridge.presets
from nirbridge.backends.jax import HOIST_AUTO_MAX_BATCH, HOIST_BLOCK_ROWS, JaxOps, spike
from nirbridge.errors import InputError, ParameterError

TOL = {"float32": 1e-5, "float64": 1e-10}
DTYPES = ("float32", "float64")


def assert_matches(graph, got, ref, dtype):
    """Every recorded array within TOL of the reference (scaled as in the module docstring);
    outputs of spiking nodes identical."""
    assert set(got) == set(ref)
    for key, want in ref.items():
        have = np.asarray(got[key])
        assert have.dtype == want.dtype and have.shape == want.shape, key
        if isinstance(key, str) and graph.node(key).spec.spiking:
            np.testing.assert_array_equal(have, want, err_msg=f"spikes of {key!r}")
        elif want.size:
            scale = max(1.0, float(np.max(np.abs(want))))
            np.testing.assert_allclose(have, want, rtol=0, atol=TOL[dtype] * scale, err_msg=str(key))


# the Dynamics settings each node type's kernel reads (the others give it the same program)
READS = {"LI": ("method",), "LIF": ("method", "reset", "threshold"), "I": (), "IF": ("reset", "threshold"),
         "CubaLI": ("method", "synapse"), "CubaLIF": ("method", "synapse", "reset", "threshold"),
         "Threshold": ("threshold",)}
READS = {nt: READS.get(nt, ()) for nt in NODE_TYPES}


def _dynamics_cases():
    """Every node type x {euler, exact} x {zero, subtract} (x both synapse orders for Cuba nodes, x both
    spike tests for spiking ones). Combinations that give the node the same static configuration
    (e.g. method and reset for an Affine, which reads no Dynamics field) build the same program, so
    each distinct one runs once: the suite stays fast and every distinct program is compared."""
    for nt in NODE_TYPES:
        g, _, dt = node_case(nt)
        seen = set()
        synapses = ("simultaneous", "current_first") if nt.startswith("Cuba") else ("simultaneous",)
        thresholds = (">", ">=") if nt in SPIKING else (">",)
        for method, reset, syn, thr in itertools.product(("euler", "exact"), ("zero", "subtract"), synapses,
                                                         thresholds):
            dyn = nb.Dynamics(dt=dt, method=method, reset=reset, synapse=syn, threshold=thr)
            static = tuple(getattr(dyn, f) for f in READS[nt])
            if static not in seen:
                seen.add(static)
                yield pytest.param(nt, dyn, id=f"{nt}-{method}-{reset}-{syn}-{thr}")


@pytest.mark.parametrize("node_type,dyn", list(_dynamics_cases()))
def test_node_matches_reference(node_type, dyn):
    g, x, _ = node_case(node_type)
    if node_type in SPIKING:  # the case must exercise the spike path
        assert nb.simulate(g, x, dyn)["output"].any()
    for dtype in DTYPES:
        ref = nb.simulate(g, x, dyn, record="all", dtype=dtype)
        got = nb.simulate(g, x, dyn, backend="jax", record="all", dtype=dtype)
        assert all(isinstance(v, np.ndarray) for v in got.values())
        assert_matches(g, got, ref, dtype)


def test_recurrent_graph_matches_reference():
    g, x, dt = recurrent_case()
    dyn = nb.Dynamics(dt=dt, reset="subtract")
    assert nb.simulate(g, x, dyn, record=["lif"])["lif"].any()  # the LIF spikes, so its recurrent edge acts
    for dtype, hoist in (("float32", True), ("float64", False)):  # fc_in is hoistable
        model = nb.to_jax(g, dyn, dtype=dtype, hoist=hoist)
        got, _ = model.run(model.params, x, record="all")
        assert_matches(g, got, nb.simulate(g, x, dyn, record="all", dtype=dtype), dtype)


@pytest.mark.parametrize("preset", nb.presets.names())
def test_library_presets_match_reference(preset):
    """The library conventions (delayed reset, stored pre-reset voltage, spike counts, output delay,
    initial voltage, recurrent start, unit input gain) on the recurrent graph and a CubaLIF."""
    for g, x, dt in (recurrent_case(T=40), node_case("CubaLIF")):
        dyn = nb.Dynamics.preset(preset, dt=dt)
        got = nb.simulate(g, x, dyn, backend="jax", record="all", dtype="float64")
        assert_matches(g, got, nb.simulate(g, x, dyn, record="all", dtype="float64"), "float64")


def test_delayed_edge_out_of_a_hoisted_node():
    # Threshold is stateless and fed by the input (hoistable); with output_delay=1 its edge to the
    # Scale carries the previous step's spikes, so the Scale must stay in the scan
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}), "thr": nir.Threshold(threshold=np.zeros(3)),
             "sc": nir.Scale(scale=np.array([1.0, 2.0, 3.0])),
             "output": nir.Output(output_type={"output": np.array([3])})}
    edges = [("input", "thr"), ("thr", "sc"), ("sc", "output")]
    g = nb.Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    dyn = nb.Dynamics(dt=1e-3, output_delay=1)
    x = np.random.default_rng(0).normal(size=(6, 2, 3))
    model = nb.to_jax(g, dyn, dtype="float64", hoist=True)
    assert model.hoisted(2) == {"thr"}
    np.testing.assert_array_equal(np.asarray(model.run(model.params, x)[0]["output"]),
                                  nb.simulate(g, x, dyn, dtype="float64")["output"])


def _paper_case(name):
    rng = np.random.default_rng(7)
    if name == "braille_noDelay_bias_zero":
        return 1e-4, (rng.random((150, 4, 12)) < 0.3).astype(np.float64)
    if name == "cnn_sinabs":
        return 1.0, (rng.random((12, 2, 2, 34, 34)) < 0.3).astype(np.float64)
    csv = np.loadtxt(Path(__file__).parent / "data" / "lif_norse.csv", delimiter=",")
    return 1e-4, csv[:, 0].reshape(-1, 1, 1)


@pytest.mark.parametrize("name", ["braille_noDelay_bias_zero", "cnn_sinabs", "lif_norse"])
def test_paper_graphs_match_reference(name):
    g = nb.load(examples.path(name))
    dt, x = _paper_case(name)
    dyn = nb.Dynamics(dt=dt)
    for dtype in DTYPES:
        ref = nb.simulate(g, x, dyn, record="all", dtype=dtype)
        assert ref["output"].any()  # the input drives the graph to its output spikes
        assert_matches(g, nb.simulate(g, x, dyn, backend="jax", record="all", dtype=dtype), ref, dtype)


@pytest.mark.parametrize("case", ["Conv2d", "cnn_sinabs"])
def test_nchw_layout_matches_reference(case):
    """``layout="NCHW"`` (no channels-last region; the default runs these graphs channels-last, see
    test_jax_layout.py) still matches the reference."""
    if case == "cnn_sinabs":
        g = nb.load(examples.path(case))
        dt, x = _paper_case(case)
    else:
        g, x, dt = node_case(case)
    dyn = nb.Dynamics(dt=dt)
    assert nb.to_jax(g, dyn).channels_last  # the default would not take the NCHW path
    for dtype in DTYPES:
        model = nb.to_jax(g, dyn, dtype=dtype, layout="NCHW")
        assert model.channels_last == frozenset()
        got, _ = model.run(model.params, x, record="all")
        assert_matches(g, got, nb.simulate(g, x, dyn, record="all", dtype=dtype), dtype)


@pytest.mark.parametrize("node_type", ["Affine", "Linear", "Scale", "Threshold", "Flatten", "Conv1d", "Conv2d",
                                       "SumPool2d", "AvgPool2d"])
def test_hoisting_does_not_change_numbers(node_type):
    g, x, dt = node_case(node_type)
    dyn = nb.Dynamics(dt=dt)
    runs = {}
    for hoist in (True, False):
        model = nb.to_jax(g, dyn, dtype="float64", hoist=hoist)
        assert model.hoisted(x.shape[1]) == (model.program.hoistable if hoist else frozenset())
        runs[hoist] = np.asarray(model.run(model.params, x, record="all")[0]["output"])
    assert "node" in model.program.hoistable
    # float64: the hoisted product adds the same terms, perhaps blocked differently
    np.testing.assert_allclose(runs[True], runs[False], rtol=0, atol=1e-12 * max(1, np.abs(runs[False]).max()))


def test_hoist_auto_rule():
    g = nb.load(examples.path("cnn_sinabs"))  # Conv2d first: never hoisted by "auto"
    model = nb.to_jax(g, nb.Dynamics(dt=1.0))
    assert model.program.hoistable == {"0"} and model.hoisted(1) == frozenset()
    g = nb.load(examples.path("braille_noDelay_bias_zero"))  # Affine first: hoisted for small batches
    model = nb.to_jax(g, nb.Dynamics(dt=1e-4))
    assert model.hoisted(HOIST_AUTO_MAX_BATCH) == {"fc1"}
    assert model.hoisted(HOIST_AUTO_MAX_BATCH + 1) == frozenset()
    # in blocks of about HOIST_BLOCK_ROWS rows; all steps at once when T*B fits in one block
    assert model.hoist_block(8, 500) == HOIST_BLOCK_ROWS // 8
    assert model.hoist_block(1, 100) is None and model.hoist_block(64, 500) == HOIST_BLOCK_ROWS // 64
    with pytest.raises(InputError, match="hoist"):
        nb.to_jax(g, nb.Dynamics(dt=1e-4), hoist="yes")


@pytest.mark.parametrize("T", [70, 64, 5])
def test_blocked_hoisting_matches_the_plain_scan(T):
    """Blocks of k = 256 // 8 = 32 steps: T=70 is two blocks and a tail of 6, T=64 two whole blocks,
    T=5 one block of all steps. The hoisted Affine adds the same terms per row whatever the block,
    so float64 results agree to rounding with the unhoisted scan and the reference, states too."""
    g = nb.load(examples.path("braille_noDelay_bias_zero"))
    dyn = nb.Dynamics(dt=1e-4, synapse="current_first")
    x = (np.random.default_rng(4).random((T, 8, 12)) < 0.3).astype(np.float64)
    auto = nb.to_jax(g, dyn, dtype="float64")
    assert auto.hoisted(8) == {"fc1"} and auto.hoist_block(8, T) == (None if T * 8 <= HOIST_BLOCK_ROWS else 32)
    got, state = auto.run(auto.params, x, record="all")
    plain = nb.to_jax(g, dyn, dtype="float64", hoist=False)
    want, want_state = plain.run(plain.params, x, record="all")
    ref = nb.simulate(g, x, dyn, record="all", dtype="float64")
    for k in ref:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=0, atol=1e-12, err_msg=str(k))
        np.testing.assert_allclose(np.asarray(got[k]), ref[k], rtol=0, atol=1e-10, err_msg=str(k))
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(want_state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def braille():
    g = nb.load(examples.path("braille_noDelay_bias_zero"))
    x = (np.random.default_rng(3).random((40, 3, 12)) < 0.4).astype(np.float32)
    return g, nb.to_jax(g, nb.Dynamics(dt=1e-4)), x


def test_run_traces_once_per_shape(braille):
    g, model, x = braille
    model = nb.to_jax(g, model.dynamics)
    a, _ = model.run(model.params, x)
    b, _ = model.run(model.params, x + 0)  # same shape: no new trace
    assert model.traces == 1
    np.testing.assert_array_equal(np.asarray(a["output"]), np.asarray(b["output"]))
    model.run(model.params, x[:20])  # another T: one more
    assert model.traces == 2


def test_step_loop_equals_run(braille):
    g, model, x = braille
    out, final = model.run(model.params, x, record=[("lif2", "v")])
    state = model.init_state(x.shape[1])
    step = jax.jit(model.step)
    for t in range(x.shape[0]):
        state, y = step(model.params, state, x[t])
        np.testing.assert_allclose(np.asarray(y["output"]), np.asarray(out["output"][t]))
    # same float32 ops in another program: equal within float32 rounding of v (|v| < 300)
    np.testing.assert_allclose(np.asarray(state["nodes"]["lif2"]["v"]), np.asarray(final["nodes"]["lif2"]["v"]),
                               rtol=0, atol=1e-3)
    np.testing.assert_allclose(np.asarray(out[("lif2", "v")][-1]), np.asarray(final["nodes"]["lif2"]["v"]))


def test_state_carries_over_between_runs(braille):
    g, model, x = braille
    whole, _ = model.run(model.params, x)
    first, state = model.run(model.params, x[:25])
    second, _ = model.run(model.params, x[25:], state=state)
    np.testing.assert_array_equal(np.concatenate([first["output"], second["output"]]), np.asarray(whole["output"]))


def test_jit_and_vmap(braille):
    g, model, x = braille
    out, _ = model.run(model.params, x, record=["fc2", ("lif1.lif", "i")])
    # run under an outer jit (Outputs mixes str and tuple keys and still is a pytree)
    jitted, _ = jax.jit(lambda p, x: model.run(p, x, record=["fc2", ("lif1.lif", "i")]))(model.params, x)
    assert list(jitted) == ["output", "fc2", ("lif1.lif", "i")]
    for k in out:
        np.testing.assert_allclose(np.asarray(jitted[k]), np.asarray(out[k]), rtol=1e-6, atol=1e-6)
    # vmap over a leading axis of inputs: each slice as its own run
    xs = np.stack([x, x[::-1]])
    vm = jax.vmap(lambda x: model.run(model.params, x)[0]["output"])(xs)
    for i in range(2):
        np.testing.assert_array_equal(np.asarray(vm[i]), np.asarray(model.run(model.params, xs[i])[0]["output"]))
    # vmap over an ensemble of parameter sets
    scales = jnp.asarray([1.0, 1.5, 2.0], jnp.float32)
    ensemble = jax.vmap(lambda s: jax.tree.map(lambda a: a * s if a.ndim == 2 else a, model.params))(scales)
    ve = jax.vmap(lambda p: model.run(p, x)[0]["output"])(ensemble)
    for i, s in enumerate([1.0, 1.5, 2.0]):
        p = jax.tree.map(lambda a, s=s: a * jnp.float32(s) if a.ndim == 2 else a, model.params)
        np.testing.assert_array_equal(np.asarray(ve[i]), np.asarray(model.run(p, x)[0]["output"]))


def test_checkpoint_gives_same_values_and_gradients():
    g, x, dt = node_case("LIF")
    dyn = nb.Dynamics(dt=dt)
    models = [nb.to_jax(g, dyn, checkpoint=c) for c in (True, False)]

    def loss(m):
        return lambda p: jnp.sum(m.run(p, x, record=[("node", "v")])[0][("node", "v")] ** 2)

    (la, ga), (lb, gb) = (jax.value_and_grad(loss(m))(m.params) for m in models)
    np.testing.assert_allclose(la, lb, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):  # same float32 ops, recomputed
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6 * float(jnp.abs(b).max()))
    assert any(float(jnp.abs(b).max()) > 0 for b in jax.tree.leaves(gb))


def test_params_pytree_and_dtypes():
    g = nb.load(examples.path("braille_noDelay_bias_zero"))
    for dtype in DTYPES:
        model = nb.to_jax(g, nb.Dynamics(dt=1e-4), dtype=dtype)
        assert set(model.params) == {"fc1", "lif1.lif", "fc2", "lif2", "lif1.w_rec"}
        for node, fields in model.params.items():
            originals = g.node(node).params
            for f, a in fields.items():
                assert a.dtype == np.dtype(dtype)
                np.testing.assert_array_equal(np.asarray(a), np.asarray(originals[f]).astype(dtype))


def test_float64_without_x64_is_a_clear_error():
    g, x, dt = node_case("LIF")
    model = nb.to_jax(g, nb.Dynamics(dt=dt), dtype="float64")
    with jax.enable_x64(False):
        with pytest.raises(InputError, match="jax_enable_x64"):
            nb.to_jax(g, nb.Dynamics(dt=dt), dtype="float64")
        with pytest.raises(InputError, match="jax_enable_x64"):
            model.run(model.params, x)
        # float32 works without x64
        out = nb.simulate(g, x, nb.Dynamics(dt=dt), backend="jax")
    assert out["output"].dtype == np.float32


def test_bad_params_and_inputs_name_the_node():
    g, x, dt = node_case("LIF")
    model = nb.to_jax(g, nb.Dynamics(dt=dt))
    with pytest.raises(InputError, match="expected"):
        model.run(model.params, x[:, :, :3])
    with pytest.raises(ParameterError, match="'node'.*'tau'.*shape"):
        model.run({"node": {**model.params["node"], "tau": jnp.ones(2, jnp.float32)}}, x)
    with pytest.raises(ParameterError, match="'node'.*fields"):
        model.run({"node": {"tau": model.params["node"]["tau"]}}, x)
    with pytest.raises(ParameterError, match="'nope'"):
        model.run({**model.params, "nope": {}}, x)
    with pytest.raises(ParameterError, match="'node'.*'tau'.*shape"):
        nb.from_jax(model, {"node": {"tau": np.ones(2, np.float32)}})
    with pytest.raises(ParameterError, match="'node'.*'w'"):
        nb.from_jax(model, {"node": {"w": np.ones(6, np.float32)}})
    with pytest.raises(nb.errors.GraphError, match="Graph"):
        nb.to_jax(42, nb.Dynamics(dt=dt))


def test_every_to_function_takes_a_graph_a_nir_graph_or_a_path(tmp_path):
    g, x, dt = node_case("LIF")
    dyn = nb.Dynamics(dt=dt)
    nb.save(g, tmp_path / "g.nir")
    want = nb.simulate(g, x, dyn)["output"]
    for src in (g, g.to_nir(), tmp_path / "g.nir", str(tmp_path / "g.nir")):
        model = nb.to_jax(src, dyn)
        np.testing.assert_array_equal(np.asarray(model.run(model.params, x)[0]["output"]), want)
        np.testing.assert_array_equal(nb.simulate(src, x, dyn, backend="jax")["output"], want)
        module = nb.to_torch(src, dyn)
        np.testing.assert_array_equal(module(x).detach().numpy(), want)
        assert nb.from_torch(module).equals(g) and nb.from_jax(model).equals(g)


def test_from_jax_writes_back_changed_params_in_the_original_dtype():
    g = nb.load(examples.path("braille_noDelay_bias_zero"))  # float32 weights, float64 neuron params
    model = nb.to_jax(g, nb.Dynamics(dt=1e-4))
    assert nb.from_jax(model).equals(g)
    params = jax.tree.map(lambda a: a, model.params)
    params["lif2"]["tau_mem"] = params["lif2"]["tau_mem"] * 2
    params["fc1"]["weight"] = params["fc1"]["weight"] + 1
    back = nb.from_jax(model, params)
    assert not back.equals(g)
    tau = back.node("lif2").params["tau_mem"]
    assert tau.dtype == np.float64  # the original dtype, holding the float32 value
    np.testing.assert_array_equal(tau, np.asarray(params["lif2"]["tau_mem"]).astype(np.float64))
    np.testing.assert_array_equal(back.node("fc1").params["weight"], np.asarray(params["fc1"]["weight"]))
    # untouched params keep the original arrays bit for bit
    for node, field in [("lif2", "tau_syn"), ("lif1.lif", "tau_mem"), ("fc2", "weight")]:
        a, b = back.node(node).params[field], g.node(node).params[field]
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert nb.from_jax(nb.to_jax(back, model.dynamics)).equals(back)


@pytest.mark.parametrize("surrogate", ["fast_sigmoid", "sigmoid", "straight_through"])
def test_spike_forward_and_surrogate_derivative(surrogate):
    v = jnp.asarray([-0.3, 0.0, 0.1, 0.2, 0.25, 0.7], jnp.float64)
    thr, slope = jnp.float64(0.2), 10.0
    for inclusive in (False, True):
        z = spike(v, thr, inclusive, surrogate, slope)
        want = (np.asarray(v) >= 0.2) if inclusive else (np.asarray(v) > 0.2)
        np.testing.assert_array_equal(np.asarray(z), want.astype(np.float64))
    d = np.asarray(v) - 0.2
    closed = {"fast_sigmoid": 1 / (1 + slope * np.abs(d)) ** 2,
              "sigmoid": slope / (1 + np.exp(-slope * d)) * (1 - 1 / (1 + np.exp(-slope * d))),
              "straight_through": np.ones_like(d)}[surrogate]
    dv, dthr = jax.vmap(jax.grad(spike, argnums=(0, 1)), in_axes=(0, None, None, None, None))(
        v, thr, False, surrogate, slope)
    np.testing.assert_allclose(np.asarray(dv), closed, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(dthr), -closed, rtol=1e-12)
    assert JaxOps().spike(v, thr, False, surrogate, slope).dtype == v.dtype


def test_products_of_one_source_are_merged_into_one():
    """Braille's CubaLIF feeds the recurrent Affine and the readout Affine: the scan computes one
    product for both (dense_groups); the numbers are those of the reference, recorded nodes and
    the final state included, and a graph without such siblings has no group."""
    from nirbridge.backends.jax import dense_groups

    g = nb.load(examples.path("braille_noDelay_bias_zero"))
    dyn = nb.Dynamics(dt=1e-4, synapse="current_first", recurrent_start="rest")
    model = nb.to_jax(g, dyn, dtype="float64")
    assert dense_groups(model._core.scan_program, model.hoisted(300)) == [("fc2", "lif1.w_rec")]
    x = (np.random.default_rng(8).random((50, 300, 12)) < 0.3).astype(np.float64)
    got, state = model.run(model.params, x, record="all")
    ref = nb.simulate(g, x, dyn, record="all", dtype="float64")
    assert_matches(g, got, ref, "float64")
    from nirbridge.backends.reference import ReferenceModel

    ref_model = ReferenceModel(g, dyn, dtype="float64")
    _, ref_state = ref_model.run(x)
    np.testing.assert_allclose(np.asarray(state["prev"]["lif1.w_rec"]), ref_state["prev"]["lif1.w_rec"], atol=1e-10)
    g2, _, _ = node_case("Affine")
    m2 = nb.to_jax(g2, nb.Dynamics(dt=1e-3))
    assert dense_groups(m2._core.scan_program, frozenset()) == []
