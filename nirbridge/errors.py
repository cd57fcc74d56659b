"""The one error hierarchy of nirbridge.

Every error nirbridge raises on bad input derives from :class:`NirBridgeError` and also from the
builtin that fits (``ValueError``, ``NotImplementedError``, ``ImportError``), so callers can catch
either. Messages name the node, the field and the fix.
"""

from __future__ import annotations

__all__ = [
    "NirBridgeError",
    "GraphError",
    "ShapeError",
    "ParameterError",
    "UnknownNodeError",
    "UnsupportedError",
    "FileFormatError",
    "DynamicsError",
    "InputError",
    "MissingDependencyError",
    "NotFoundError",
    "NonFiniteError",
    "NirBridgeWarning",
]


class NirBridgeError(Exception):
    """Base class of every error nirbridge raises on purpose."""


class GraphError(NirBridgeError, ValueError):
    """The graph's structure is invalid: edges, cycles, inputs and outputs, names."""


class ShapeError(NirBridgeError, ValueError):
    """Shapes do not fit together along an edge, or a parameter has the wrong shape."""


class ParameterError(NirBridgeError, ValueError):
    """A node parameter is missing, of the wrong kind, or not finite."""


class UnknownNodeError(NirBridgeError, NotImplementedError):
    """A node type nirbridge has no spec for."""


class UnsupportedError(NirBridgeError, NotImplementedError):
    """A valid construct that nirbridge (or the chosen backend or Dynamics) cannot run exactly."""


class FileFormatError(NirBridgeError, ValueError):
    """A NIR file that cannot be read: not HDF5, truncated, corrupt, or not a NIR graph."""


class DynamicsError(NirBridgeError, ValueError):
    """An invalid Dynamics setting, or one that cannot be honoured for a graph."""


class InputError(NirBridgeError, ValueError):
    """Input data of the wrong shape, dtype or structure for a simulation."""


class MissingDependencyError(NirBridgeError, ImportError):
    """An optional framework is needed but not installed."""


class NotFoundError(NirBridgeError, KeyError):
    """A lookup by name found nothing (a node of a plan, an entry of a report)."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0]) if self.args else ""


class NonFiniteError(NirBridgeError, FloatingPointError):
    """A simulation went NaN or infinite (``simulate(..., check_finite=True)``); ``node`` and
    ``step`` say where it happened first."""

    node: str | None = None
    step: int | None = None


class NirBridgeWarning(UserWarning):
    """Base class of nirbridge's warnings (a repair on load, an exporter quirk corrected, lost information)."""


def node_error(cls: type[NirBridgeError], node: str, field: str | None, problem: str, fix: str):
    """Build an error whose message names the node, the field and the fix."""
    where = f"node {node!r}" + (f", field {field!r}" if field else "")
    return cls(f"{where}: {problem}. Fix: {fix}")
