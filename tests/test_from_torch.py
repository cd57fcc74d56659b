"""torch modules back to NIR: Graph -> to_torch -> from_torch bit-exact, and traced user models.

A traced model is checked against numbers, not only structure: simulating the Graph from_torch
produced (NumPy reference) must give what running the user's own module gives.
"""

from __future__ import annotations

import nir
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cases import NODE_TYPES, node_case, recurrent_case  # noqa: E402

import nirbridge as nb  # noqa: E402
from nirbridge import examples  # noqa: E402
from nirbridge.backends.torch import to_torch  # noqa: E402
from nirbridge.backends.torch_fx import from_torch  # noqa: E402
from nirbridge.errors import ShapeError, UnsupportedError  # noqa: E402

nn = torch.nn


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # performance only (see conftest.py)


# ---------------------------------------------------------------------------- round trips
def _graphs():
    out = [(f"{t}-f64", node_case(t)[0]) for t in NODE_TYPES]
    out += [(f"{t}-f32", node_case(t, dtype=np.float32)[0]) for t in ("Affine", "Conv2d", "LIF", "CubaLIF", "Delay")]
    out += [("recurrent", recurrent_case()[0])]
    out += [(n, nb.load(examples.path(n))) for n in examples.names()]
    return out


GRAPHS = _graphs()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,graph", GRAPHS, ids=[n for n, _ in GRAPHS])
def test_roundtrip_bit_exact(name, graph, dtype):
    m = to_torch(graph, nb.Dynamics(dt=1e-3), dtype=dtype)
    back = from_torch(m)
    assert back.equals(graph)
    # after a dtype change as well: float64 parameters stay the original arrays
    assert from_torch(m.to(torch.float64 if dtype == torch.float32 else torch.float32)).equals(graph)
    assert back.to_nir().nodes.keys() == graph.to_nir().nodes.keys()


def test_braille_mixed_dtypes_survive_a_float32_module():
    g = nb.load(examples.path("braille_noDelay_bias_zero"))
    m = to_torch(g, nb.Dynamics(dt=1e-4))  # float32: the float64 CubaLIF parameters are rounded in the module
    assert m.get_parameter("lif1.lif.tau_mem").dtype == torch.float32
    back = from_torch(m)
    assert back.node("lif1.lif").params["tau_mem"].dtype == np.float64
    assert back.node("fc1").params["weight"].dtype == np.float32
    assert back.equals(g)


def test_changed_parameters_are_cast_to_the_original_dtype():
    g = nb.load(examples.path("braille_noDelay_bias_zero"))
    m = to_torch(g, nb.Dynamics(dt=1e-4))
    with torch.no_grad():
        m.get_parameter("lif1.lif.v_threshold").mul_(2)  # float64 in the file
        m.get_parameter("fc2.weight")[0, 0] = 0.25  # float32 in the file
    back = from_torch(m)
    thr = back.node("lif1.lif").params["v_threshold"]
    assert thr.dtype == np.float64
    np.testing.assert_array_equal(thr, (g.node("lif1.lif").params["v_threshold"].astype(np.float32) * 2)
                                  .astype(np.float64))
    w = back.node("fc2").params["weight"]
    assert w.dtype == np.float32 and w[0, 0] == 0.25
    np.testing.assert_array_equal(w.reshape(-1)[1:], g.node("fc2").params["weight"].reshape(-1)[1:])
    # everything else is the original, bit for bit
    for name in ("fc1", "lif1.w_rec", "lif2"):
        assert back.node(name).equals(g.node(name))
    assert back.node("lif1.lif").params["tau_mem"] is not None
    np.testing.assert_array_equal(back.node("lif1.lif").params["tau_mem"], g.node("lif1.lif").params["tau_mem"])


def test_training_changes_the_graph_and_simulation_follows():
    g, x, dt = recurrent_case()
    dyn = nb.Dynamics(dt=dt)
    m = to_torch(g, dyn, dtype=torch.float64)
    weights = [p for k, p in m.named_parameters() if k.endswith(("weight", "bias"))]
    opt = torch.optim.SGD(weights, lr=0.1)
    m(x).pow(2).sum().backward()
    opt.step()
    back = from_torch(m)
    assert not back.equals(g)
    with torch.no_grad():
        y = m(x)
    # float64 parameters, float64 module: the converted graph simulates to the module's numbers
    np.testing.assert_allclose(nb.simulate(back, x, dyn, dtype="float64")["output"], y.numpy(), rtol=1e-10,
                               atol=1e-10)


