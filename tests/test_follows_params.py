"""Values that depend on parameters follow the parameters: after a parameter is edited (or trained)
in a module, the module, the NumPy reference on the written-back graph and ``compare()`` on that
graph give the same numbers, under every library preset; and JAX gradients with respect to the
parameters that set initial values (v_leak with ``v_init="v_leak"``, v_reset with
``v_init="v_reset"``, the bias of a recurrent Affine with ``recurrent_start="rest"``) match finite
differences.

The graph: input -> Affine -> LIF <-> (recurrent Affine with a bias) -> LI -> output. Under
``recurrent_start="rest"`` (snnTorch) the recurrent edge carries the recurrent Affine's bias at
step 0; under ``v_init`` (Norse, SpikingJelly) the voltage starts at v_leak / v_reset. Each of
these must be computed from the parameters the run is given, not from the graph a model was
built from.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import nir
import numpy as np
import pytest

import nirbridge as nb
from nirbridge import presets

torch = pytest.importorskip("torch")

N_IN, N = 3, 4


def graph(bias_rec=0.25, v_leak=0.5, v_reset=0.1, w_rec=0.3) -> nb.Graph:
    rng = np.random.default_rng(7)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([N_IN])}),
        "fc": nir.Affine(weight=rng.normal(0, 0.6, (N, N_IN)), bias=np.full(N, 0.05)),
        "lif": nir.LIF(tau=np.full(N, 4e-3), r=np.full(N, 2.0), v_leak=np.full(N, v_leak),
                       v_threshold=np.full(N, 1.0), v_reset=np.full(N, v_reset)),
        "rec": nir.Affine(weight=rng.normal(0, 1.0, (N, N)) * w_rec, bias=np.full(N, bias_rec)),
        "li": nir.LI(tau=np.full(2, 3e-3), r=np.ones(2), v_leak=np.zeros(2)),
        "out_fc": nir.Linear(weight=rng.normal(0, 0.5, (2, N))),
        "output": nir.Output(output_type={"output": np.array([2])}),
    }
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "out_fc"),
             ("out_fc", "li"), ("li", "output")]
    return nb.Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))


def inputs(T=12, B=2) -> np.ndarray:
    return (np.random.default_rng(3).random((T, B, N_IN)) < 0.4).astype(np.float32)


def dynamics(name: str) -> nb.Dynamics:
    d = nb.Dynamics.preset(name) if name != "nir" else nb.Dynamics.preset("nir", dt=1e-3)
    # every preset with a dt fitting the graph's time constants (the preset's own dt is kept where it fits)
    return d.replace(dt=1e-3) if d.dt > 1e-3 else d


PRESETS = sorted(presets.names())
EDITS = {"rec": {"bias": 1.0}, "lif": {"v_leak": 0.0, "v_reset": -0.2, "tau": 6e-3}}
REC = ["lif", ("lif", "v"), "li"]


def _edited_graph() -> nb.Graph:
    return graph(bias_rec=1.0, v_leak=0.0, v_reset=-0.2).replace_params({"lif": {"tau": np.full(N, 6e-3)}})


@pytest.mark.parametrize("preset", PRESETS)
def test_torch_module_edited_agrees_with_the_reference_on_its_written_back_graph(preset):
    dyn, x = dynamics(preset), inputs()
    m = nb.to_torch(graph(), dyn, dtype=torch.float64)
    with torch.no_grad():
        for node, fields in EDITS.items():
            for f, v in fields.items():
                m.node_params()[node][f].fill_(v)
        got, _ = m.run(torch.from_numpy(x), record=REC)
    back = nb.from_torch(m)
    assert back.equals(_edited_graph())  # the edit is what the graph says now
    ref = nb.simulate(back, x, dyn, record=REC, dtype="float64")
    for k in ref:
        np.testing.assert_allclose(got[k].numpy(), ref[k], rtol=0, atol=1e-10, err_msg=f"{preset} {k}")
    r = nb.compare(back, x, dyn, dtype="float64")
    assert r.ok, str(r)


@pytest.mark.parametrize("preset", PRESETS)
def test_jax_params_edited_agree_with_the_reference_on_the_written_back_graph(preset):
    dyn, x = dynamics(preset), inputs()
    model = nb.to_jax(graph(), dyn, dtype="float64")
    params = jax.tree.map(lambda a: a, model.params)
    for node, fields in EDITS.items():
        for f, v in fields.items():
            params[node][f] = jnp.full_like(params[node][f], v)
    got, _ = model.run(params, x, record=REC)
    back = nb.from_jax(model, params)
    assert back.equals(_edited_graph())
    ref = nb.simulate(back, x, dyn, record=REC, dtype="float64")
    for k in ref:
        np.testing.assert_allclose(np.asarray(got[k]), ref[k], rtol=0, atol=1e-10, err_msg=f"{preset} {k}")
    # and the initial state follows the edited params too
    s0 = model.init_state(2, params)
    if dyn.v_init == "v_leak":
        np.testing.assert_array_equal(np.asarray(s0["nodes"]["lif"]["v"]), np.zeros((2, N)))
    if dyn.recurrent_start == "rest":
        np.testing.assert_array_equal(np.asarray(s0["prev"]["rec"]), np.ones((2, N)))


def test_the_edits_matter():
    # the cases above are not vacuous: each edit changes the numbers under the presets that read it
    x = inputs()
    for preset, node, field_ in (("snntorch", "rec", "bias"), ("norse", "lif", "v_leak"),
                                 ("spikingjelly", "lif", "v_reset")):
        dyn = dynamics(preset)
        a = nb.simulate(graph(), x, dyn, record=[("lif", "v")], dtype="float64")[("lif", "v")]
        edited = graph().replace_params({node: {field_: np.full(N, EDITS[node][field_])}})
        b = nb.simulate(edited, x, dyn, record=[("lif", "v")], dtype="float64")[("lif", "v")]
        assert not np.allclose(a[0], b[0]), (preset, node, field_)  # already at step 0


def _loss(model, x):
    def loss(params):
        out, _ = model.run(params, x, record=[("lif", "v")])
        return jnp.sum(out[("lif", "v")])

    return loss


@pytest.mark.parametrize("preset,node,field_", [
    ("norse", "lif", "v_leak"),            # v_init = v_leak
    ("spikingjelly", "lif", "v_reset"),    # v_init = v_reset (and the reset value)
    ("snntorch-zero", "rec", "bias"),      # recurrent_start = rest: the bias at step 0
    ("nir", "lif", "v_leak"),
])
def test_jax_gradients_match_finite_differences(preset, node, field_):
    """Zero reset (a select), LIF voltages as the loss and recurrent weights 0 (the recurrent Affine
    passes on its bias only): no surrogate derivative of a spike reaches the loss, and the function
    is smooth in these parameters as long as no spike flips, so the gradient is the true derivative;
    central differences with eps = 1e-6 in float64 (their error ~eps^2, no spike within reach)."""
    if preset == "snntorch-zero":
        dyn = dynamics("snntorch").replace(reset="zero", reset_timing="same", voltage=None)
    else:
        dyn = dynamics(preset).replace(reset="zero")
    x = inputs(T=20)
    model = nb.to_jax(graph(w_rec=0.0), dyn, dtype="float64")
    loss = _loss(model, x)
    g = jax.grad(loss)(model.params)[node][field_]
    eps = 1e-6
    fd = np.zeros(N)
    for i in range(N):
        up = jax.tree.map(lambda a: a, model.params)
        dn = jax.tree.map(lambda a: a, model.params)
        up[node][field_] = up[node][field_].at[i].add(eps)
        dn[node][field_] = dn[node][field_].at[i].add(-eps)
        fd[i] = (float(loss(up)) - float(loss(dn))) / (2 * eps)
    assert np.all(np.abs(fd) > 1e-3), fd  # the parameter matters
    np.testing.assert_allclose(np.asarray(g), fd, rtol=1e-6, atol=1e-8)
