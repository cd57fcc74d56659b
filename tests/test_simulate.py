"""The ``simulate`` contract: input layout, the result dict, recording, several inputs and
outputs, dtypes, and clear errors for bad input (class and message)."""

from __future__ import annotations

import nir
import numpy as np
import pytest
from cases import recurrent_case

import nirbridge as nb
from nirbridge.errors import DynamicsError, GraphError, InputError, NirBridgeError

DT = 1e-3


def _lif_graph() -> nb.Graph:
    nodes = {
        "input": nir.Input(input_type={"input": np.array([3])}),
        "fc": nir.Affine(weight=np.array([[1.0, 0.5, 0.0], [0.0, -1.0, 2.0]]), bias=np.array([0.1, 0.0])),
        "lif": nir.LIF(tau=np.array([5e-3, 1e-2]), r=np.array([1.0, 2.0]), v_leak=np.zeros(2),
                       v_threshold=np.array([0.3, 0.5]), v_reset=np.zeros(2)),
        "output": nir.Output(output_type={"output": np.array([2])}),
    }
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "output")]
    return nb.Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=edges))


def _two_in_two_out(rng):
    """a(3) -> Affine -> LI(4) <- Linear <- b(2); LI -> out1; b -> Scale -> out2 (fan-in of two into LI)."""
    nodes = {
        "a": nir.Input(input_type={"input": np.array([3])}),
        "b": nir.Input(input_type={"input": np.array([2])}),
        "fa": nir.Affine(weight=rng.normal(size=(4, 3)), bias=rng.normal(size=4)),
        "fb": nir.Linear(weight=rng.normal(size=(4, 2))),
        "li": nir.LI(tau=np.array([5e-3, 1e-2, 2e-2, 4e-3]), r=np.array([1.0, 0.5, 2.0, 1.5]),
                     v_leak=np.array([0.0, 0.1, -0.1, 0.2])),
        "sc": nir.Scale(scale=np.array([2.0, -3.0])),
        "out1": nir.Output(output_type={"output": np.array([4])}),
        "out2": nir.Output(output_type={"output": np.array([2])}),
    }
    edges = [("a", "fa"), ("b", "fb"), ("fa", "li"), ("fb", "li"), ("li", "out1"), ("b", "sc"), ("sc", "out2")]
    return nb.Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=edges)), nodes


def _p(g, node, field):
    return np.asarray(g.plan[node].node.params[field], dtype=np.float64)


# ------------------------------------------------------------------ layout and result dict
def test_time_major_array_in_numpy_dict_out(rng):
    g = _lif_graph()
    x = rng.normal(0.5, 1.0, size=(25, 4, 3))
    x_copy = x.copy()
    out = nb.simulate(g, x, nb.Dynamics(DT))
    assert list(out) == ["output"]
    y = out["output"]
    assert type(y) is np.ndarray and y.shape == (25, 4, 2) and y.dtype == np.float32
    assert set(np.unique(y)) == {0.0, 1.0}
    np.testing.assert_array_equal(x, x_copy)  # the caller's input is left alone
    # a dict keyed by the input's name is the same thing
    np.testing.assert_array_equal(nb.simulate(g, {"input": x}, nb.Dynamics(DT))["output"], y)
    # a nested list is accepted like an array
    np.testing.assert_array_equal(nb.simulate(g, x.tolist(), nb.Dynamics(DT))["output"], y)


