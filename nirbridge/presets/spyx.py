"""Spyx 1.0.0: its reading of NIR, its exporter's quirks (``r = beta``, the recurrent input edge,
the channels-last Flatten) and their corrections."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import nir
import numpy as np

from ..dynamics import Dynamics
from ..errors import DynamicsError, UnsupportedError, node_error
from ..graph import Graph
from .base import ExporterQuirkWarning, apply_fixes, make_preset, ratio, register, short, warn_change

SETTINGS = dict(dt=1.0, method="euler", reset="subtract", threshold=">", synapse="current_first", input_gain="unit",
                output_delay=1, reset_timing="late", voltage="pre", by_type={"CubaLIF": {"reset_timing": "same"}})


def foreign_signature(step: Any, d: Dynamics, tau: np.ndarray, r: np.ndarray) -> str | None:
    """Spyx writes ``r = beta = 1 - dt/tau``: checked under every other preset."""
    if (d.input_gain == "nir" and r.size and np.all(r < 1)
            and np.allclose(r, 1 - d.dt / np.broadcast_to(tau, r.shape), rtol=1e-5, atol=1e-7)):
        return (f"r = {short(r)} equals beta = 1 - dt/tau, as Spyx's exporter writes it (Spyx adds the input "
                f"unscaled; the Spyx preset ignores r). Fix: graph, dynamics = nb.presets.import_graph(path, "
                f"'spyx', dt={d.dt:g})")
    return None


def import_fix(graph: Graph, dyn: Dynamics, export_dt: float | None) -> Graph:
    if export_dt is not None:
        raise DynamicsError("import_graph(..., 'spyx'): pass the dt given to spyx.nir.to_nir as dt=, not export_dt "
                            "(Spyx simulates at its export dt)")
    graph = _reroute_spyx_inputs(graph)
    graph = _spyx_flatten_order(graph)
    changes: dict[str, dict[str, np.ndarray]] = {}
    for s in graph.plan.steps:
        p = s.node.params
        new = {}
        if s.node.type in ("LIF", "LI"):
            new["r"] = ratio(p["tau"], dyn.dt, p["r"])
        elif s.node.type in ("CubaLIF", "CubaLI"):
            new["r"] = ratio(p["tau_mem"], dyn.dt, p["r"])
            new["w_in"] = ratio(p["tau_syn"], dyn.dt, p["w_in"])
        if new:
            changes[s.name] = new
    return apply_fixes(graph, changes, "Spyx exporter correction (r = beta and w_in = 1 are not the model's: Spyx "
                        "adds the input unscaled)")



def _reroute_spyx_inputs(graph: Graph) -> Graph:
    """Spyx writes a recurrent layer as a nested graph ``input -> w_rec <-> neuron -> output``: the
    external input goes through the recurrent weights, which Spyx itself does not do. Reroute
    ``input -> w_rec`` to ``input -> neuron``."""
    changed: list[str] = []

    def fix(g: nir.NIRGraph, prefix: str) -> nir.NIRGraph:
        nodes = {}
        for k, v in g.nodes.items():
            nodes[k] = fix(v, prefix + k + ".") if isinstance(v, nir.NIRGraph) else v
        edges = [tuple(e) for e in g.edges]
        inputs = [k for k, v in nodes.items() if isinstance(v, nir.Input)]
        if prefix:  # only nested graphs
            for a, b in list(edges):
                if a not in inputs or not isinstance(nodes.get(b), (nir.Linear, nir.Affine)):
                    continue
                loop = [n for n, m in edges if m == b and (b, n) in edges
                        and isinstance(nodes.get(n), (nir.LIF, nir.CubaLIF, nir.IF))]
                if len(loop) == 1 and (a, loop[0]) not in edges:
                    edges[edges.index((a, b))] = (a, loop[0])
                    changed.append(f"{prefix}{a} -> {prefix}{b} became {prefix}{a} -> {prefix}{loop[0]}")
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=g.metadata, type_check=False)

    new = fix(graph.to_nir(), "")
    if not changed:
        return graph
    for c in changed:
        warn_change(c.split(" -> ")[0], f"Spyx exporter correction (the recurrent layer's input was routed "
                                         f"through the recurrent weights): edge {c}")
    return Graph.from_nir(new)



def _spyx_flatten_order(graph: Graph) -> Graph:
    """Spyx runs convolutions channels-last: its Flatten of an ``(H, W, C)`` tensor orders the
    features ``(h, w, c)``, but the exporter writes a NIR Flatten of ``(C, H, W)`` (channels-first,
    as NIR says) and the following Affine/Linear with Spyx's own column order. Permute the
    columns of every Affine/Linear fed by such a Flatten alone to NIR's ``(c, h, w)`` order."""
    plan = graph.plan
    changes: dict[str, dict[str, np.ndarray]] = {}
    for s in plan.steps:
        if s.node.type not in ("Affine", "Linear") or len(s.sources) != 1 or s.sources[0][1]:
            continue
        src = plan[s.sources[0][0]]
        shape = tuple(src.input_shape)
        if src.node.type != "Flatten" or len(shape) != 3 or tuple(src.output_shape) != (int(np.prod(shape)),):
            continue
        c, h, w = shape
        weight = np.asarray(s.node.params["weight"])
        new = weight.reshape(weight.shape[0], h, w, c).transpose(0, 3, 1, 2).reshape(weight.shape[0], -1)
        changes[s.name] = {"weight": np.ascontiguousarray(new)}
    if not changes:
        return graph
    for name in changes:  # stacklevel 5: the caller of import_graph
        warnings.warn(ExporterQuirkWarning(
            f"node {name!r}: Spyx exporter correction (Spyx flattens its channels-last (H, W, C) tensor, the file's "
            "Flatten is channels-first (C, H, W)): weight columns reordered from (h, w, c) to (c, h, w)"), stacklevel=5)
    return graph.replace_params(changes)



