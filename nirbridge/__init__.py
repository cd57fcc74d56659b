"""nirbridge: run NIR graphs as JAX programs, PyTorch modules or a NumPy reference, with the same numbers.

``import nirbridge`` imports no framework: the JAX, Flax, Equinox and torch backends are loaded on
first use of ``to_jax``, ``to_torch``, ... (a missing framework says which extra to install).
"""

from __future__ import annotations

import importlib
from typing import Any

from . import errors, examples, presets
from .backends import available_backends, register_backend
from .compare import Report, compare
from .dynamics import Dynamics
from .errors import NirBridgeError, NirBridgeWarning
from .graph import Graph, Node
from .io import load, save
from .kernels import Kernel, register_kernel
from .nodes import NODE_SPECS, NodeSpec, register_node
from .simulate import simulate

__version__ = "0.1.0"

# public names that live in modules importing a framework: loaded on first access
_LAZY = {
    "to_jax": "nirbridge.backends.jax",
    "from_jax": "nirbridge.backends.jax",
    "to_flax": "nirbridge.backends.flax",
    "from_flax": "nirbridge.backends.flax",
    "to_equinox": "nirbridge.backends.equinox",
    "from_equinox": "nirbridge.backends.equinox",
    "to_torch": "nirbridge.backends.torch",
    "from_torch": "nirbridge.backends.torch_fx",
}

__all__ = [
    "Dynamics",
    "Graph",
    "Kernel",
    "NODE_SPECS",
    "NirBridgeError",
    "NirBridgeWarning",
    "Node",
    "NodeSpec",
    "Report",
    "available_backends",
    "compare",
    "errors",
    "examples",
    "from_equinox",
    "from_flax",
    "from_jax",
    "from_torch",
    "load",
    "presets",
    "register_backend",
    "register_kernel",
    "register_node",
    "save",
    "simulate",
    "to_equinox",
    "to_flax",
    "to_jax",
    "to_torch",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nirbridge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
