"""PNG of a searched layer-wise architecture in the style of SE-NAS Fig. 9/10.

One box per layer: colour = depth-wise kernel size (green 3, orange 5, blue 7), height = expansion
ratio, an empty box for ``identity``, a dotted line before each stride-2 (down-sampling) layer.
DARTS genotypes are drawn as cells by ``spaces.cell_plot.plot_cells``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from nasdeploy.io import save_figure

KERNEL_COLOURS = {3: "#2ca02c", 5: "#ff7f0e", 7: "#1f77b4"}
MB_PATTERN = re.compile(r"mb(\d+)_e(\d+)")


def block_style(choice: str) -> tuple[str | None, float]:
    """(face colour or None for an empty box, relative height) of one layer choice."""
    match = MB_PATTERN.fullmatch(choice)
    if match is None:
        return None, 0.5
    kernel, expansion = int(match.group(1)), int(match.group(2))
    return KERNEL_COLOURS.get(kernel, "#7f7f7f"), expansion / 6.0


def plot_layerwise(choices: Sequence[str], strides: Sequence[int], path: Path | str, title: str = "") -> Path:
    """Draw ``choices`` (one per layer) with ``strides`` and write the PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(choices) + 1.5), 2.6))
    for i, (choice, stride) in enumerate(zip(choices, strides)):
        colour, height = block_style(choice)
        ax.add_patch(Rectangle((i + 0.1, 0.0), 0.8, height, facecolor=colour or "white", edgecolor="black",
                               fill=colour is not None, linewidth=1.0))
        if stride == 2:
            ax.axvline(i, color="black", linestyle=":", linewidth=1.0)
    ax.set_xlim(0, len(choices))
    ax.set_ylim(0, 1.15)
    ax.set_xticks([i + 0.5 for i in range(len(choices))])
    ax.set_xticklabels([str(i) for i in range(len(choices))], fontsize=7)
    ax.set_yticks([])
    ax.set_xlabel("layer (height: expansion ratio; dotted: stride 2)")
    legend = [Patch(facecolor=c, edgecolor="black", label=f"{k}x{k}") for k, c in KERNEL_COLOURS.items()]
    legend.append(Patch(facecolor="white", edgecolor="black", label="identity"))
    ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=4, fontsize=7, frameon=False)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path, dpi=120)