def encode(graph: Graph, dyn: Dynamics) -> Graph:
    """The file as ``spyx.nir.from_nir`` reads it: one chain of nodes from a node named ``input`` to
    one named ``output`` (it follows the first edge out of each node and builds a Sequential, so any
    branch would be dropped), and the columns of an Affine/Linear after a Flatten of a ``(C, H, W)``
    tensor in Spyx's channels-last ``(h, w, c)`` order (Spyx flattens its ``(H, W, C)`` tensor)."""
    nodes, edges = dict(graph.nodes), list(graph.edges)
    ins = [k for k, v in nodes.items() if v.type == "Input"]
    outs = [k for k, v in nodes.items() if v.type == "Output"]
    if len(ins) != 1 or len(outs) != 1:
        raise node_error(UnsupportedError, (ins + outs + ["graph"])[0], "type",
                         f"the graph has {len(ins)} Input and {len(outs)} Output nodes; spyx.nir.from_nir builds one "
                         "Sequential from one input to one output", "export a single-input, single-output chain")
    succ: dict[str, list[str]] = {}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
    order, at = [ins[0]], ins[0]
    while at != outs[0]:
        nxt = succ.get(at, [])
        if len(nxt) != 1 or nxt[0] in order:
            raise node_error(UnsupportedError, at, "edges",
                             f"leads to {nxt or 'nothing'}; spyx.nir.from_nir follows one edge out of each node (a "
                             "Sequential) and would drop the rest", "export a chain of layers")
        at = nxt[0]
        order.append(at)
    if len(order) != len(nodes):
        rest = sorted(set(nodes) - set(order))
        raise node_error(UnsupportedError, rest[0], "edges", f"is not on the chain from {ins[0]!r} to {outs[0]!r}; "
                         "spyx.nir.from_nir would drop it", "export a chain of layers")
    # the Affine/Linear after a channels-first Flatten: columns (c, h, w) -> Spyx's (h, w, c)
    plan = graph.plan
    changes: dict[str, dict[str, np.ndarray]] = {}
    for st in plan.steps:
        if st.node.type not in ("Affine", "Linear") or len(st.sources) != 1:
            continue
        src = plan[st.sources[0][0]]
        shape = tuple(src.input_shape)
        if src.node.type == "Flatten" and len(shape) == 3:
            c, h, w = shape
            weight = np.asarray(st.node.params["weight"])
            new = weight.reshape(weight.shape[0], c, h, w).transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)
            changes[st.name] = {"weight": np.ascontiguousarray(new)}
    if changes:
        graph = apply_fixes(graph, changes, "written for spyx.nir.from_nir (Spyx flattens its channels-last (H, W, C) "
                            "tensor): weight columns reordered from (c, h, w) to (h, w, c)")
    rename = {ins[0]: "input", outs[0]: "output"}
    if all(a == b for a, b in rename.items()):
        return graph
    clash = [b for a, b in rename.items() if a != b and b in nodes]
    if clash:
        raise node_error(UnsupportedError, clash[0], "name", f"spyx.nir.from_nir needs the Input named 'input' and the "
                         f"Output 'output', and {clash[0]!r} is another node", "rename that node")
    warn_change(ins[0], f"renamed {ins[0]!r} -> 'input' and {outs[0]!r} -> 'output' for spyx.nir.from_nir (it starts "
                "at 'input' and stops at 'output')")
    nm = lambda k: rename.get(k, k)  # noqa: E731
    nodes = {nm(k): dataclasses.replace(v, name=nm(k)) for k, v in graph.nodes.items()}
    return Graph(nodes, [(nm(a), nm(b)) for a, b in graph.edges], graph.metadata)