def test_bfloat16_module_converts_back():
    g, _, dt = recurrent_case()
    m = to_torch(g, nb.Dynamics(dt=dt)).to(torch.bfloat16)
    assert from_torch(m).equals(g)  # untouched: the original float64 arrays
    with torch.no_grad():
        m.get_parameter("fc_in.bias").add_(1)
    b = from_torch(m).node("fc_in").params["bias"]
    assert b.dtype == np.float64
    np.testing.assert_allclose(b, g.node("fc_in").params["bias"] + 1, rtol=1e-2)  # bfloat16 keeps ~3 digits


def test_meta_module_cannot_be_converted_back():
    g, _, dt = recurrent_case()
    with pytest.raises(UnsupportedError, match="meta"):
        from_torch(to_torch(g, nb.Dynamics(dt=dt)).to("meta"))


# ---------------------------------------------------------------------------- traced user models
class MyLIF(nn.Module):
    """A user's LIF over a time-major sequence: forward Euler, reset to zero, ``v > thr`` —
    the Dynamics(dt, "euler", "zero", ">") update, written independently of nirbridge."""

    def __init__(self, n, dt=1e-3):
        super().__init__()
        self.tau = nn.Parameter(torch.linspace(5e-3, 2e-2, n))
        self.thr = nn.Parameter(torch.full((n,), 0.6))
        self.dt = dt

    def forward(self, x):
        v = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            v = v + self.dt / self.tau * (-v + x[t])
            z = (v > self.thr).to(x.dtype)
            v = v * (1 - z)
            out.append(z)
        return torch.stack(out)


def lif_map(m: MyLIF) -> nir.LIF:
    n = m.tau.shape[0]
    tau = m.tau.detach().numpy()
    return nir.LIF(tau=tau, r=np.ones(n, tau.dtype), v_leak=np.zeros(n, tau.dtype),
                   v_threshold=m.thr.detach().numpy(), v_reset=np.zeros(n, tau.dtype))


def test_traced_sequential_with_custom_lif():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), MyLIF(8), nn.Linear(8, 3, bias=False))
    with torch.no_grad():
        model[0].weight.mul_(3)
    g = from_torch(model, {MyLIF: lif_map})
    assert [(s.name, s.node.type) for s in g.plan.steps] == [
        ("input", "Input"), ("0", "Affine"), ("1", "LIF"), ("2", "Linear"), ("output", "Output")]
    assert set(g.edges) == {("input", "0"), ("0", "1"), ("1", "2"), ("2", "output")}
    assert g.input_shape("0") == (5,) and g.output_shape("output") == (3,)
    p = g.node("0").params
    assert p["weight"].dtype == np.float32
    np.testing.assert_array_equal(p["weight"], model[0].weight.detach().numpy())
    np.testing.assert_array_equal(p["bias"], model[0].bias.detach().numpy())
    np.testing.assert_array_equal(g.node("1").params["tau"], model[1].tau.detach().numpy())
    np.testing.assert_array_equal(g.node("2").params["weight"], model[2].weight.detach().numpy())
    # numbers: the user's own module against the reference simulation of the converted graph
    x = (np.random.default_rng(0).random((60, 4, 5)) < 0.5).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = nb.simulate(g, x, nb.Dynamics(dt=1e-3), dtype="float32", record=["1"])
    # same operations in float32 in another order (dt/tau then the product): ~1e-7 relative apart
    np.testing.assert_allclose(got["output"], want, rtol=1e-5, atol=1e-5)
    assert got["1"].any()  # the LIF spikes, so the check covers spikes and resets
    # and back through to_torch: a NirModule reproduces it as well
    with torch.no_grad():
        np.testing.assert_allclose(to_torch(g, nb.Dynamics(dt=1e-3))(x).numpy(), want, rtol=1e-5, atol=1e-5)