def test_record_nodes_and_states(rng):
    g = _lif_graph()
    x = rng.normal(0.5, 1.0, size=(30, 2, 3))
    out = nb.simulate(g, x, nb.Dynamics(DT), record=["fc", ("lif", "v"), "lif"], dtype="float64")
    assert set(out) == {"output", "fc", "lif", ("lif", "v")}
    w, b = _p(g, "fc", "weight"), _p(g, "fc", "bias")
    np.testing.assert_allclose(out["fc"], x @ w.T + b, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(out["lif"], out["output"])
    # the recorded voltage is the state after this step's reset; rebuild each step by hand from the
    # previous one: pre = v + dt/tau (v_leak - v + r x), spike if pre > thr, then v = v_reset
    tau, r, thr = _p(g, "lif", "tau"), _p(g, "lif", "r"), _p(g, "lif", "v_threshold")
    v_prev = np.zeros((2, 2))
    for t in range(30):
        pre = v_prev + DT / tau * (0.0 - v_prev + r * out["fc"][t])
        z = (pre > thr).astype(float)
        np.testing.assert_array_equal(out["output"][t], z)
        np.testing.assert_allclose(out[("lif", "v")][t], np.where(z == 1, 0.0, pre), rtol=1e-12, atol=1e-14)
        v_prev = out[("lif", "v")][t]
    assert out["output"].sum() > 3
    # one name or one (node, var) pair on its own
    assert set(nb.simulate(g, x, nb.Dynamics(DT), record="fc")) == {"output", "fc"}
    assert set(nb.simulate(g, x, nb.Dynamics(DT), record=("lif", "v"))) == {"output", ("lif", "v")}


def test_record_all_on_a_recurrent_graph():
    g, x, dt = recurrent_case()
    out = nb.simulate(g, x, nb.Dynamics(dt), record="all", dtype="float64")
    names = [s.name for s in g.plan.steps]
    assert set(out) == set(names) | {("lif", "v"), ("li", "v"), ("delay", "buffer")}
    T, B = x.shape[:2]
    for n in names:
        assert out[n].shape == (T, B) + g.plan[n].output_shape and out[n].dtype == np.float64
    np.testing.assert_array_equal(out["input"], x)
    np.testing.assert_array_equal(out["output"], out["li"])
    np.testing.assert_array_equal(out[("li", "v")], out["li"])
    lif = out["lif"]
    # feed-forward and recurrent edges, checked by hand from the recorded values
    tol = dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["fc_in"], x @ _p(g, "fc_in", "weight").T + _p(g, "fc_in", "bias"), **tol)
    np.testing.assert_allclose(out["rec"], lif @ _p(g, "rec", "weight").T, **tol)
    np.testing.assert_allclose(out["fc_out"], lif @ _p(g, "fc_out", "weight").T + _p(g, "fc_out", "bias"), **tol)
    steps = [1, 2, 0, 3, 1]  # the delays in steps of dt
    pad = np.concatenate([np.zeros((3, B, 5)), lif])
    for j, k in enumerate(steps):
        np.testing.assert_array_equal(out["delay"][:, :, j], pad[3 - k : 3 - k + T, :, j])
    # the delay buffer holds the last 3 inputs, newest first: buffer[t][:, k] = lif[t - k]
    assert out[("delay", "buffer")].shape == (T, B, 3, 5)
    for k in range(3):
        np.testing.assert_array_equal(out[("delay", "buffer")][:, :, k], pad[3 - k : 3 - k + T])
    # the LIF's input is the sum of three edges: fc_in of this step, and rec and delay of the
    # previous step (both close a cycle through the LIF: recurrent edges, zeros at step 0)
    assert dict(g.plan["lif"].sources) == {"fc_in": False, "rec": True, "delay": True}
    tau, r, vl = _p(g, "lif", "tau"), _p(g, "lif", "r"), _p(g, "lif", "v_leak")
    thr = _p(g, "lif", "v_threshold")
    v = np.zeros((B, 5))
    rec_prev = delay_prev = np.zeros((B, 5))
    for t in range(T):
        drive = out["fc_in"][t] + rec_prev + delay_prev
        pre = v + dt / tau * (vl - v + r * drive)
        np.testing.assert_array_equal(lif[t], (pre > thr).astype(float))
        v = np.where(lif[t] == 1, 0.0, pre)
        np.testing.assert_allclose(out[("lif", "v")][t], v, **tol)
        v = out[("lif", "v")][t]
        rec_prev, delay_prev = out["rec"][t], out["delay"][t]
    assert 0 < lif.sum() < lif.size


