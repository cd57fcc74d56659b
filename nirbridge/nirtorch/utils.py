"""Name helpers shared by the legacy entry points."""

from ..errors import NirBridgeError

__all__ = ["sanitize_name", "CallError"]


class CallError(NirBridgeError, TypeError):
    """A module called with arguments of the wrong kind (a ``TypeError`` too)."""


def sanitize_name(name: str) -> str:
    """A NIR node name as a torch child name: dots become underscores."""
    return str(name).replace(".", "_")
