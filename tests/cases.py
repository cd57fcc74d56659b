"""Small test graphs: one per node type, with an input that makes the node do something.

Used by the reference, JAX and torch parity tests. Each case is ``(graph, x, dt)`` with ``x`` of
shape ``(T, B, *input_shape)`` in float64; callers cast to the dtype they test.
"""

from __future__ import annotations

import nir
import numpy as np

import nirbridge as nb

#: every node type with its own case (Input/Output appear in all of them)
NODE_TYPES = ("Affine", "Linear", "Scale", "Threshold", "Flatten", "Conv1d", "Conv2d", "SumPool2d",
              "AvgPool2d", "Delay", "I", "IF", "LI", "LIF", "CubaLI", "CubaLIF")
SPIKING = ("Threshold", "IF", "LIF", "CubaLIF")
DT = 1e-3


def _u(rng, lo, hi, shape, dtype=np.float64):
    return rng.uniform(lo, hi, size=shape).astype(dtype)


def make_node(node_type: str, rng, n: int = 6, dtype=np.float64):
    """A nir node of ``node_type`` with random but sensible parameters, and its input shape."""
    f = lambda lo, hi, shape=(n,): _u(rng, lo, hi, shape, dtype)  # noqa: E731
    if node_type == "Affine":
        return nir.Affine(weight=f(-1, 1, (n, 4)), bias=f(-0.5, 0.5)), (4,)
    if node_type == "Linear":
        return nir.Linear(weight=f(-1, 1, (n, 4))), (4,)
    if node_type == "Scale":
        return nir.Scale(scale=f(-2, 2)), (n,)
    if node_type == "Threshold":
        return nir.Threshold(threshold=f(-0.5, 0.5)), (n,)
    if node_type == "Flatten":
        return nir.Flatten(input_type={"input": np.array([2, 3, 4])}, start_dim=1, end_dim=-1), (2, 3, 4)
    if node_type == "Conv1d":
        return nir.Conv1d(input_shape=12, weight=f(-1, 1, (4, 3, 3)), stride=2, padding=1, dilation=1,
                          groups=1, bias=f(-0.5, 0.5, (4,))), (3, 12)
    if node_type == "Conv2d":
        return nir.Conv2d(input_shape=(9, 9), weight=f(-1, 1, (4, 1, 3, 3)), stride=(2, 1), padding=(1, 0),
                          dilation=(1, 2), groups=2, bias=f(-0.5, 0.5, (4,))), (2, 9, 9)
    if node_type == "SumPool2d":
        return nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                             padding=np.array([0, 0])), (3, 8, 8)
    if node_type == "AvgPool2d":
        return nir.AvgPool2d(kernel_size=np.array([3, 3]), stride=np.array([2, 2]),
                             padding=np.array([1, 1])), (3, 8, 8)
    if node_type == "Delay":
        return nir.Delay(delay=(np.array([0, 1, 3, 2, 3, 1][:n] * (n // 6 + 1))[:n] * DT).astype(dtype)), (n,)
    if node_type == "I":
        return nir.I(r=f(0.5, 2)), (n,)
    if node_type == "IF":
        return nir.IF(r=f(50, 200), v_threshold=f(0.5, 1.5), v_reset=f(-0.1, 0.1)), (n,)
    if node_type == "LI":
        return nir.LI(tau=f(5e-3, 2e-2), r=f(0.5, 2), v_leak=f(-0.1, 0.1)), (n,)
    if node_type == "LIF":
        return nir.LIF(tau=f(5e-3, 2e-2), r=f(0.5, 2), v_leak=f(-0.1, 0.1), v_threshold=f(0.5, 1.5),
                       v_reset=f(-0.1, 0.1)), (n,)
    if node_type == "CubaLI":
        return nir.CubaLI(tau_syn=f(3e-3, 1e-2), tau_mem=f(5e-3, 2e-2), r=f(0.5, 2), v_leak=f(-0.1, 0.1),
                          w_in=f(0.5, 2)), (n,)
    if node_type == "CubaLIF":
        return nir.CubaLIF(tau_syn=f(3e-3, 1e-2), tau_mem=f(5e-3, 2e-2), r=f(0.5, 2), v_leak=f(-0.1, 0.1),
                           v_threshold=f(0.3, 0.8), v_reset=f(-0.1, 0.1), w_in=f(0.5, 2)), (n,)
    raise ValueError(node_type)


def node_case(node_type: str, seed: int = 0, T: int = 40, B: int = 3, dtype=np.float64):
    """``(graph, x, dt)``: Input -> node -> Output, with a drive that makes spiking nodes spike."""
    rng = np.random.default_rng(seed)
    node, in_shape = make_node(node_type, rng, dtype=dtype)
    g = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array(in_shape)}), "node": node,
               "output": nir.Output(output_type={"output": np.array(nb.Graph.from_nir(
                   nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array(in_shape)}), "node": node,
                                       "output": nir.Output(output_type={"output": None})},
                                edges=[("input", "node"), ("node", "output")], type_check=False),
                   ).output_shape("node"))})},
        edges=[("input", "node"), ("node", "output")],
        type_check=False,
    )
    x = rng.normal(1.0, 1.0, size=(T, B) + in_shape)
    return nb.Graph.from_nir(g), x, DT


def recurrent_case(seed: int = 0, T: int = 60, B: int = 3):
    """Input(4) -> Affine -> LIF(5) with a recurrent Affine back into it -> Affine -> LI(2) -> Output,
    plus a Delay branch, fan-in of three edges into the LIF: the plan features in one graph."""
    rng = np.random.default_rng(seed)
    n = 5
    f = lambda lo, hi, shape=(n,): rng.uniform(lo, hi, size=shape)  # noqa: E731
    nodes = {
        "input": nir.Input(input_type={"input": np.array([4])}),
        "fc_in": nir.Affine(weight=f(-1, 2, (n, 4)), bias=f(0, 0.5)),
        "lif": nir.LIF(tau=f(5e-3, 2e-2), r=f(0.5, 2), v_leak=f(-0.1, 0.1), v_threshold=f(0.5, 1.0),
                       v_reset=np.zeros(n)),
        "rec": nir.Linear(weight=f(-0.5, 0.5, (n, n))),
        "delay": nir.Delay(delay=np.array([1, 2, 0, 3, 1]) * DT),
        "fc_out": nir.Affine(weight=f(-1, 1, (2, n)), bias=f(-0.1, 0.1, (2,))),
        "li": nir.LI(tau=f(5e-3, 2e-2, (2,)), r=np.ones(2), v_leak=np.zeros(2)),
        "output": nir.Output(output_type={"output": np.array([2])}),
    }
    edges = [("input", "fc_in"), ("fc_in", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "delay"),
             ("delay", "lif"), ("lif", "fc_out"), ("fc_out", "li"), ("li", "output")]
    g = nb.Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    x = (rng.random((T, B, 4)) < 0.4).astype(np.float64)
    return g, x, DT