def test_two_inputs_two_outputs(rng):
    g, nodes = _two_in_two_out(rng)
    assert g.inputs == ["a", "b"] and g.outputs == ["out1", "out2"]
    T, B = 40, 3
    # inputs constant over time (one value per batch row): the LI then has a closed form
    a = np.broadcast_to(rng.normal(size=(1, B, 3)), (T, B, 3))
    b = np.broadcast_to(rng.normal(size=(1, B, 2)), (T, B, 2))
    out = nb.simulate(g, {"b": b, "a": a}, nb.Dynamics(DT), record=["fa", "fb"], dtype="float64")
    assert set(out) == {"out1", "out2", "fa", "fb"}
    assert out["out1"].shape == (T, B, 4) and out["out2"].shape == (T, B, 2)
    np.testing.assert_array_equal(out["out2"], b * nodes["sc"].scale)
    li = nodes["li"]
    drive = a[0] @ nodes["fa"].weight.T + nodes["fa"].bias + b[0] @ nodes["fb"].weight.T  # fan-in sums
    u = li.v_leak + li.r * drive
    n = np.arange(1, T + 1)[:, None, None]
    np.testing.assert_allclose(out["out1"], u * (1 - (1 - DT / li.tau) ** n), rtol=1e-12, atol=1e-13)
    # float32 computes the same within float32 rounding (values ~1, 40 steps: 1e-5)
    out32 = nb.simulate(g, {"a": a, "b": b}, nb.Dynamics(DT))
    assert out32["out1"].dtype == np.float32 and out32["out2"].dtype == np.float32
    np.testing.assert_allclose(out32["out1"], out["out1"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64", np.float32, np.float64, np.dtype("float64"), None])
def test_result_dtypes(rng, dtype):
    g = _lif_graph()
    x = rng.normal(size=(5, 2, 3))
    out = nb.simulate(g, x, nb.Dynamics(DT), record=["fc", ("lif", "v")], dtype=dtype)
    want = np.dtype(np.float32 if dtype is None else dtype)
    assert all(v.dtype == want for v in out.values())


@pytest.mark.parametrize("x_dtype", [np.int64, np.int8, np.uint8, bool, np.float32, np.float64])
def test_numeric_input_dtypes_accepted(x_dtype):
    g = _lif_graph()
    x = (np.arange(30).reshape(5, 2, 3) % 2).astype(x_dtype)
    y = nb.simulate(g, x, nb.Dynamics(DT), record="fc", dtype="float64")["fc"]
    w, b = _p(g, "fc", "weight"), _p(g, "fc", "bias")
    np.testing.assert_allclose(y, x.astype(np.float64) @ w.T + b, rtol=1e-12, atol=1e-12)


def test_progress_bar_does_not_change_results(rng, capsys):
    g = _lif_graph()
    x = rng.normal(size=(6, 1, 3))
    a = nb.simulate(g, x, nb.Dynamics(DT))["output"]
    b = nb.simulate(g, x, nb.Dynamics(DT), progress=True)["output"]
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ errors
def _delay_graph(delay) -> nb.Graph:
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}), "d": nir.Delay(delay=np.array(delay)),
             "output": nir.Output(output_type={"output": np.array([2])})}
    return nb.Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=[("input", "d"), ("d", "output")]))


@pytest.mark.parametrize("shape", [(10, 3), (10, 1, 4), (10, 1, 3, 1), (3,), (10, 1, 1, 3)])
def test_wrong_input_shape(shape):
    with pytest.raises(InputError) as e:
        nb.simulate(_lif_graph(), np.zeros(shape), nb.Dynamics(DT))
    msg = str(e.value)
    assert f"has shape {shape}" in msg and "expected (T, B, 3)" in msg and "time-major" in msg and "Fix" in msg


@pytest.mark.parametrize("shape", [(0, 2, 3), (5, 0, 3)])
def test_empty_time_or_batch(shape):
    with pytest.raises(InputError, match="T and B must be at least 1"):
        nb.simulate(_lif_graph(), np.zeros(shape), nb.Dynamics(DT))


@pytest.mark.parametrize("x", [np.full((4, 1, 3), "a"), np.zeros((4, 1, 3), dtype=object),
                               np.zeros((4, 1, 3), dtype=complex), [[["a", "b", "c"]]]],
                         ids=["str", "object", "complex", "list-of-str"])
def test_non_numeric_input(x):
    with pytest.raises(InputError, match=r"input 'input' has dtype .*expected numbers.*Fix"):
        nb.simulate(_lif_graph(), x, nb.Dynamics(DT))