def test_unmapped_module_names_itself_and_the_fix():
    model = nn.Sequential(nn.Linear(5, 8), MyLIF(8), nn.Linear(8, 3))
    with pytest.raises(UnsupportedError) as e:
        from_torch(model)
    msg = str(e.value)
    assert "'1'" in msg and "MyLIF" in msg and "module_map={MyLIF: lambda m: nir.LIF(" in msg


def test_conv_flatten_pool_with_example_input(rng):
    torch.manual_seed(1)
    # (2, 6, 4) -> conv (4, 6, 2) -> pool (4, 3, 1) -> flatten (12,) -> (3,)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, stride=(1, 2)), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(12, 3))
    with pytest.raises(ShapeError, match="example_input"):
        from_torch(model)  # a first convolution does not know its spatial size
    g = from_torch(model, example_input=torch.zeros(1, 2, 6, 4))
    assert [s.node.type for s in g.plan.steps] == ["Input", "Conv2d", "AvgPool2d", "Flatten", "Affine", "Output"]
    assert g.input_shape("0") == (2, 6, 4) and g.output_shape("2") == (12,)
    assert g.node("2").params["start_dim"] == 0  # torch's dim 1 of (B, ...) is NIR's dim 0
    np.testing.assert_array_equal(g.node("0").params["input_shape"], [6, 4])
    x = rng.normal(size=(3, 2, 2, 6, 4)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x.reshape(6, 2, 6, 4))).numpy().reshape(3, 2, 3)
    got = nb.simulate(g, x, nb.Dynamics(dt=1.0))["output"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # float32, different summation order


def test_conv1d_and_fan_in(rng):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 3, 3, padding="same", bias=False)
            self.flat = nn.Flatten()
            self.a = nn.Linear(3 * 7, 4)
            self.b = nn.Linear(3 * 7, 4)

        def forward(self, x):
            h = self.flat(self.conv(x))
            return self.a(h) + self.b(h)

    model = Net()
    g = from_torch(model, example_input=torch.zeros(2, 2, 7))
    assert sorted(e for e in g.edges if e[1] == "output") == [("a", "output"), ("b", "output")]
    assert g.node("conv").type == "Conv1d" and not g.node("conv").params["bias"].any()
    x = rng.normal(size=(2, 3, 2, 7)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x.reshape(6, 2, 7))).numpy().reshape(2, 3, 4)
    np.testing.assert_allclose(nb.simulate(g, x, nb.Dynamics(dt=1.0))["output"], want, rtol=1e-5, atol=1e-5)


def test_stateful_module_returning_output_and_state():
    class StepLIF(nn.Module):  # the norse/snnTorch habit: (output, state) = neuron(x)
        def __init__(self, n):
            super().__init__()
            self.n = n

        def forward(self, x):
            return x, None

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)
            self.lif = StepLIF(2)

        def forward(self, x):
            z, _ = self.lif(self.fc(x))
            return z

    mapping = {StepLIF: lambda m: nir.LIF(tau=np.full(m.n, 1e-2), r=np.ones(m.n), v_leak=np.zeros(m.n),
                                          v_threshold=np.ones(m.n), v_reset=np.zeros(m.n))}
    g = from_torch(Net(), mapping)
    assert set(g.edges) == {("input", "fc"), ("fc", "lif"), ("lif", "output")}


def test_unsupported_operation_names_it():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return torch.relu(self.fc(x))

    with pytest.raises(UnsupportedError, match="relu"):
        from_torch(Net())


def test_nir_module_inside_a_user_model():
    g, x, dt = recurrent_case()
    inner = to_torch(g, nb.Dynamics(dt=dt))
    model = nn.Sequential(nn.Linear(3, 4), inner)
    out = from_torch(model)
    assert out.nodes["1"].subgraph is not None and out.nodes["1"].subgraph.equals(g)
    assert out.input_shape("0") == (3,)


def test_a_mapped_module_as_the_root():
    lin = nn.Linear(3, 2)
    g = from_torch(lin)
    assert [s.node.type for s in g.plan.steps] == ["Input", "Affine", "Output"]
    np.testing.assert_array_equal(g.node("affine").params["weight"], lin.weight.detach().numpy())
