"""Name helpers shared by the legacy entry points."""

__all__ = ["sanitize_name"]


def sanitize_name(name: str) -> str:
    """A NIR node name as a torch child name: dots become underscores."""
    return str(name).replace(".", "_")
