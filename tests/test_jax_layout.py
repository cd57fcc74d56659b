"""The JAX backend's channels-last regions (``JaxModel.channels_last``) against the NumPy reference.

``run`` keeps the images of a convolutional region as (B, H, W, C) inside the scan; every public
value must still be NIR's (C, H, W) and equal the reference's. Tolerances as in ``test_jax.py``
(``assert_matches``: float32 within ``1e-5 * max(1, max |reference|)``, float64 within 1e-10,
spikes identical): the channels-last convolution adds the same products as the reference's
einsum in another order, a few float32 roundings apart.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import nir
import numpy as np
import pytest
from test_jax import assert_matches

import nirbridge as nb
import nirbridge.examples as examples
import nirbridge.presets
from nirbridge.backends.jax import channels_last_nodes
from nirbridge.errors import InputError

DT = 1e-3
DTYPES = ("float32", "float64")


def _u(rng, lo, hi, shape):
    return rng.uniform(lo, hi, size=shape)


def _lif(rng, shape):
    return nir.LIF(tau=_u(rng, 5e-3, 2e-2, shape), r=_u(rng, 1, 2, shape), v_leak=_u(rng, -0.1, 0.1, shape),
                   v_threshold=_u(rng, 0.3, 0.8, shape), v_reset=_u(rng, -0.1, 0.1, shape))


def _cubalif(rng, shape):
    return nir.CubaLIF(tau_syn=_u(rng, 3e-3, 1e-2, shape), tau_mem=_u(rng, 5e-3, 2e-2, shape),
                       r=_u(rng, 1, 3, shape), v_leak=_u(rng, -0.1, 0.1, shape),
                       v_threshold=_u(rng, 0.1, 0.3, shape), v_reset=_u(rng, -0.1, 0.1, shape),
                       w_in=_u(rng, 1, 3, shape))


def _graph(nodes, edges):
    return nb.Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))


def flatten_end_case(rng):
    """Conv2d (groups, stride, padding, dilation) -> IF -> AvgPool2d (padded) -> Conv2d -> CubaLIF ->
    Scale -> Threshold -> SumPool2d -> Flatten -> Affine -> LIF: the region ends at the Flatten."""
    nodes = {
        "input": nir.Input(input_type={"input": np.array([4, 10, 10])}),
        "conv1": nir.Conv2d(input_shape=(10, 10), weight=_u(rng, -0.5, 1, (6, 2, 3, 3)), stride=(2, 1),
                            padding=(1, 0), dilation=(1, 2), groups=2, bias=_u(rng, -0.2, 0.2, (6,))),
        "if1": nir.IF(r=_u(rng, 100, 300, (6, 5, 6)), v_threshold=_u(rng, 0.5, 1.5, (6, 5, 6)),
                      v_reset=_u(rng, -0.1, 0.1, (6, 5, 6))),
        "avg": nir.AvgPool2d(kernel_size=np.array([3, 3]), stride=np.array([2, 2]), padding=np.array([1, 1])),
        "conv2": nir.Conv2d(input_shape=(3, 3), weight=_u(rng, -0.5, 1.5, (5, 6, 2, 2)), stride=1, padding=1,
                            dilation=1, groups=1, bias=_u(rng, -0.1, 0.3, (5,))),
        "cuba": _cubalif(rng, (5, 4, 4)),
        "scale": nir.Scale(scale=_u(rng, -2, 2, (5, 4, 4))),
        "thr": nir.Threshold(threshold=_u(rng, -0.5, 0.5, (5, 4, 4))),
        "sum": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([5, 2, 2])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=_u(rng, -1, 1, (3, 20)), bias=_u(rng, 0, 0.5, (3,))),
        "lif": _lif(rng, (3,)),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    chain = list(nodes)
    g = _graph(nodes, list(zip(chain, chain[1:])))
    return g, {"input", "conv1", "if1", "avg", "conv2", "cuba", "scale", "thr", "sum"}, (4, 10, 10)


def output_end_case(rng):
    """Two convolutions summed into one LIF (fan-in inside the region), then I and Conv2d -> CubaLI
    -> LI: two graph outputs, both (C, H, W), where the region ends."""
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 8, 8])}),
        "conv_a": nir.Conv2d(input_shape=(8, 8), weight=_u(rng, -0.5, 1, (4, 2, 3, 3)), stride=1, padding=1,
                             dilation=1, groups=1, bias=_u(rng, -0.1, 0.1, (4,))),
        "conv_b": nir.Conv2d(input_shape=(8, 8), weight=_u(rng, -0.5, 1, (4, 2, 1, 1)), stride=1, padding=0,
                             dilation=1, groups=1, bias=_u(rng, -0.1, 0.1, (4,))),
        "lif": _lif(rng, (4, 8, 8)),
        "integ": nir.I(r=_u(rng, 0.5, 2, (4, 8, 8))),
        "conv_c": nir.Conv2d(input_shape=(8, 8), weight=_u(rng, -1, 1, (3, 4, 3, 3)), stride=1, padding=1,
                             dilation=1, groups=1, bias=_u(rng, -0.1, 0.1, (3,))),
        "cubali": nir.CubaLI(tau_syn=_u(rng, 3e-3, 1e-2, (3, 8, 8)), tau_mem=_u(rng, 5e-3, 2e-2, (3, 8, 8)),
                             r=_u(rng, 0.5, 2, (3, 8, 8)), v_leak=_u(rng, -0.1, 0.1, (3, 8, 8)),
                             w_in=_u(rng, 0.5, 2, (3, 8, 8))),
        "li": nir.LI(tau=_u(rng, 5e-3, 2e-2, (3, 8, 8)), r=_u(rng, 0.5, 2, (3, 8, 8)),
                     v_leak=_u(rng, -0.1, 0.1, (3, 8, 8))),
        "out_i": nir.Output(output_type={"output": np.array([4, 8, 8])}),
        "out_li": nir.Output(output_type={"output": np.array([3, 8, 8])}),
    }
    edges = [("input", "conv_a"), ("input", "conv_b"), ("conv_a", "lif"), ("conv_b", "lif"), ("lif", "integ"),
             ("integ", "out_i"), ("lif", "conv_c"), ("conv_c", "cubali"), ("cubali", "li"), ("li", "out_li")]
    return _graph(nodes, edges), set(nodes), (2, 8, 8)


def nested_case(rng):
    """A nested graph (its Input/Output are identities in the plan) holding Conv2d -> LIF, then a
    SumPool2d: the region runs through the identities."""
    inner = nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([3, 6, 6])}),
        "conv": nir.Conv2d(input_shape=(6, 6), weight=_u(rng, -0.5, 1, (4, 3, 3, 3)), stride=1, padding=1,
                           dilation=1, groups=1, bias=_u(rng, -0.1, 0.1, (4,))),
        "lif": _lif(rng, (4, 6, 6)),
        "output": nir.Output(output_type={"output": np.array([4, 6, 6])}),
    }, edges=[("input", "conv"), ("conv", "lif"), ("lif", "output")], type_check=False)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([3, 6, 6])}),
        "block": inner,
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "output": nir.Output(output_type={"output": np.array([4, 3, 3])}),
    }
    g = _graph(nodes, [("input", "block"), ("block", "pool"), ("pool", "output")])
    return g, {s.name for s in g.plan.steps}, (3, 6, 6)


CASES = {"flatten_end": flatten_end_case, "output_end": output_end_case, "nested": nested_case}


def _case(name, T=20, B=2):
    rng = np.random.default_rng(11)
    g, region, shape = CASES[name](rng)
    x = (rng.random((T, B) + shape) < 0.4).astype(np.float64)
    return g, region, x


def _dynamics():
    yield pytest.param(nb.Dynamics(dt=DT), id="default")
    yield pytest.param(nb.Dynamics(dt=DT, method="exact", reset="subtract", threshold=">=",
                                   synapse="current_first"), id="exact-subtract")
    for p in nb.presets.names():  # delayed reset, pre-reset voltage, spike counts, v_init, output delay, ...
        yield pytest.param(nb.Dynamics.preset(p, dt=DT), id=p)


@pytest.mark.parametrize("dyn", list(_dynamics()))
@pytest.mark.parametrize("name", list(CASES))
def test_conv_graphs_match_reference(name, dyn):
    g, region, x = _case(name)
    model = nb.to_jax(g, dyn)
    if dyn.output_delay:  # spyx: the spikes' outgoing edges carry the previous step: the graph falls back
        assert model.channels_last == frozenset() and "previous step" in model.layout_reason
    else:
        assert model.channels_last == region, model.layout_reason
    ref32 = nb.simulate(g, x, dyn, record="all")
    spiking = [k for k in ref32 if isinstance(k, str) and g.node(k).spec.spiking]
    assert all(ref32[k].any() for k in spiking), "every spiking node must spike on this input"
    for dtype in DTYPES:
        m = nb.to_jax(g, dyn, dtype=dtype)
        got, _ = m.run(m.params, x, record="all")  # every node and state, (T, B, C, H, W) where images
        assert_matches(g, got, nb.simulate(g, x, dyn, record="all", dtype=dtype), dtype)


@pytest.mark.parametrize("hoist", [True, False, "auto"])
def test_cnn_paper_graph_channels_last(hoist):
    g = nb.load(examples.path("cnn_sinabs"))
    dyn = nb.Dynamics(dt=1.0)
    x = (np.random.default_rng(7).random((12, 2, 2, 34, 34)) < 0.3).astype(np.float64)
    model = nb.to_jax(g, dyn, hoist=hoist, dtype="float64")
    # the whole convolutional part; the Flatten and what follows are 1-D
    assert model.channels_last == {"input", "0", "1", "2", "3", "4", "5", "6", "7"}
    assert model.hoisted(2) == ({"0"} if hoist is True else frozenset())  # a hoisted Conv2d runs channels-last
    ref = nb.simulate(g, x, dyn, record="all", dtype="float64")
    assert ref["output"].any()
    got, state = model.run(model.params, x, record="all")
    assert_matches(g, got, ref, "float64")
    for node, vars_ in state["nodes"].items():  # the final state in NIR's layout: the last recorded values
        for var, a in vars_.items():
            np.testing.assert_array_equal(np.asarray(a), ref[(node, var)][-1])


def test_layout_nchw_gives_the_same_numbers():
    g, region, x = _case("flatten_end")
    dyn = nb.Dynamics(dt=DT)
    a = nb.to_jax(g, dyn, dtype="float64")
    b = nb.to_jax(g, dyn, dtype="float64", layout="NCHW")
    assert a.channels_last == region and b.channels_last == frozenset()
    ra, sa = a.run(a.params, x, record="all")
    rb, sb = b.run(b.params, x, record="all")
    for k in rb:  # the same float64 operations, convolutions in another layout
        np.testing.assert_allclose(np.asarray(ra[k]), np.asarray(rb[k]), rtol=0, atol=1e-12, err_msg=str(k))
    jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=0, atol=1e-12), sa, sb)
    with pytest.raises(InputError, match="layout"):
        nb.to_jax(g, dyn, layout="NHWC")


def test_state_round_trips_in_nir_layout():
    g, region, x = _case("output_end", T=30)
    dyn = nb.Dynamics(dt=DT)
    model = nb.to_jax(g, dyn, dtype="float64")
    assert model.channels_last == region
    whole, final = model.run(model.params, x, record=[("lif", "v")])
    first, state = model.run(model.params, x[:12])
    # the state run() returns has init_state's layout: (B, C, H, W) per image
    shapes = jax.tree.map(jnp.shape, model.init_state(x.shape[1]))
    assert jax.tree.map(jnp.shape, state) == shapes == jax.tree.map(jnp.shape, final)
    second, final2 = model.run(model.params, x[12:], state=state)
    for k in ("out_i", "out_li"):
        np.testing.assert_allclose(np.concatenate([first[k], second[k]]), np.asarray(whole[k]), rtol=0, atol=1e-12)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=0, atol=1e-12),
                 final, final2)
    np.testing.assert_array_equal(np.asarray(final["nodes"]["lif"]["v"]), np.asarray(whole[("lif", "v")][-1]))
    # step() (the plain NCHW program) continues from a run() state, and run() from a step() state
    s = state
    for t in range(12, 16):
        s, y = model.step(model.params, s, x[t])
        np.testing.assert_allclose(np.asarray(y["out_li"]), np.asarray(whole["out_li"][t]), rtol=0, atol=1e-12)
    rest, _ = model.run(model.params, x[16:], state=s)
    np.testing.assert_allclose(np.asarray(rest["out_li"]), np.asarray(whole["out_li"][16:]), rtol=0, atol=1e-12)
    # and both agree with the reference
    ref = nb.simulate(g, x, dyn, record=[("lif", "v")], dtype="float64")
    assert_matches(g, whole, ref, "float64")


def test_gradients_through_the_layout_pass():
    g, region, x = _case("flatten_end", T=12)
    dyn = nb.Dynamics(dt=DT)
    models = [nb.to_jax(g, dyn, dtype="float64", layout=lay) for lay in ("auto", "NCHW")]
    assert models[0].channels_last == region

    def loss(m):  # a voltage inside the region and one after it: gradients flow into every parameter
        return lambda p: (jnp.sum(m.run(p, x, record=[("cuba", "v")])[0][("cuba", "v")] ** 2)
                          + jnp.sum(m.run(p, x, record=[("lif", "v")])[0][("lif", "v")]))

    ga, gb = (jax.grad(loss(m))(m.params) for m in models)
    for node in ("conv1", "conv2", "cuba", "scale", "fc"):
        for f in ga[node]:
            a, b = np.asarray(ga[node][f]), np.asarray(gb[node][f])
            assert a.shape == b.shape == np.shape(models[0].params[node][f])  # gradients in NIR's layout
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * max(1.0, np.abs(b).max()), err_msg=f"{node}.{f}")
    assert np.abs(np.asarray(ga["conv1"]["weight"])).max() > 0


def _fallback_graphs():
    rng = np.random.default_rng(5)
    img = np.array([2, 6, 6])

    def conv(cin, cout):
        return nir.Conv2d(input_shape=(6, 6), weight=_u(rng, -0.5, 1, (cout, cin, 3, 3)), stride=1, padding=1,
                          dilation=1, groups=1, bias=_u(rng, -0.1, 0.1, (cout,)))

    out = nir.Output(output_type={"output": img})
    # a recurrent edge into the region: lif -> rec -> lif
    rec = {"input": nir.Input(input_type={"input": img}), "conv": conv(2, 2), "lif": _lif(rng, (2, 6, 6)),
           "rec": conv(2, 2), "output": out}
    yield "recurrent", rec, [("input", "conv"), ("conv", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")]
    # a Delay between two convolutions: the second region would be fed from outside it
    dly = {"input": nir.Input(input_type={"input": img}), "conv": conv(2, 2), "lif": _lif(rng, (2, 6, 6)),
           "delay": nir.Delay(delay=np.full((2, 6, 6), 2 * DT)), "conv2": conv(2, 2), "output": out}
    yield "delay", dly, [("input", "conv"), ("conv", "lif"), ("lif", "delay"), ("delay", "conv2"),
                         ("conv2", "output")]
    # fan-in mixing: a Delay sums a region's spikes and a delayed copy of the input taken outside it
    mix = {"input": nir.Input(input_type={"input": img}), "conv": conv(2, 2), "lif": _lif(rng, (2, 6, 6)),
           "d1": nir.Delay(delay=np.full((2, 6, 6), DT)), "d2": nir.Delay(delay=np.full((2, 6, 6), DT)),
           "output": out}
    yield "mixing", mix, [("input", "conv"), ("conv", "lif"), ("lif", "d2"), ("input", "d1"), ("d1", "d2"),
                          ("d2", "output")]


@pytest.mark.parametrize("name,nodes,edges", list(_fallback_graphs()), ids=lambda v: v if isinstance(v, str) else "")
def test_unusual_graphs_fall_back_to_nchw(name, nodes, edges):
    g = _graph(nodes, edges)
    dyn = nb.Dynamics(dt=DT)
    model = nb.to_jax(g, dyn, dtype="float64")
    assert model.channels_last == frozenset() and model.layout_reason.startswith("NCHW"), model.layout_reason
    x = (np.random.default_rng(2).random((15, 2, 2, 6, 6)) < 0.5).astype(np.float64)
    ref = nb.simulate(g, x, dyn, record="all", dtype="float64")
    assert ref["lif"].any()
    assert_matches(g, model.run(model.params, x, record="all")[0], ref, "float64")


def test_a_region_may_end_in_a_delay():
    """A Delay that only reads from a region is where the region ends (its input moves back to NCHW)."""
    rng = np.random.default_rng(3)
    nodes = {"input": nir.Input(input_type={"input": np.array([2, 5, 5])}),
             "conv": nir.Conv2d(input_shape=(5, 5), weight=_u(rng, -0.5, 1, (3, 2, 3, 3)), stride=1, padding=1,
                                dilation=1, groups=1, bias=_u(rng, -0.1, 0.1, (3,))),
             "lif": _lif(rng, (3, 5, 5)),
             "delay": nir.Delay(delay=rng.integers(0, 3, (3, 5, 5)) * DT),
             "output": nir.Output(output_type={"output": np.array([3, 5, 5])})}
    g = _graph(nodes, [("input", "conv"), ("conv", "lif"), ("lif", "delay"), ("delay", "output")])
    x = (rng.random((15, 2, 2, 5, 5)) < 0.5).astype(np.float64)
    dyn = nb.Dynamics(dt=DT)
    model = nb.to_jax(g, dyn, dtype="float64")
    assert model.channels_last == {"input", "conv", "lif"}
    ref = nb.simulate(g, x, dyn, record="all", dtype="float64")
    assert ref["output"].any()
    assert_matches(g, model.run(model.params, x, record="all")[0], ref, "float64")


def test_no_conv_no_channels_last():
    for name, dt in (("braille_noDelay_bias_zero", 1e-4), ("lif_norse", 1e-4)):
        prog = nb.to_jax(nb.load(examples.path(name)), nb.Dynamics(dt=dt)).program
        assert channels_last_nodes(prog)[0] == frozenset()
    pool = _graph({"input": nir.Input(input_type={"input": np.array([2, 4, 4])}),
                   "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                         padding=np.array([0, 0])),
                   "output": nir.Output(output_type={"output": np.array([2, 2, 2])})},
                  [("input", "pool"), ("pool", "output")])
    last, why = channels_last_nodes(nb.to_jax(pool, nb.Dynamics(dt=DT)).program)
    assert last == frozenset() and "Conv2d" in why