# spyx.nir.from_nir(graph, input_data, dt): a Sequential along the edges from 'input' to 'output'; LIF -> LIF(beta =
# 1 - dt/tau, threshold), CubaLIF -> CuBaLIF(alpha = 1 - dt/tau_syn, beta = 1 - dt/tau_mem), per-neuron values kept;
# r, w_in, v_leak and v_reset are not read; Affine / Linear -> nnx.Linear, Conv2d -> nnx.Conv, SumPool2d, Flatten
IMPORTER = dict(
    library="Spyx 1.0.0 (spyx.nir.from_nir(graph, input_data, dt=dt))",
    dynamics=SETTINGS,
    ignores={},
    zero={"LIF": ("v_leak",), "CubaLIF": ("v_leak",)},
    encode=encode,
    recurrent=False,
    recurrent_why="its from_nir builds RLIF / RCuBaLIF from nested graphs, not checked against Spyx",
    setting_hint="Spyx's importer builds LIF / CuBaLIF (beta = 1 - dt/tau, the input unscaled, subtraction, each "
                 "layer's spike one step late): simulate the model with Dynamics.preset('spyx', dt=...)",
    types=("Input", "Output", "Affine", "Linear", "Conv2d", "SumPool2d", "Flatten", "LIF", "CubaLIF"),
)


PRESET = register(make_preset(
    "spyx", "Spyx 1.0.0",
    SETTINGS,
    {
        "dt": "the dt argument of spyx.nir.to_nir (default 1; not stored): pass the same dt",
        "scheme": "V = beta V + x with beta = 1 - dt/tau (alpha = 1 - dt/tau_syn)",
        "reset": "subtract v_threshold",
        "spike test": "V > v_threshold",
        "synapse order": "current first",
        "delayed reset": "LIF / RLIF: yes, the subtraction comes after the decay (as snnTorch's); CuBaLIF / "
                         "RCuBaLIF: no, before the decay",
        "spikes per step": "one",
        "output delay": "one step: a layer emits the spike of its previous state (each layer adds one step)",
        "initial state": "0",
        "recorded voltage": "before the reset (the state V)",
        "recurrent start": "0 (no recurrent bias); the recurrent spike is the previous step's",
        "input scaling": "none: r and w_in are ignored, the input enters unscaled",
        "exporter mapping": "LIF -> LIF(tau = dt/(1-beta), r = beta, v_leak = 0); CuBaLIF -> CubaLIF(tau_syn = "
                            "dt/(1-alpha), tau_mem = dt/(1-beta), r = beta, w_in = 1); RLIF / RCuBaLIF -> a "
                            "nested graph whose input edge goes through w_rec (import_graph reroutes it)",
    },
    "spyx.nir.to_nir(model, {'input': shape}, {'output': shape}, dt=...)",
    lost=("dt", "the input scaling (r and w_in are not the model's)", "the one-step output delay",
          "the reset placement", "the activation / surrogate", "the initial state"),
    quirks=("r = beta -> tau/dt and w_in = 1 -> tau_syn/dt (the Euler gains become Spyx's unit gains)",
            "a nested graph's input -> w_rec edge -> input -> neuron (the exporter routes the input through the "
            "recurrent weights; Spyx itself does not)"),
    assumed={t: "dt = the dt given to spyx.nir.to_nir" for t in ("LIF", "CubaLIF")},
foreign_signature=foreign_signature, import_fix=import_fix, importer=IMPORTER,
))
