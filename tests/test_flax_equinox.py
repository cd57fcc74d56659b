"""Flax and Equinox shells: the same numbers as to_jax, and Graph -> module -> Graph bit for bit."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cases import NODE_TYPES, node_case, recurrent_case
from flax import nnx

import nirbridge as nb
import nirbridge.examples as examples
from nirbridge.errors import InputError

CONVERTERS = {
    "jax": (lambda g, dyn, **kw: nb.to_jax(g, dyn, **kw), lambda m: nb.from_jax(m, m.params)),
    "flax": (nb.to_flax, nb.from_flax),
    "equinox": (nb.to_equinox, nb.from_equinox),
}


def _graphs():
    for nt in NODE_TYPES:
        yield pytest.param(node_case(nt)[0], id=nt)
    yield pytest.param(recurrent_case()[0], id="recurrent")
    for name in examples.names():
        yield pytest.param(nb.load(examples.path(name)), id=name)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("graph", list(_graphs()))
def test_round_trip_is_bit_exact(graph, dtype):
    # the node cases hold float64 params, the paper graphs float32 weights beside float64 neuron
    # params: a float32 module must give every original array back, dtype included
    for name, (to, back) in CONVERTERS.items():
        module = to(graph, nb.Dynamics(dt=1e-4), dtype=dtype)
        assert back(module).equals(graph), name


@pytest.fixture(scope="module")
def braille():
    g = nb.load(examples.path("braille_noDelay_bias_zero"))
    x = (np.random.default_rng(5).random((30, 4, 12)) < 0.4).astype(np.float32)
    return g, nb.Dynamics(dt=1e-4), x


def test_modules_give_the_same_outputs_as_to_jax(braille):
    g, dyn, x = braille
    model = nb.to_jax(g, dyn)
    want, want_state = model.run(model.params, x, record="all")
    assert want["output"].any()
    for module in (nb.to_flax(g, dyn), nb.to_equinox(g, dyn)):
        got, state = module.run(x, record="all")  # the same program on the same params
        assert list(got) == list(want)
        for k in want:
            np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]), err_msg=f"{type(module)} {k}")
        jax.tree.map(np.testing.assert_array_equal, state, want_state)
        np.testing.assert_array_equal(np.asarray(module(x)["output"]), np.asarray(want["output"]))


def test_recurrent_case_flax_and_equinox_match_reference():
    g, x, dt = recurrent_case(T=30)
    dyn = nb.Dynamics(dt=dt)
    ref = nb.simulate(g, x, dyn, dtype="float64")["output"]
    for module in (nb.to_flax(g, dyn, dtype="float64"), nb.to_equinox(g, dyn, dtype="float64")):
        # float64 LI readout: the reference's einsum and XLA's matmul differ by a few roundings
        np.testing.assert_allclose(np.asarray(module(x)["output"]), ref, rtol=0, atol=1e-10)


def test_flax_params_are_nnx_params_and_changes_are_written_back(braille):
    g, dyn, _ = braille
    module = nb.to_flax(g, dyn)
    state = nnx.state(module, nnx.Param)
    n_params = sum(len(fields) for fields in module.params.values())
    assert len(jax.tree.leaves(state)) == n_params == 2 * 3 + 7 * 2  # 3 Affine (w, b), 2 CubaLIF (7 fields)
    module.params["lif2"]["v_threshold"][...] = module.params["lif2"]["v_threshold"][...] * 2
    back = nb.from_flax(module)
    thr = back.node("lif2").params["v_threshold"]
    assert thr.dtype == np.float64  # stored in the original dtype
    np.testing.assert_array_equal(thr, (g.node("lif2").params["v_threshold"].astype(np.float32) * 2).astype(np.float64))
    assert back.node("fc1").equals(g.node("fc1")) and back.node("lif1.lif").equals(g.node("lif1.lif"))


def test_equinox_leaves_are_the_params_and_changes_are_written_back(braille):
    g, dyn, _ = braille
    module = nb.to_equinox(g, dyn)
    leaves = jax.tree.leaves(eqx.filter(module, eqx.is_array))
    assert len(leaves) == 20 and all(a.dtype == jnp.float32 for a in leaves)
    module = eqx.tree_at(lambda m: m.params["fc2"]["bias"], module, module.params["fc2"]["bias"] + 0.5)
    back = nb.from_equinox(module)
    np.testing.assert_array_equal(back.node("fc2").params["bias"], g.node("fc2").params["bias"] + np.float32(0.5))
    assert back.node("fc2").params["bias"].dtype == np.float32
    assert back.node("lif2").equals(g.node("lif2"))


def test_from_module_rejects_other_objects(braille):
    g, dyn, _ = braille
    with pytest.raises(InputError, match="to_flax"):
        nb.from_flax(nb.to_equinox(g, dyn))
    with pytest.raises(InputError, match="to_equinox"):
        nb.from_equinox(nb.to_flax(g, dyn))
    with pytest.raises(InputError, match="to_jax"):
        nb.from_jax(nb.to_flax(g, dyn))
