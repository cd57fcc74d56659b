"""Reading a library's NIR export: its corrections and the Dynamics that reproduce it."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..dynamics import Dynamics
from ..errors import DynamicsError, ParameterError
from ..graph import Graph, check_graph
from ..io import as_graph
from .base import LostInformationWarning, get_preset, preset_dynamics


def import_graph(graph: Any, library: str, *, dt: float | None = None, export_dt: float | None = None,
                 options: Mapping[str, Mapping[str, Any]] | None = None, **library_options: Any
                 ) -> tuple[Graph, Dynamics]:
    """Read a library's NIR export: correct its known exporter quirks and return it with the
    Dynamics that reproduce the library's own simulation.

    Returns ``(graph, dynamics)``: the corrected graph (a new one; ``graph`` is not changed) and
    ``Dynamics.preset(library, dt=dt, **library_options, options=options)``. Every change is
    announced once per node by an :class:`ExporterQuirkWarning` naming the node and the change,
    and what the file cannot hold by one :class:`LostInformationWarning` per neuron naming the
    assumption (for snnTorch and Sinabs only while none of the library's options is stated).

    Args:
        graph: a :class:`~nirbridge.graph.Graph`, a ``nir.NIRGraph`` (what an exporter returns) or
            the path of a ``.nir`` file.
        library: a preset name (:func:`names`).
        dt: the simulation time step (default: the preset's).
        export_dt: Norse only, required: the ``dt`` given to ``norse.torch.to_nir`` (its default
            is 1e-3). Norse 1.1.0 writes ``tau = export_dt * tau_mem``; files from earlier
            exporters (e.g. the NIR paper's ``lif_norse.nir``) hold tau in seconds and need no
            ``import_graph`` at all.
        options: ``{node name: {option: value}}``: the library's options for single nodes (a
            model whose layers differ), on top of the global ones.
        **library_options: the library's own names for what the file does not hold
            (:data:`OPTIONS`): snnTorch ``reset_mechanism`` (``"subtract"``, ``"zero"``) and
            ``reset_delay``; Sinabs ``norm_input``, ``spike_fn`` (``"MultiSpike"``,
            ``"SingleSpike"``, or the class) and ``reset_fn`` (``"MembraneSubtract"``,
            ``"MembraneReset"``, or an instance); Rockpool ``max_spikes_per_dt`` (1 or the default);
            Norse ``v_reset`` (a parameter its exporter drops: written into the LIF / CubaLIF
            nodes, a number or one per neuron). Any Dynamics field may be given too (e.g.
            ``reset="zero"``).

    Corrections: Norse: ``tau /= export_dt`` (LIF, LI, CubaLIF), CubaLIF ``w_in = tau_syn / dt``;
    Spyx: ``r = tau / dt``, ``w_in = tau_syn / dt``, a nested graph's ``input -> w_rec`` edge
    becomes ``input -> neuron``, and the columns of an Affine/Linear after a Flatten of a
    ``(C, H, W)`` tensor are put in NIR's channels-first order; Rockpool: dt is read from ``r``
    (``dt`` given must agree with it), then ``r = 1/(1 - a)`` (LIF, CubaLIF) or ``a/(1 - a)`` (LI)
    and CubaLIF ``w_in = a_s/(1 - a_s)`` with ``a = exp(-dt/tau)``. snnTorch, Sinabs and
    SpikingJelly need no correction.
    """
    graph = as_graph(graph, "import_graph")
    check_graph(graph, "import_graph")
    preset = get_preset(library)
    if preset.read_dt is not None:  # the file holds dt (Rockpool: inside r)
        dt = preset.read_dt(graph, dt)
    overrides = {k: v for k, v in library_options.items() if k not in preset.param_options}
    given = {k: v for k, v in library_options.items() if k in preset.param_options}
    per_node: dict[str, dict[str, Any]] = {}
    if isinstance(options, Mapping):
        per_node = {n: {k: v for k, v in o.items() if k in preset.param_options} for n, o in options.items()
                    if isinstance(o, Mapping)}
        options = {n: ({k: v for k, v in o.items() if k not in preset.param_options} if isinstance(o, Mapping) else o)
                   for n, o in options.items()}
    if dt is not None:
        overrides["dt"] = dt
    dyn = preset_dynamics(preset, overrides, options, graph, imported=True)
    if preset.import_fix is not None:
        graph = preset.import_fix(graph, dyn, export_dt)
    elif export_dt is not None:
        raise DynamicsError(f"import_graph(..., {library!r}): export_dt is used for Norse files only. "
                            "Fix: leave it out (pass dt= for the simulation time step)")
    if given or any(per_node.values()):
        graph = _set_params(graph, preset, given, per_node, dyn)
    stated = set(dyn.origin["stated"]) if preset.options else set()
    stated |= set(given) | {k for o in per_node.values() for k in o}
    for s in graph.plan.steps:
        note = preset.assumed.get(s.node.type)
        if note and not stated:
            lost = "; ".join(preset.lost)
            warnings.warn(LostInformationWarning(
                f"node {s.name!r} ({s.node.type}): {preset.library}'s NIR export does not hold: {lost}. "
                f"The preset assumes {note}."), stacklevel=2)
    return graph, dyn



def _set_params(graph: Graph, preset, given: Mapping[str, Any], per_node: Mapping[str, Mapping[str, Any]],
                dyn: Dynamics) -> Graph:
    """``graph`` with the parameters the library's files drop set as the user states them: ``given``
    for every node of the option's types, ``per_node`` for single nodes (a number or one value per
    neuron, in the parameter's dtype)."""
    changes: dict[str, dict[str, Any]] = {}
    for s in graph.plan.steps:
        here = {**{k: v for k, v in given.items() if s.node.type in preset.param_options[k][0]},
                **per_node.get(s.name, {})}
        for k, v in here.items():
            types, field, convert = preset.param_options[k]
            if s.node.type not in types:
                raise DynamicsError(f"import_graph(..., {preset.name!r}): options[{s.name!r}] sets {k}, which "
                                    f"{s.node.type} nodes do not have. Fix: set it on {list(types)} nodes")
            old = np.asarray(s.node.params[field])
            if v is None or isinstance(v, (bool, np.bool_, str)):
                raise ParameterError(f"import_graph(..., {preset.name!r}): {k}={v!r} for node {s.name!r} is not a "
                                     f"number or {old.shape} values. Fix: e.g. {k}=-0.1")
            try:
                value = np.broadcast_to(np.asarray(v, dtype=np.float64), old.shape)
            except (TypeError, ValueError):
                raise ParameterError(f"import_graph(..., {preset.name!r}): {k}={v!r} for node {s.name!r} is not a "
                                     f"number or {old.shape} values. Fix: e.g. {k}=-0.1") from None
            if convert is not None:
                value = convert(value, s.node.params, dyn)
            changes.setdefault(s.name, {})[field] = np.asarray(value).astype(old.dtype)
    missing = sorted(set(per_node) - {s.name for s in graph.plan.steps})
    if missing:
        raise DynamicsError(f"import_graph(..., {preset.name!r}): options names {missing}, not nodes of the graph. "
                            "Fix: use the graph's node names")
    return graph.replace_params(changes)
