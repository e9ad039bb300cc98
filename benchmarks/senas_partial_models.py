"""How many partial models SE-NAS's expanding step (§3.4) creates on the DARTS space, by keying rule.

    PYTHONPATH=pipeline python3 benchmarks/senas_partial_models.py [--paths 200] [--preset tiny] [--seed 0]

Draws ``--paths`` uniform paths on each DARTS path space (``darts_cell``: ``two-inputs`` and the paper's ``paper``),
takes every node's incoming edges as one merged child space (normal and reduction cell), and counts the distinct
partial models those paths need when a partial model is keyed by all the child space's choices (before the keying
fix) and by its active sub-architecture only (``Supernet.partial_key``: edges off the path do not count). Prints a
table. On the paper's space an edge is off the path only when its op is ``none``, so the two counts agree there.
"""

from __future__ import annotations

import argparse
import random
from types import SimpleNamespace

from rich.console import Console
from rich.table import Table

from nasdeploy.search.shared.space_adapters import DARTS_CELLS, make_adapter, search_template_for
from nasdeploy.spaces.base import get_space
from nasdeploy.spaces.darts import node_edge_ranges


def count(cell: str, preset: str, n_paths: int, seed: int) -> tuple[int, int]:
    space = get_space("darts")
    template = space.default_template(preset)
    adapter = make_adapter("darts", search_template_for(space, template, 10, 3), template, config=SimpleNamespace(darts_cell=cell))
    paths = adapter.paths
    normal = [list(r) for r in node_edge_ranges(template.nodes)]
    groups = normal + [[paths.num_edges + layer for layer in g] for g in normal]
    rng = random.Random(seed)
    by_choices, by_active = set(), set()
    for _ in range(n_paths):
        path = paths.sample(paths.candidates, rng)
        active = paths.active(path)
        for g, layers in enumerate(groups):
            if any(active[layer] is not None for layer in layers):
                by_choices.add((g, tuple(path.choices[layer] for layer in layers)))
                by_active.add((g, tuple(active[layer] for layer in layers)))
    return len(by_choices), len(by_active)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=200)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    table = Table(title=f"distinct partial models, {args.paths} paths, per-node child spaces, {args.preset} template")
    for column in ("darts_cell", "keyed by all choices", "keyed by the active sub-architecture"):
        table.add_column(column)
    for cell in DARTS_CELLS:
        before, after = count(cell, args.preset, args.paths, args.seed)
        table.add_row(cell, str(before), str(after))
    Console().print(table)


if __name__ == "__main__":
    main()