def test_ragged_list_input():
    with pytest.raises(InputError, match=r"input 'input' is not a rectangular array.*Fix"):
        nb.simulate(_lif_graph(), [[[0.0, 1.0, 2.0]], [[0.0]]], nb.Dynamics(DT))


def test_dict_keys_must_match_the_inputs(rng):
    g, _ = _two_in_two_out(rng)
    a, b = np.zeros((4, 2, 3)), np.zeros((4, 2, 2))
    with pytest.raises(InputError, match=r"keys \['a'\] but the graph's inputs are \['a', 'b'\].*Fix"):
        nb.simulate(g, {"a": a}, nb.Dynamics(DT))
    with pytest.raises(InputError, match=r"keys \['a', 'b', 'c'\].*one array per Input node"):
        nb.simulate(g, {"a": a, "b": b, "c": b}, nb.Dynamics(DT))
    with pytest.raises(InputError, match=r"keys \['inp'\] but the graph's inputs are \['input'\]"):
        nb.simulate(_lif_graph(), {"inp": a}, nb.Dynamics(DT))
    # one array for a graph with two inputs
    with pytest.raises(InputError, match=r"has 2 inputs \['a', 'b'\]; pass a dict"):
        nb.simulate(g, a, nb.Dynamics(DT))
    # inputs that disagree on T or B
    with pytest.raises(InputError, match=r"disagree on \(T, B\)"):
        nb.simulate(g, {"a": a, "b": np.zeros((5, 2, 2))}, nb.Dynamics(DT))
    with pytest.raises(InputError, match=r"input 'b' has shape \(4, 2, 3\); expected \(T, B, 2\)"):
        nb.simulate(g, {"a": a, "b": a}, nb.Dynamics(DT))


def test_delay_not_a_whole_number_of_steps():
    g = _delay_graph([2e-3, 1.5e-3])
    with pytest.raises(DynamicsError) as e:
        nb.simulate(g, np.zeros((4, 1, 2)), nb.Dynamics(1e-3))
    msg = str(e.value)
    assert "node 'd'" in msg and "field 'delay'" in msg and "not a whole number" in msg and "1.5 steps" in msg
    assert "Fix: choose a dt that divides every delay" in msg
    # a dt that divides it works, and float rounding of delay/dt (3e-3/1e-3 = 3.0000000000000004) is fine
    nb.simulate(g, np.zeros((4, 1, 2)), nb.Dynamics(5e-4))
    nb.simulate(_delay_graph([3e-3, 0.0]), np.zeros((4, 1, 2)), nb.Dynamics(1e-3))


@pytest.mark.parametrize("dt", [0.0, -1e-3])
def test_dt_must_be_positive(dt):
    with pytest.raises(DynamicsError, match=r"Dynamics\.dt must be a finite number > 0"):
        nb.simulate(_lif_graph(), np.zeros((4, 1, 3)), nb.Dynamics(dt))


def test_dynamics_missing():
    x = np.zeros((4, 1, 3))
    with pytest.raises(DynamicsError, match=r"expected a nirbridge\.Dynamics, got NoneType.*Dynamics\(dt=\.\.\.\)"):
        nb.simulate(_lif_graph(), x, None)
    with pytest.raises(DynamicsError, match=r"expected a nirbridge\.Dynamics, got float"):
        nb.simulate(_lif_graph(), x, 1e-3)  # a bare dt is not enough: the method etc. must be explicit
    with pytest.raises(DynamicsError, match=r"dt must be a number of seconds, got None"):
        nb.simulate(_lif_graph(), x, nb.Dynamics(dt=None))
    with pytest.raises(TypeError, match="dynamics"):
        nb.simulate(_lif_graph(), x)


@pytest.mark.parametrize("kw,field", [({"method": "rk45"}, "method"), ({"reset": "hard"}, "reset")])
def test_unknown_method_or_reset(kw, field):
    with pytest.raises(DynamicsError, match=rf"Dynamics\.{field}=.* is not one of"):
        nb.simulate(_lif_graph(), np.zeros((4, 1, 3)), nb.Dynamics(DT, **kw))


