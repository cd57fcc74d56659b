"""Reading a library's NIR export: its corrections and the Dynamics that reproduce it."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from ..dynamics import Dynamics
from ..errors import DynamicsError
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
            ``"MembraneReset"``, or an instance); Rockpool ``max_spikes_per_dt`` (1 or the default).
            Any Dynamics field may be given too (e.g. ``reset="zero"``).

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
    overrides = dict(library_options)
    if dt is not None:
        overrides["dt"] = dt
    dyn = preset_dynamics(preset, overrides, options, graph, imported=True)
    if preset.import_fix is not None:
        graph = preset.import_fix(graph, dyn, export_dt)
    elif export_dt is not None:
        raise DynamicsError(f"import_graph(..., {library!r}): export_dt is used for Norse files only. "
                            "Fix: leave it out (pass dt= for the simulation time step)")
    stated = dyn.origin["stated"] if preset.options else ()
    for s in graph.plan.steps:
        note = preset.assumed.get(s.node.type)
        if note and not stated:
            lost = "; ".join(preset.lost)
            warnings.warn(LostInformationWarning(
                f"node {s.name!r} ({s.node.type}): {preset.library}'s NIR export does not hold: {lost}. "
                f"The preset assumes {note}."), stacklevel=2)
    return graph, dyn

