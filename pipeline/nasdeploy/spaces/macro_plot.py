"""PNG drawing of a hierarchical ICDARTS architecture: the macro template (which cell feeds which, and with version 2
which normal type sits where) above the cells."""

from __future__ import annotations

from pathlib import Path

from nasdeploy.io import save_figure
from nasdeploy.spaces.cell_plot import draw_cell


def draw_template(ax, inputs: list[int], reduction: set[int], types: list[int] | None = None) -> None:
    """Stem and cells in a row; an arrow from cell k - 1 into cell k, an arc from its skip source (-1: the stem).
    With ``types`` (version 2), each normal cell is labelled with its type (``N3:t2``: cell 3 is normal type 2)."""
    layers = len(inputs)
    label = lambda k: f"R{k}" if k in reduction else f"N{k}" + (f":t{types[k]}" if types else "")  # noqa: E731
    names = ["stem"] + [label(k) for k in range(layers)] + ["out"]
    x = {i - 1: 1.2 * i for i in range(layers + 2)}  # -1: stem, 0..L-1: cells, L: classifier
    for i, name in enumerate(names):
        colour = "#9ecae1" if i == 0 else "#fdd0a2" if i == layers + 1 else "#fcbba1" if name.startswith("R") else "#c7e9c0"
        ax.text(x[i - 1], 0.0, name, ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round,pad=0.35", fc=colour, ec="black"), zorder=3)
    for k in range(layers + 1):  # the previous cell (and the last cell into the classifier)
        ax.annotate("", xy=(x[k], 0.0), xytext=(x[k - 1], 0.0), zorder=1,
                    arrowprops=dict(arrowstyle="-|>", color="#555555", shrinkA=12, shrinkB=12))
    for k, source in enumerate(inputs):
        if source == k - 1:
            continue  # cells 0 (stem twice) draw no arc
        span = k - source
        ax.annotate("", xy=(x[k], 0.15), xytext=(x[source], 0.15), zorder=1,
                    arrowprops=dict(arrowstyle="-|>", color="#d95f0e", shrinkA=10, shrinkB=10,
                                    connectionstyle=f"arc3,rad={-0.25 - 0.04 * span}"))
    ax.set_xlim(-0.8, x[layers] + 0.8)
    ax.set_ylim(-0.6, 0.4 + 0.35 * max(1, max((k - s for k, s in enumerate(inputs)), default=1)))
    ax.set_title("macro template: each cell reads the previous cell and the source its arc comes from")
    ax.axis("off")


def plot_macro(arch, path: Path | str, reduction: set[int] | None = None, title: str = "") -> Path:
    """Write ``path`` (PNG): the macro template, then the normal and reduction cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells, nodes = arch.cells, len(arch.cells.normal)
    layers = len(arch.inputs)
    reduction = reduction if reduction is not None else {layers // 3, 2 * layers // 3}
    rows = 2 + len(arch.normal_types())
    fig, axes = plt.subplots(rows, 1, figsize=(max(2.2 + 1.9 * nodes, 1.3 * layers + 2), 3.3 * rows),
                             gridspec_kw={"height_ratios": [1.0] + [1.3] * (rows - 1)})
    draw_template(axes[0], list(arch.inputs), reduction, list(arch.types) or None)
    normals = arch.normal_types()
    for t, (nodes_t, concat) in enumerate(normals):
        draw_cell(axes[1 + t], nodes_t, list(concat), f"normal cell type {t}" if len(normals) > 1 else "normal cell")
    draw_cell(axes[-1], cells.reduce, list(cells.reduce_concat), "reduction cell")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=110)
