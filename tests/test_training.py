"""A converted NIR graph trains: gradients through the surrogate spikes, a few Adam steps lower a loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import nirbridge as nb
import nirbridge.examples as examples

T, B, CLASSES = 60, 8, 7


@pytest.fixture(scope="module")
def braille():
    rng = np.random.default_rng(11)
    g = nb.load(examples.path("braille_noDelay_bias_zero"))
    x = jnp.asarray((rng.random((T, B, 12)) < 0.3).astype(np.float32))
    labels = jnp.asarray(rng.integers(0, CLASSES, size=B))
    return g, nb.Dynamics(dt=1e-4), x, labels


RECORD = [("lif2", "v")]


def cross_entropy(out, labels):
    """Cross-entropy of the readout's mean membrane (lif2 v, recorded) against the labels."""
    return optax.softmax_cross_entropy_with_integer_labels(out[("lif2", "v")].mean(axis=0), labels).mean()


def test_gradients_are_finite_and_flow_through_the_spikes(braille):
    g, dyn, x, labels = braille
    model = nb.to_jax(g, dyn)
    grads = jax.jit(jax.grad(lambda p: cross_entropy(model.run(p, x, record=RECORD)[0], labels)))(model.params)
    for node, fields in grads.items():
        for f, a in fields.items():
            assert np.all(np.isfinite(np.asarray(a))), (node, f)
    # fc1 and the recurrent weights reach the loss only through lif1's spikes: a zero gradient here
    # would mean the surrogate derivative is not used
    for node in ("fc1", "lif1.w_rec", "fc2"):
        assert float(jnp.abs(grads[node]["weight"]).max()) > 0, node
    assert float(jnp.abs(grads["lif1.lif"]["v_threshold"]).max()) > 0


def test_adam_steps_lower_the_loss_and_write_back(braille):
    g, dyn, x, labels = braille
    module = nb.to_flax(g, dyn)
    # weights and biases only: the time constants are seconds (2e-4 here), far below Adam's step size
    wrt = nb.backends.flax.Weight
    optimizer = nnx.Optimizer(module, optax.adam(1e-2), wrt=wrt)
    target = jax.nn.one_hot(labels, CLASSES, dtype=jnp.float32) * 20.0  # 20 spikes for the label, 0 else

    def spike_count_mse(m):
        return jnp.mean((m(x)["output"].sum(axis=0) - target) ** 2)

    @nnx.jit
    def train_step(module, optimizer):
        loss, grads = nnx.value_and_grad(spike_count_mse, argnums=nnx.DiffState(0, wrt))(module)
        # optax 0.2.8's bias correction raises a Python float to an int32 step count, which the
        # suite's strict dtype promotion rejects; the model itself runs strict above
        with jax.numpy_dtype_promotion("standard"):
            optimizer.update(module, grads)
        return loss

    losses = [float(train_step(module, optimizer)) for _ in range(8)]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses
    trained = nb.from_flax(module)
    w = trained.node("fc2").params["weight"]
    assert w.dtype == np.float32 and not np.array_equal(w, g.node("fc2").params["weight"])
    assert trained.node("lif2").equals(g.node("lif2"))  # not trained: the original float64 arrays
    # the written-back graph runs to the trained module's numbers (same params, reference backend)
    ref = nb.simulate(trained, np.asarray(x), dyn)["output"]
    np.testing.assert_array_equal(np.asarray(module(x)["output"]), ref)


# ------------------------------------------------------------------ which parameters train
def test_kinds_and_masks_say_which_parameters_are_weights(braille):
    g, dyn, _, _ = braille
    model = nb.to_jax(g, dyn)
    assert model.kinds["fc1"] == {"weight": "weight", "bias": "weight"}
    assert model.kinds["lif1.lif"]["tau_mem"] == "time_constant" and model.kinds["lif1.lif"]["r"] == "gain"
    mask = model.mask()
    assert jax.tree.structure(mask) == jax.tree.structure(model.params)
    assert mask["fc1"]["weight"] and not any(mask["lif1.lif"].values())
    assert model.mask(("weight", "threshold"))["lif2"]["v_threshold"]
    with pytest.raises(nb.errors.InputError, match="kinds"):
        model.mask("weights")


def test_raw_time_constants_go_negative_under_adam_on_everything(braille):
    """The failure the log-space shells prevent: Adam on every raw parameter (lr 1e-3) moves a
    time constant of 1e-4 s by ~1e-3 per step, below 0 within a few steps."""
    g, dyn, x, labels = braille
    model = nb.to_jax(g, dyn)
    params, opt = model.params, optax.adam(1e-3)
    state = opt.init(params)
    loss = jax.jit(jax.value_and_grad(lambda p: cross_entropy(model.run(p, x, record=RECORD)[0], labels)))
    for _ in range(2):
        _, grads = loss(params)
        with jax.numpy_dtype_promotion("standard"):  # optax's bias correction (see above)
            updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    tau = np.asarray(params["lif2"]["tau_mem"])
    assert not np.all(np.isfinite(tau) & (tau > 0)), tau
    with pytest.raises(nb.errors.ParameterError, match="time constant|non-finite"):
        nb.from_jax(model, params)