def test_record_unknown_node_or_state():
    g, x = _lif_graph(), np.zeros((4, 1, 3))
    with pytest.raises(InputError, match=r"cannot record 'nope': no such node. Fix: nodes are \[.*'lif'.*\]"):
        nb.simulate(g, x, nb.Dynamics(DT), record=["nope"])
    with pytest.raises(InputError, match=r"node 'lif' \(LIF\) has no state variable 'i'; it has \['v'\]"):
        nb.simulate(g, x, nb.Dynamics(DT), record=[("lif", "i")])
    with pytest.raises(InputError, match=r"node 'fc' \(Affine\) has no state variable 'v'; it has \[\]"):
        nb.simulate(g, x, nb.Dynamics(DT), record=[("fc", "v")])
    with pytest.raises(InputError, match=r"record entry \('nope', 'v'\) is not \(node, state variable\)"):
        nb.simulate(g, x, nb.Dynamics(DT), record=[("nope", "v")])
    with pytest.raises(InputError, match=r"is not \(node, state variable\)"):
        nb.simulate(g, x, nb.Dynamics(DT), record=[("lif", "v", "extra")])
    with pytest.raises(InputError, match=r"record entry \['lif', 'v'\] is neither a node name nor .*tuple. Fix"):
        nb.simulate(g, x, nb.Dynamics(DT), record=[["lif", "v"]])
    with pytest.raises(InputError, match=r"record=5 is not a list of nodes and states. Fix"):
        nb.simulate(g, x, nb.Dynamics(DT), record=5)
    # a Delay of zero steps keeps no buffer
    with pytest.raises(InputError, match="no state variable 'buffer'"):
        nb.simulate(_delay_graph([0.0, 0.0]), np.zeros((4, 1, 2)), nb.Dynamics(DT), record=[("d", "buffer")])


@pytest.mark.parametrize("dtype", ["float16", np.float16, "int32", "complex64", "banana", object])
def test_unsupported_dtype(dtype):
    with pytest.raises(InputError, match=r"dtype .* (is not supported|is not a dtype). Fix: use float32"):
        nb.simulate(_lif_graph(), np.zeros((4, 1, 3)), nb.Dynamics(DT), dtype=dtype)


def test_not_a_graph_or_unknown_backend():
    with pytest.raises(GraphError, match=r"takes a nirbridge\.Graph.*nb\.load"):
        nb.simulate([_lif_graph()], np.zeros((4, 1, 3)), nb.Dynamics(DT))
    # a nir.NIRGraph (and a path) are read as Graphs
    x = np.ones((4, 1, 3))
    want = nb.simulate(_lif_graph(), x, nb.Dynamics(DT))["output"]
    np.testing.assert_array_equal(nb.simulate(_lif_graph().to_nir(), x, nb.Dynamics(DT))["output"], want)
    with pytest.raises(NirBridgeError, match=r"unknown backend 'numpy'.*reference"):
        nb.simulate(_lif_graph(), np.zeros((4, 1, 3)), nb.Dynamics(DT), backend="numpy")


def test_errors_are_also_value_errors():
    # callers can catch the builtin too
    with pytest.raises(ValueError):
        nb.simulate(_lif_graph(), np.zeros((4, 3)), nb.Dynamics(DT))
    with pytest.raises(ValueError):
        nb.Dynamics(dt=-1.0)


@pytest.mark.parametrize("backend", ["reference", "jax", "torch"])
def test_spike_and_integer_inputs_give_the_float_result(backend):
    """simulate passes bool, int and float16 inputs on as they are (no eager float64 copy); each
    backend casts them to its compute dtype and gives what the same values in float32 give."""
    from nirbridge import examples
    from nirbridge.testing import random_spikes

    g = nb.load(examples.path("braille_noDelay_bias_zero"))
    dyn = nb.Dynamics(dt=1e-4)
    x = random_spikes(g, T=20, B=2, p=0.3, seed=0).astype(np.float32)
    want = nb.simulate(g, x, dyn, backend=backend)["output"]
    assert want.sum() > 0
    for dt in (bool, np.int8, np.uint8, np.float16):
        np.testing.assert_array_equal(nb.simulate(g, x.astype(dt), dyn, backend=backend)["output"], want)
