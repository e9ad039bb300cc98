"""PNG drawing of a genotype's normal and reduction cells: nodes and edges labelled with their operations."""

from __future__ import annotations

from pathlib import Path

from nasdeploy.io import save_figure


def _positions(nodes: int) -> dict[str, tuple[float, float]]:
    pos = {"c_{k-2}": (0.0, 1.0), "c_{k-1}": (0.0, -1.0)}
    for j in range(nodes):
        pos[str(j)] = (1.5 + 1.5 * j, 0.9 if j % 2 == 0 else -0.9)
    pos["c_{k}"] = (1.5 + 1.5 * nodes, 0.0)
    return pos


def _input_name(i: int) -> str:
    return "c_{k-2}" if i == 0 else "c_{k-1}" if i == 1 else str(i - 2)


def draw_cell(ax, cell: list[list[tuple[str, int]]], concat: list[int], title: str) -> None:
    """Draw one cell on ``ax``: inputs left, intermediate nodes, concatenated output right."""
    nodes = len(cell)
    pos = _positions(nodes)
    for name, (x, y) in pos.items():
        colour = "#9ecae1" if name.startswith("c_{k-") else "#fdd0a2" if name == "c_{k}" else "#c7e9c0"
        ax.text(x, y, f"${name}$" if name.startswith("c_") else name, ha="center", va="center", fontsize=10,
                bbox=dict(boxstyle="round,pad=0.4", fc=colour, ec="black"), zorder=3)
    for j, node in enumerate(cell):
        seen: dict[int, int] = {}
        for op, i in node:
            repeat = seen.get(i, 0)
            seen[i] = repeat + 1
            src, dst = pos[_input_name(i)], pos[str(j)]
            rad = 0.15 + 0.25 * repeat  # several ops from one input (I-DARTS/XDARTS) fan out
            ax.annotate("", xy=dst, xytext=src, zorder=1,
                        arrowprops=dict(arrowstyle="-|>", color="#555555", shrinkA=14, shrinkB=14,
                                        connectionstyle=f"arc3,rad={rad}"))
            dx, dy = dst[0] - src[0], dst[1] - src[1]
            # midpoint of matplotlib's arc3 Bézier: chord midpoint + rad/2 · (dy, -dx)
            mx, my = (src[0] + dst[0]) / 2 + 0.5 * rad * dy, (src[1] + dst[1]) / 2 - 0.5 * rad * dx
            ax.text(mx, my, op, fontsize=7, ha="center", va="center", zorder=2,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
    for j in concat:
        src, dst = pos[str(j - 2)], pos["c_{k}"]
        ax.annotate("", xy=dst, xytext=src, zorder=1,
                    arrowprops=dict(arrowstyle="-|>", color="#bbbbbb", shrinkA=14, shrinkB=14))
    ax.set_title(title)
    ax.set_xlim(-0.8, pos["c_{k}"][0] + 0.8)
    ax.set_ylim(-1.8, 1.8)
    ax.axis("off")


def plot_cells(genotype, path: Path | str, title: str = "") -> Path:
    """Write ``path`` (PNG) with the normal cell above the reduction cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = len(genotype.normal)
    fig, axes = plt.subplots(2, 1, figsize=(2.2 + 1.9 * nodes, 7.0))
    draw_cell(axes[0], genotype.normal, list(genotype.normal_concat), "normal cell")
    draw_cell(axes[1], genotype.reduce, list(genotype.reduce_concat), "reduction cell")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=110)
