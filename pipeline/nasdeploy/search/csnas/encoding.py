"""θ = (θ_normal, θ_reduce): one categorical choice per edge of the cell DAG (§III-A, §IV-A).

Node j (0-based) has an edge from every earlier state i = 0..j+1 (the two cell inputs, then nodes 0..j-1), so a
cell has Σ_{i=2}^{N+1} i edges (14 for N = 4, 20 for N = 5) and θ has twice that (28 / 40, §IV-A). Each edge
takes one of the op space's ops or ``none`` (the zero op: the edge is absent), 8 choices for op space 3.

``decode`` turns θ into the DARTS space's ``Genotype``: every non-``none`` edge becomes ``(op, i)`` of node j; a
node whose edges are all ``none`` keeps one ``("none", 0)`` edge (it outputs zeros, predicted at no latency).
"""

from __future__ import annotations

from typing import Any

from nasdeploy.spaces.darts import Genotype

CELLS = ("normal", "reduce")
ZERO_OP = "none"


def edge_names(nodes: int) -> list[tuple[str, int, int]]:
    """``(cell, node, input)`` of every entry of θ, normal cell first, node by node (the DARTS edge order)."""
    return [(cell, j, i) for cell in CELLS for j in range(nodes) for i in range(j + 2)]


def param_name(cell: str, node: int, input_index: int) -> str:
    return f"{cell}_n{node}_i{input_index}"


def choices(op_names: list[str]) -> tuple[str, ...]:
    """The categorical choices of one edge: ``none`` then the op space (uniform prior: all equally likely)."""
    return (ZERO_OP, *[op for op in op_names if op != ZERO_OP])


def suggest_theta(trial, nodes: int, op_names: list[str]) -> dict[str, str]:
    """θ proposed by the study's sampler for ``trial`` (random for the startup trials, then TPE)."""
    options = choices(op_names)
    return {param_name(c, j, i): trial.suggest_categorical(param_name(c, j, i), options) for c, j, i in edge_names(nodes)}


def decode(theta: dict[str, Any], nodes: int) -> Genotype:
    concat = list(range(2, nodes + 2))
    cells = {}
    for cell in CELLS:
        cell_nodes = []
        for j in range(nodes):
            edges = [(str(theta[param_name(cell, j, i)]), i) for i in range(j + 2)]
            kept = [(op, i) for op, i in edges if op != ZERO_OP]
            cell_nodes.append(kept or [(ZERO_OP, 0)])
        cells[cell] = cell_nodes
    return Genotype(normal=cells["normal"], normal_concat=concat, reduce=cells["reduce"], reduce_concat=list(concat))


def all_zero_theta(nodes: int) -> dict[str, str]:
    """The cheapest θ: every edge ``none`` (only the stem, cell pre-processing and classifier cost anything)."""
    return {param_name(c, j, i): ZERO_OP for c, j, i in edge_names(nodes)}
