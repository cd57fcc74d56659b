"""Writing a graph for another library's NIR importer (the importers are declared by the library
modules: ``Preset.importer``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..dynamics import Dynamics
from ..errors import DynamicsError, UnsupportedError, node_error
from ..graph import Graph, check_graph
from .base import IMPORTERS, NEURONS, SPIKING, get_preset, names, short, warn_change


def export_graph(graph: Graph, source: str | Dynamics, target: str, *, dt: float | None = None) -> Graph:
    """Rewrite ``graph`` (simulated with ``source``) for ``target``'s NIR importer.

    The result, written with :func:`nirbridge.save` and read by the target library's importer at
    time step ``dt`` (default: the importer's), gives the spikes ``source`` gives. Time constants
    are rescaled to the new dt (Euler at dt' with tau' = tau dt'/dt is the same update), and a
    gain the importer ignores (Norse's LIF ignores ``r``) is folded into the Affine/Linear node
    feeding the neuron. Each change is announced by an :class:`ExporterQuirkWarning`.

    Raises :class:`~nirbridge.errors.UnsupportedError`, naming the node and the setting, where the
    target cannot reproduce the source: another scheme, reset rule or reset timing, several spikes
    per step, an output delay, another initial state, a v_reset the importer drops, node types the
    importer does not read, the importer's own limits (one value per layer, a loop it is not
    checked for). Supported targets, each checked end to end with the real library:

    * ``"snntorch"`` (``import_from_nir``): Euler at dt = 1e-4, reset to 0 in the step of the
      spike, ``>``, one threshold per layer, the input gain folded into the Affine so that
      ``r = tau/dt``;
    * ``"norse"`` (``norse.torch.from_nir``): Euler, reset to 0, ``>``;
    * ``"sinabs"`` (``sinabs.from_nir``): exact, tau in steps, ``>=``, several spikes per step,
      subtraction, the input unscaled (the source's gain ``(1 - exp(-dt/tau)) r`` is folded into
      the Affine; the match for Rockpool's LIFNeuronTorch);
    * ``"spikingjelly"`` (``import_from_nir(graph, dt)``, default dt 1e-4): Euler, hard reset to
      v_reset, ``>=``, one value per layer for every parameter, LIF ``v_leak = v_reset``;
    * ``"spyx"`` (``spyx.nir.from_nir(graph, x, dt)``): Spyx's own reading (the preset's), a chain
      from ``input`` to ``output``, an Affine after a Flatten in Spyx's channels-last order;
    * ``"rockpool"`` (``from_nir``): CubaLIF (LIFTorch) only, exact, spike counts; it takes
      ``dt = min(tau_mem/(1 + r))``, so the file holds ``r = tau_mem/dt - 1`` and ``w_in = 1``
      (:func:`import_graph` reads such a file back).

    >>> import nir, numpy as np, nirbridge as nb
    >>> g = nb.Graph.from_nir(nir.NIRGraph.from_list(nir.LIF(tau=np.array([1e-3]), r=np.array([1.0]),
    ...     v_leak=np.array([0.0]), v_threshold=np.array([1.0]), v_reset=np.array([0.0]))))
    >>> export_graph(g, "snntorch", "norse")
    Traceback (most recent call last):
    ...
    nirbridge.errors.UnsupportedError: node 'lif', field 'reset_timing': ...
    """
    check_graph(graph, "export_graph")
    src = get_preset(source).dynamics() if isinstance(source, str) else source
    if not isinstance(src, Dynamics):
        raise DynamicsError(f"export_graph(): source must be a preset name or a Dynamics, got {source!r}. "
                            f"Fix: e.g. 'snntorch' (one of {names()}) or Dynamics(dt=...)")
    if target not in IMPORTERS:
        raise UnsupportedError(f"export_graph(): no importer reading recorded for {target!r}; supported targets: "
                               f"{sorted(IMPORTERS)}. Fix: simulate with nirbridge, or give the library's preset "
                               "module an importer= reading, with a test against the library")
    imp = IMPORTERS[target]
    fixed = imp["dynamics"]["dt"]
    if dt is not None and imp.get("fixed_dt") and float(dt) != float(fixed):
        raise UnsupportedError(f"export_graph(..., {target!r}, dt={dt!r}): {imp['library']} takes no dt: "
                               f"{imp['fixed_dt']}. Fix: leave dt out (the file is written for dt = {fixed:g})")
    tgt = Dynamics(**dict(imp["dynamics"], **({} if dt is None else {"dt": dt})))
    names_ = set(graph.plan.names)
    bad = [n for n, _ in src.by_node if n not in names_]
    if bad:  # as simulate does
        raise DynamicsError(f"export_graph(): Dynamics.by_node names {bad}, which are not nodes of this graph. "
                            "Fix: use the flat (dotted) node names of graph.plan")
    plan = graph.plan
    if plan.recurrent and imp.get("recurrent") is False:
        a, b = plan.recurrent[0]
        raise node_error(UnsupportedError, b, "edges",
                         f"the edge {a} -> {b} closes a loop; {imp['library']}: {imp['recurrent_why']}",
                         "export a feed-forward model, or simulate the recurrent one with nirbridge")
    changes: dict[str, dict[str, np.ndarray]] = {}
    notes: dict[str, list[str]] = {}
    for s in plan.steps:
        t = s.node.type
        if s.role != "compute":
            continue
        if t not in imp["types"]:
            why = imp.get("type_why", {}).get(t)
            raise node_error(UnsupportedError, s.name, "type", f"{imp['library']} does not import {t} nodes"
                             + (f": {why}" if why else ""), "remove or replace the node")
        if t not in NEURONS:
            continue
        d = src.for_node(s.name, t)  # by_node settings included
        dt_t = tgt.for_type(t)
        p = s.node.params
        _same(s.name, "method", d.method, dt_t.method, imp)
        unit_gain = (d.input_gain, dt_t.input_gain) == ("nir", "unit") and t in ("LIF", "LI")
        if not unit_gain:
            _same(s.name, "input_gain", d.input_gain, dt_t.input_gain, imp)
        if t in ("CubaLIF", "CubaLI"):
            _same(s.name, "synapse", d.synapse, dt_t.synapse, imp)
        if t in SPIKING:
            _same(s.name, "reset_timing", d.reset_timing, dt_t.reset_timing, imp)
            _same(s.name, "reset", d.reset, dt_t.reset, imp)
            _same(s.name, "spikes", d.spikes, dt_t.spikes, imp)
            _same(s.name, "output_delay", d.output_delay, dt_t.output_delay, imp)
            if d.threshold != dt_t.threshold:
                raise node_error(UnsupportedError, s.name, "threshold",
                                 f"the source tests v {d.threshold} v_threshold, {imp['library']} tests "
                                 f"v {dt_t.threshold} v_threshold", "no exact rewrite is implemented")
            if (d.reset == "zero" and "v_reset" in imp["ignores"].get(t, ())
                    and np.any(np.asarray(p["v_reset"]) != 0)):
                raise node_error(UnsupportedError, s.name, "v_reset",
                                 f"is {short(p['v_reset'])} but {imp['library']} ignores v_reset (resets to 0)",
                                 "shift v_leak, v_threshold and v_reset by -v_reset in your model first")
        for f in imp.get("zero", {}).get(t, ()):
            if np.any(np.asarray(p[f]) != 0):
                raise node_error(UnsupportedError, s.name, f, f"is {short(p[f])} but {imp['library']} reads "
                                 f"only {f} = 0", f"simulate it with nirbridge, or a model with {f} = 0")
        v0_src = _initial_v(p, d.v_init)
        v0_tgt = _initial_v(p, dt_t.v_init)
        if not np.array_equal(*np.broadcast_arrays(v0_src, v0_tgt)):
            raise node_error(UnsupportedError, s.name, "v_init",
                             f"the source starts at {d.v_init} = {short(v0_src)}, {imp['library']} at "
                             f"{dt_t.v_init} = {short(v0_tgt)}", "make v_leak equal the initial voltage")
        new: dict[str, np.ndarray] = {}
        if unit_gain:
            # the target adds the input unscaled: fold the source's gain of x in v into the Affine
            r = np.asarray(p["r"])
            k = np.float64(d.dt) / np.asarray(p["tau"], dtype=np.float64)
            gain = (k if d.method == "euler" else -np.expm1(-k)) * r.astype(np.float64)
            _fold_gain(plan, s, np.broadcast_to(gain, r.shape), changes, notes,
                       "input gain (1 - exp(-dt/tau)) r" if d.method == "exact" else "input gain (dt/tau) r")
            new["r"] = np.ones_like(r)
        if dt_t.dt != d.dt:
            scale = dt_t.dt / d.dt
            for f in ("tau", "tau_mem", "tau_syn"):
                if f in p:
                    a = np.asarray(p[f])
                    new[f] = (a * np.asarray(scale, dtype=np.float64)).astype(a.dtype)
            # CubaLI(F): w_in and r are gains per step of dt/tau, unchanged when dt and tau scale together
            if t in ("I", "IF"):
                a = np.asarray(p["r"])
                new["r"] = (a / np.asarray(scale, dtype=np.float64)).astype(a.dtype)
        if t in imp.get("one_threshold", ()):
            thr = np.asarray(p["v_threshold"])
            if np.unique(thr).size > 1:
                raise node_error(UnsupportedError, s.name, "v_threshold",
                                 f"holds {np.unique(thr).size} different values ({short(np.unique(thr))}); "
                                 f"{imp['library']} takes one threshold per layer", "give the layer one threshold")
        unit = imp.get("unit_gain", {}).get(t)
        if unit is not None and len(unit) > 2 and unit[2]({**p, **new}, np.float64(tgt.dt)):
            unit = None  # the importer also reads these gains as they are
        if unit is not None:  # the importer applies no gain: the source's gain goes into the Affine
            fold, unit_of = unit[:2]
            q = {**p, **new}
            units = {f: np.asarray(u, dtype=np.float64) for f, u in unit_of(q, np.float64(tgt.dt)).items()}
            for f, u in units.items():
                have = np.broadcast_to(np.asarray(q[f], dtype=np.float64), np.broadcast_shapes(np.shape(q[f]), u.shape))
                if f != fold and not np.allclose(have / u, 1.0, rtol=1e-6, atol=0):
                    raise node_error(UnsupportedError, s.name, f,
                                     f"is {short(have)}; {imp['library']} reads only {f} = {short(u)} (the gain of "
                                     f"its update)", f"scale the weights feeding {fold} instead")
            gain = np.asarray(q[fold], dtype=np.float64) / units[fold]
            gain = np.broadcast_to(gain, np.broadcast_shapes(gain.shape, np.shape(p[fold])))
            if not np.allclose(gain, 1.0, rtol=1e-6, atol=0):
                _fold_gain(plan, s, gain, changes, notes,
                           f"input gain ({fold} against the importer's {short(units[fold])})")
            for f, u in units.items():
                shape = np.broadcast_shapes(u.shape, np.shape(p[f]))
                new[f] = np.broadcast_to(u, shape).astype(np.asarray(p[f]).dtype)
        if "r" in imp["ignores"].get(t, ()):
            r = np.asarray(new.get("r", p["r"]))
            if np.any(r != 1):
                _fold_gain(plan, s, r, changes, notes, "r")
                new["r"] = np.ones_like(r)
        if imp.get("check") is not None:  # the importer's own limits, on the parameters it will read
            imp["check"](s.name, t, {**p, **new}, tgt)
        if new:
            changes.setdefault(s.name, {}).update(new)
            notes.setdefault(s.name, []).extend(
                f"{f} {short(p[f])} -> {short(v)}" for f, v in new.items())
    for node, what in notes.items():
        warn_change(node, f"rewritten for {imp['library']} (dt {src.dt:g} -> {tgt.dt:g}): " + ", ".join(what))
    out = graph.replace_params(changes)
    if imp.get("encode") is not None:  # how the importer reads the file, where that is not NIR's meaning
        out = imp["encode"](out, tgt)
    return out


def _same(node: str, setting: str, a, b, imp) -> None:
    if a != b:
        raise node_error(UnsupportedError, node, setting,
                         f"the source uses {setting}={a!r}, {imp['library']} {setting}={b!r}; its semantics cannot "
                         "reproduce this model",
                         imp.get("setting_hint", "simulate it with nirbridge, or change the model"))


def _initial_v(p: Mapping[str, Any], v_init: str) -> np.ndarray:
    if v_init == "zero" or p.get(v_init) is None:
        return np.zeros(1)
    return np.asarray(p[v_init])


def _fold_gain(plan, step, r: np.ndarray, changes: dict, notes: dict, what: str) -> None:
    """Scale the rows of the Affine/Linear node that alone feeds ``step`` by ``r`` (an input gain
    the importer does not apply, named ``what``), so that ``r x`` reaches the neuron anyway."""
    srcs = step.sources
    src = plan[srcs[0][0]] if len(srcs) == 1 and not srcs[0][1] else None
    users = [s for s in plan.steps if any(a == (src.name if src else None) for a, _ in s.sources)]
    if src is None or src.node.type not in ("Affine", "Linear") or len(users) != 1:
        raise node_error(UnsupportedError, step.name, "r",
                         f"the {what} {short(r)} is not applied by the importer, and the node is not fed by one "
                         "Affine/Linear node of its own to fold it into", "fold it into the weights feeding the "
                         "neuron yourself")
    p = src.node.params
    w = np.asarray(p["weight"])
    new = {"weight": (w * np.asarray(r, dtype=np.float64).reshape(-1, 1)).astype(w.dtype)}
    if p.get("bias") is not None:
        b = np.asarray(p["bias"])
        new["bias"] = (b * np.asarray(r, dtype=np.float64)).astype(b.dtype)
    changes.setdefault(src.name, {}).update(new)
    notes.setdefault(src.name, []).append(f"rows scaled by {step.name}'s {what} {short(r)} (the importer "
                                          "does not apply it)")
