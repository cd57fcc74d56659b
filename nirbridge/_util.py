"""Small helpers shared by several modules (no framework imports)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def text_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Lines of a plain-text table: the first row is the header, underlined; columns left-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def progress_bar(total: int, enabled: bool, label: str) -> Any:
    """A tqdm bar over ``total`` time steps, or None when disabled or tqdm is not installed
    (progress is a nicety; tqdm comes with the ``cli`` extra)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=f"simulate ({label})", unit="step")
