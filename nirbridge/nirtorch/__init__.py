"""A drop-in NIRTorch: the ``nirtorch`` 2.x interface, run by nirbridge, with NIRTorch's defects fixed.

A library switches with one line before it imports ``nirtorch``::

    import nirbridge.nirtorch; nirbridge.nirtorch.install()

after which ``import nirtorch`` (and ``nirtorch.graph``, ``nirtorch.torch_tracer``, ...) gives these
modules. Or import the functions directly: ``from nirbridge.nirtorch import nir_to_torch, torch_to_nir``.
See ``docs/library-developers.md`` for what differs from NIRTorch 2.6.
"""

from __future__ import annotations

import sys

from . import from_nir, graph, graph_executor, graph_utils, nir_interpreter, to_nir, torch_tracer, utils  # noqa: F401
from .from_nir import load
from .graph import extract_torch_graph
from .nir_interpreter import DEFAULT_MAP, NIRTorchGraph, nir_to_torch
from .to_nir import extract_nir_graph
from .torch_tracer import torch_to_nir

__version__ = version = "2.6"  # the NIRTorch interface this module stands in for

__all__ = ["nir_to_torch", "torch_to_nir", "load", "extract_nir_graph", "extract_torch_graph",
           "NIRTorchGraph", "DEFAULT_MAP", "install", "uninstall", "installed"]

SUBMODULES = ("from_nir", "graph", "graph_executor", "graph_utils", "nir_interpreter", "to_nir",
              "torch_tracer", "utils")

_saved: dict | None = None


def install() -> None:
    """Register this package as ``nirtorch`` (and ``nirtorch.<submodule>``) in ``sys.modules``.

    Call it before the library imports ``nirtorch``; a library imported earlier keeps the module it
    bound. :func:`uninstall` puts the previous entries back."""
    global _saved
    if _saved is not None:
        return
    keys = ["nirtorch"] + [f"nirtorch.{s}" for s in SUBMODULES]
    _saved = {k: sys.modules.get(k) for k in keys}
    me = sys.modules[__name__]
    sys.modules["nirtorch"] = me
    for s in SUBMODULES:
        sys.modules[f"nirtorch.{s}"] = getattr(me, s)


def uninstall() -> None:
    """Undo :func:`install`: restore (or remove) the ``nirtorch`` entries of ``sys.modules``."""
    global _saved
    if _saved is None:
        return
    for k, v in _saved.items():
        if v is None:
            sys.modules.pop(k, None)
        else:
            sys.modules[k] = v
    _saved = None


def installed() -> bool:
    """Whether :func:`install` is in effect."""
    return _saved is not None



