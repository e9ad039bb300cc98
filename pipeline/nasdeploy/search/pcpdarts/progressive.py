"""The progressive parts of PCP-DARTS (Deevi et al. 2024 §III-C, from P-DARTS, Chen et al. 2019), as pure functions.

* ``phase_plan``: phases of growing depth and shrinking op sets (P-DARTS §3.2: 5 -> 11 -> 17 cells with
  8 -> 5 -> 3 candidate ops per edge on CIFAR-10).
* ``drop_ops``: between phases, each edge keeps its ``keep`` ops of largest mixing weight (search-space
  approximation, P-DARTS §3.2.2); the others are masked out of the next phase's mixed ops.
* ``skip_dropout_rate``: P-DARTS §3.3's operation-level dropout on skip-connect, high at the start of a phase
  and decayed over it: while α is frozen rate·(E − e − 1)/E, then rate·exp(−decay·(e − frozen)) (the schedule of
  P-DARTS' released search script, decay 0.2).
* ``end_of_search``: SS PCP-DARTS §IV-A.3 (partial-connection case): per edge the op of largest α, per node the
  two edges of largest (max_o α)·β (``search.shared.discretize`` with edge weights), then P-DARTS §3.3's cap: while the
  normal cell has more than ``max_skips`` skip-connects, the one with the smallest weight is taken out of its
  edge's candidates and the cell is discretised again (P-DARTS' ``delete_min_sk_prob``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nasdeploy.search.shared.discretize import ZeroConfig, discretize, mixing_weights
from nasdeploy.spaces.darts import node_edge_ranges

SKIP = "skip_connect"


@dataclass(frozen=True)
class Phase:
    index: int
    layers: int  # cells of the search network
    skip_dropout: float  # initial skip-connect dropout rate
    keep_after: int | None  # ops per edge kept for the next phase (None: the last phase)


def phase_plan(phase_layers, keep_ops, skip_dropout) -> list[Phase]:
    keeps = list(keep_ops) + [None]
    return [Phase(p, int(n), float(r), keeps[p]) for p, (n, r) in enumerate(zip(phase_layers, skip_dropout))]


def skip_dropout_rate(initial: float, epoch: int, epochs: int, frozen: int, decay: float) -> float:
    """P-DARTS §3.3: the skip-connect dropout rate at ``epoch`` (0-based) of a phase of ``epochs``."""
    if epoch < frozen:
        return initial * (epochs - epoch - 1) / epochs
    return initial * math.exp(-decay * (epoch - frozen))


def drop_ops(weights: torch.Tensor, mask: torch.Tensor, keep: int) -> torch.Tensor:
    """The next phase's ``[E, O]`` mask: per edge the ``keep`` present ops of largest weight (ties: lower index)."""
    new = torch.zeros_like(mask, dtype=torch.bool)
    for row in range(mask.shape[0]):
        present = [o for o in range(mask.shape[1]) if mask[row, o]]
        ranked = sorted(present, key=lambda o: (-float(weights[row, o]), o))
        new[row, ranked[:keep]] = True
    return new


@dataclass
class EndOfSearch:
    genotype: object
    removed_skips: list[dict]  # P-DARTS' skip cap: (edge, weight) of every skip-connect taken out


def end_of_search(alphas, edge_weights, masks, op_names: list[str], nodes: int, zero: ZeroConfig,
                  max_skips: int | None, stage: str = "retraining") -> EndOfSearch:
    """The final genotype from α (both cells), β's edge weights and the phase's op masks, with the skip cap."""
    masks = [m.clone() for m in masks]
    removed: list[dict] = []
    while True:
        genotype = discretize(alphas[0], alphas[1], op_names, nodes, "darts", zero, stage, 2, tuple(masks), edge_weights)
        skips = [(j, i) for j, node in enumerate(genotype.normal) for op, i in node if op == SKIP]
        if max_skips is None or len(skips) <= max_skips or SKIP not in op_names:
            return EndOfSearch(genotype, removed)
        with torch.no_grad():
            weights = mixing_weights(alphas[0].detach().float(), nodes, "darts", masks[0])
        s = op_names.index(SKIP)
        rows = node_edge_ranges(nodes)
        row = min((rows[j][i] for j, i in skips), key=lambda r: (float(weights[r, s]), r))  # the weakest skip
        masks[0][row, s] = False
        removed.append({"edge": int(row), "weight": float(weights[row, s])})
