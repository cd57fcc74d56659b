r"""Library presets: how each SNN library simulates the NIR files it writes.

A NIR file holds no time step, integration scheme, reset rule, spike test or update order, so
the same file means a different model in each library. Each :class:`Preset` names the
:class:`~nirbridge.dynamics.Dynamics` that reproduces one library's own simulation of a graph it
exported (spikes identical, voltages to float rounding; the interop test suite checks it against
the real libraries), and documents every choice:

>>> import nirbridge as nb
>>> nb.Dynamics.preset("snntorch")  # doctest: +NORMALIZE_WHITESPACE
Dynamics(dt=0.0001, method='euler', reset='subtract', threshold='>', synapse='current_first',
         reset_timing='late', recurrent_start='rest')
>>> print(get_preset("norse").notes["initial state"])
v = v_leak (Norse's LIFBoxCell / LIFCell start at v_leak); the current at 0

Some exporters also write parameters that do not mean what NIR says (Norse 1.1.0 writes
``tau = dt * tau_mem``; Spyx writes ``r = beta``). nirbridge never corrects those silently:
:func:`import_graph` applies a library's corrections on request and warns once per node
(:class:`ExporterQuirkWarning`) naming the node and what it changed, and once per node
(:class:`LostInformationWarning`) for what the file cannot hold and the preset assumes.
:func:`export_graph` writes a graph for another library's importer where that library's
semantics can reproduce it, and raises :class:`~nirbridge.errors.UnsupportedError` where not.

Each library lives in one module of this package (``snntorch``, ``norse``, ``sinabs``,
``spikingjelly``, ``spyx``, ``rockpool``, and ``nirspec`` for the specification itself) that
builds one :class:`Preset` (its settings and their documentation, its own option names, its
exporter's signature and corrections, its importer's reading) and :func:`register`\ s it. Adding
a library is adding one such module (or calling :func:`register` from your own code).
"""

from __future__ import annotations

from ..dynamics import set_preset_lookup

# isort: off
# registration order is the order of names(): the specification first, then the libraries
from . import nirspec, snntorch, norse, sinabs, spikingjelly, spyx, rockpool  # noqa: F401
# isort: on
from .base import (
                   ASPECTS,
                   IMPORTERS,
                   NEURONS,
                   OPTIONS,
                   PRESETS,
                   SPIKING,
                   ExporterQuirkWarning,
                   ExporterSignatureWarning,
                   LostInformationWarning,
                   Preset,
                   get_preset,
                   make_preset,
                   names,
                   option_settings,
                   preset_dynamics,
                   register,
                   unregister,
)
from .checks import check_signatures
from .exporting import export_graph
from .importing import import_graph

__all__ = ["ASPECTS", "IMPORTERS", "NEURONS", "OPTIONS", "PRESETS", "SPIKING", "ExporterQuirkWarning",
           "ExporterSignatureWarning", "LostInformationWarning", "Preset", "check_signatures", "export_graph",
           "get_preset", "import_graph", "make_preset", "names", "option_settings", "preset_dynamics", "register",
           "unregister"]

set_preset_lookup(get_preset, check_signatures)
