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
    wrt = nnx.All(nnx.Param, nnx.Any(nnx.PathContains("weight"), nnx.PathContains("bias")))
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
