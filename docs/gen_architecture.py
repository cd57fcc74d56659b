"""Draw docs/img/architecture.png: the layers of nirbridge and what flows between them.

    python docs/gen_architecture.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).parent / "img" / "architecture.png"

# (x, y, width, height, title, detail, colour)
BOXES = {
    "in": (0.3, 8.6, 9.4, 0.9, "What users hand over",
           ".nir file  ·  nir.NIRGraph (numpy or torch values)  ·  torch / JAX / Flax / Equinox module", "#eeeeee"),
    "io": (0.3, 7.2, 4.4, 1.0, "io · presets",
           "load (bounded HDF5 walk), save (atomic)\nimport_graph(path, library, **its options)", "#dbe9f6"),
    "fx": (5.3, 7.2, 4.4, 1.0, "from_torch · from_jax · nirtorch",
           "torch.fx trace, module maps,\nNIRTorch's interface", "#dbe9f6"),
    "graph": (0.3, 5.6, 5.6, 1.1, "Graph  (graph.py, nodes.py)",
              "immutable, validated, bit-exact to and from NIR;\n"
              "NodeSpec per type; the plan (order, recurrent edges)", "#c6dbef"),
    "dyn": (6.3, 5.6, 3.4, 1.1, "Dynamics",
            "dt, method, reset, threshold,\nper type / per node; presets", "#c6dbef"),
    "kern": (0.3, 4.0, 4.4, 1.1, "kernels/",
             "one factory per node type:\nprepare · init · step · state · layout", "#fde0c5"),
    "prog": (5.3, 4.0, 4.4, 1.1, "program.py",
             "Program = one Kernel per node;\nrun_loop: THE time loop, recording", "#fde0c5"),
    "ref": (0.3, 2.2, 2.9, 1.2, "reference",
            "NumpyOps,\nPython loop:\nthe oracle", "#d9f0d3"),
    "jax": (3.55, 2.2, 2.9, 1.2, "jax  (+ flax, equinox)",
            "JaxOps, one jitted lax.scan,\ncompiled-program cache,\nsharding, chunked runs", "#d9f0d3"),
    "torch": (6.8, 2.2, 2.9, 1.2, "torch",
              "TorchOps, nn.Module,\nPython loop or\ncompiled chunks", "#d9f0d3"),
    "users": (0.3, 0.5, 9.4, 1.0, "What users call",
              "simulate · compare · cli · to_jax / to_flax / to_equinox / to_torch · stream · parallel",
              "#eeeeee"),
}

ARROWS = [
    ("in", "io"), ("in", "fx"), ("io", "graph"), ("fx", "graph"), ("graph", "kern"), ("dyn", "prog"),
    ("graph", "prog"), ("prog", "ref"), ("prog", "jax"), ("prog", "torch"),
    ("ref", "users"), ("jax", "users"), ("torch", "users"),
]


# drawn side by side: right edge of the first to the left edge of the second
SIDEWAYS = [("kern", "prog")]


def centre(name: str, side: str) -> tuple[float, float]:
    x, y, w, h = BOXES[name][:4]
    return {"bottom": (x + w / 2, y), "top": (x + w / 2, y + h), "right": (x + w, y + h / 2),
            "left": (x, y + h / 2)}[side]


def main() -> None:
    fig, ax = plt.subplots(figsize=(10, 10))
    ax.set_xlim(0, 10)
    ax.set_ylim(0.2, 9.8)
    ax.axis("off")
    for x, y, w, h, title, detail, colour in BOXES.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                    facecolor=colour, edgecolor="#555555", linewidth=1.2))
        ax.text(x + w / 2, y + h - 0.2, title, ha="center", va="top", fontsize=11, weight="bold")
        ax.text(x + w / 2, y + h - 0.5, detail, ha="center", va="top", fontsize=8.5, color="#333333",
                linespacing=1.3)
    for a, b in ARROWS:
        ax.add_patch(FancyArrowPatch(centre(a, "bottom"), centre(b, "top"), arrowstyle="-|>",
                                     mutation_scale=14, color="#444444", linewidth=1.1,
                                     shrinkA=2, shrinkB=2))
    for a, b in SIDEWAYS:
        ax.add_patch(FancyArrowPatch(centre(a, "right"), centre(b, "left"), arrowstyle="-|>",
                                     mutation_scale=14, color="#444444", linewidth=1.1,
                                     shrinkA=2, shrinkB=2))
    ax.text(5, 9.7, "nirbridge: one graph, one kernel per node, one time loop, three backends",
            ha="center", va="center", fontsize=12.5, weight="bold")
    fig.savefig(OUT, dpi=110, bbox_inches="tight")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
