"""Render the interop outcomes into the tables of docs/presets.md.

    NIRBRIDGE_INTEROP_JSON=interop.json python -m pytest tests/interop
    python tests/interop/render_table.py interop.json docs/presets.md

Reads the JSON the suite writes (under pytest-xdist one file per worker, ``<path>.gw0``, ...,
merged here) and replaces the text between the ``<!-- interop-table:begin -->`` and
``<!-- interop-table:end -->`` markers of the page.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

BEGIN, END = "<!-- interop-table:begin -->", "<!-- interop-table:end -->"
BACKENDS = ("reference", "jax", "torch")
LIBS = ("snntorch", "norse", "sinabs", "spikingjelly", "spyx", "rockpool")
NEURONS = ("LIF", "CubaLIF", "IF", "LI")


def load(path: str) -> list[dict]:
    p = Path(path)
    files = [p] if p.exists() else []
    files += sorted(p.parent.glob(p.name + ".gw*"))
    if not files:
        raise SystemExit(f"no outcome file {path} (run the suite with NIRBRIDGE_INTEROP_JSON={path})")
    out = []
    for f in files:
        out += json.loads(f.read_text())
    return out


def _cell(rec: dict) -> str:
    if rec["status"] == "unsupported":
        return "unsupported"
    dv = f"{rec['max_dv']:.1e}"
    text = f"{rec['spike_mismatches']}/{rec['spikes']}, {dv}"
    return ("exact: " if rec["status"] == "exact" else "approximate: ") + text


def render(outcomes: list[dict]) -> str:
    by_model: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for r in outcomes:
        by_model[(r["library"], r["model"])][r["backend"]] = r
    # summary: library x neuron type
    summary: dict[tuple[str, str], set[str]] = defaultdict(set)
    notes: dict[tuple[str, str], set[str]] = defaultdict(set)
    for (lib, _model), recs in by_model.items():
        statuses = {r["status"] for r in recs.values()}
        status = "unsupported" if statuses == {"unsupported"} else ("exact" if statuses == {"exact"}
                                                                   else "approximate")
        any_rec = next(iter(recs.values()))
        types = [t for t in any_rec["node_types"] if t in NEURONS]
        recurrent = any_rec.get("recurrent", False)
        conv = any(t.startswith("Conv") for t in any_rec["node_types"])
        for t in types:
            key = (lib, t + (" + recurrent" if recurrent else "") + (" + conv" if conv else ""))
            summary[key].add(status)
            if status != "exact" and any_rec.get("note"):
                notes[key].add(any_rec["note"])
    cols = sorted({k[1] for k in summary}, key=lambda c: (c.split()[0] not in NEURONS, c))
    lines = ["| library | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for lib in LIBS:
        row = []
        for c in cols:
            st = summary.get((lib, c))
            if not st:
                row.append("-")
                continue
            parts = [s for s in ("exact", "approximate", "unsupported") if s in st]
            text = " / ".join(parts)
            if notes.get((lib, c)):
                text += " (" + "; ".join(sorted(notes[(lib, c)])) + ")"
            row.append(text)
        lines.append(f"| {lib} | " + " | ".join(row) + " |")
    lines += ["", "exact: every model of that kind gives identical spikes and voltages within 1e-5 in the "
              "reference, JAX and torch backends; approximate: a configuration whose settings the file does not "
              "hold (named in brackets) and that nirbridge cannot recover from the file alone; unsupported: the "
              "library cannot export it.", "",
              "| library | model | reference | jax | torch |", "|---|---|---|---|---|"]
    for (lib, model), recs in sorted(by_model.items(), key=lambda kv: (LIBS.index(kv[0][0]), kv[0][1])):
        cells = [_cell(recs[b]) if b in recs else "not run" for b in BACKENDS]
        lines.append(f"| {lib} | {model} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: spike mismatches / spikes compared, largest voltage difference."]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    table = render(load(argv[0]))
    page = Path(argv[1])
    text = page.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{page} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    page.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


if __name__ == "__main__":
    main(sys.argv[1:])
