"""Example NIR graphs shipped with nirbridge (from the NIR paper; see README.md here)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["path", "names"]

_HERE = Path(__file__).parent


def names() -> list[str]:
    """Names of the shipped example graphs."""
    return sorted(p.stem for p in _HERE.glob("*.nir"))


def path(name: str) -> Path:
    """The path of a shipped example graph, e.g. ``path("braille_noDelay_bias_zero")``."""
    p = _HERE / f"{name.removesuffix('.nir')}.nir"
    if not p.is_file():
        raise FileNotFoundError(f"no example graph {name!r}; shipped: {names()}")
    return p