def test_flax_trains_every_param_with_time_constants_kept_positive(braille):
    g, dyn, x, labels = braille
    module = nb.to_flax(g, dyn)
    assert isinstance(module.params["lif2"]["tau_mem"], nb.backends.flax.TimeConstant)
    assert isinstance(module.params["fc1"]["weight"], nb.backends.flax.Weight)
    opt = nnx.Optimizer(module, optax.adam(1e-3), wrt=nnx.Param)  # nnx's default: every parameter

    @nnx.jit
    def step(module, opt):
        loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m.run(x, record=RECORD)[0], labels))(module)
        with jax.numpy_dtype_promotion("standard"):  # optax's bias correction (see above)
            opt.update(module, grads)
        return loss

    losses = [float(step(module, opt)) for _ in range(10)]
    assert losses[-1] < losses[0]
    taus = module.param_values()["lif2"]["tau_mem"]
    assert float(taus.min()) > 0 and not np.allclose(np.asarray(taus), g.node("lif2").params["tau_mem"])
    back = nb.from_flax(module)  # a valid graph: every time constant > 0
    np.testing.assert_allclose(back.node("lif2").params["tau_mem"], np.asarray(taus), rtol=1e-6)
    # the written-back graph runs to the same numbers in the reference
    out = nb.simulate(back, np.asarray(x), dyn, record=RECORD)[("lif2", "v")]
    np.testing.assert_allclose(out, np.asarray(module.run(x, record=RECORD)[0][("lif2", "v")]), atol=1e-4)


def test_flax_weights_only_leaves_the_rest_bit_exact(braille):
    g, dyn, x, labels = braille
    module = nb.to_flax(g, dyn)
    W = nb.backends.flax.Weight
    opt = nnx.Optimizer(module, optax.adam(2e-3), wrt=W)

    @nnx.jit
    def step(module, opt):
        diff = nnx.DiffState(0, W)
        loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m.run(x, record=RECORD)[0], labels),
                                         argnums=diff)(module)
        with jax.numpy_dtype_promotion("standard"):  # optax's bias correction (see above)
            opt.update(module, grads)
        return loss

    for _ in range(3):
        step(module, opt)
    back = nb.from_flax(module)
    for name in ("lif1.lif", "lif2"):
        assert back.node(name).equals(g.node(name))  # neuron parameters untouched, bit for bit
    assert not back.node("fc1").equals(g.node("fc1"))


def test_equinox_filter_spec_and_log_space(braille):
    import equinox as eqx

    g, dyn, x, labels = braille
    module = nb.to_equinox(g, dyn)
    spec = module.filter_spec("weight")
    trainable, static = eqx.partition(module, spec)
    assert len(jax.tree.leaves(trainable)) == 6  # 3 Affine nodes x (weight, bias)
    opt = optax.adam(1e-3)
    # every inexact array trains (equinox's usual filter): time constants are in log space
    params, rest = eqx.partition(module, eqx.is_inexact_array)
    state = opt.init(params)

    @eqx.filter_jit
    def step(params, state):
        loss, grads = eqx.filter_value_and_grad(
            lambda p: cross_entropy(eqx.combine(p, rest).run(x, record=RECORD)[0], labels))(params)
        with jax.numpy_dtype_promotion("standard"):  # optax's bias correction (see above)
            updates, state = opt.update(grads, state, params)
        return eqx.apply_updates(params, updates), state, loss

    for _ in range(5):
        params, state, _ = step(params, state)
    trained = eqx.combine(params, rest)
    assert float(trained.param_values()["lif2"]["tau_mem"].min()) > 0
    nb.from_equinox(trained)  # valid


def test_torch_parameters_of_kind_and_a_clear_error_for_a_negative_time_constant(braille):
    torch = pytest.importorskip("torch")
    g, dyn, x, labels = braille
    module = nb.to_torch(g, dyn)
    names = [n for n, _ in module.named_parameters_of_kind()]
    assert names == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "lif1.w_rec.weight", "lif1.w_rec.bias"]
    xt = torch.from_numpy(np.array(x))
    module(xt)  # fine
    with torch.no_grad():
        module.get_parameter("lif2.tau_mem")[0] = -1e-4  # what an optimizer step can do
    with pytest.raises(nb.errors.ParameterError, match="'lif2'.*'tau_mem'.*-0.0001"):
        module(xt)
    with torch.no_grad():  # no check without autograd (inference only: nothing trains)
        module(xt)
