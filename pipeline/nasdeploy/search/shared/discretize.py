"""Cell discretisation rules and zero configurations of ICDARTS.

* Relaxation weights (Eq. 3.1): DARTS applies a softmax per edge; I-DARTS and XDARTS apply one softmax over
  all (incoming edge, operation) pairs of a node (§4.2, Figure 4.8b/c), so the search network mixes with
  the same grouping the rule later discretises with.
* Rules (§3.1.1, §4.2): ``darts`` keeps the top-2 incoming edges per node ranked by their strongest
  selectable op and the best selectable op on each; ``idarts`` keeps the top-k (edge, op) pairs of a node
  (several ops from one input allowed); ``xdarts`` keeps as many pairs as the node has predecessors (j + 2).
* Zero configurations V0-V4 (Table 3.1): which zero op the search network mixes in, and what a selected
  zero becomes in the evaluation network and in the retraining (deployment) network.

``alpha`` tensors have shape ``[num_edges, len(op_names)]`` in the edge order of ``spaces.darts``
(node j takes inputs 0..j+1; edges enumerated node by node). An optional boolean ``mask`` of the same shape
marks the ops an edge actually has (the tournament of Algorithm 2 gives each edge set its own ops).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from nasdeploy.errors import NasDeployError
from nasdeploy.registry import Registry
from nasdeploy.spaces.darts import node_edge_ranges, num_edges  # noqa: F401  (re-exported for icdarts, budget)
# the continuous cell's weights (Eq. 3.1) live with the cell; re-exported for the search networks
from nasdeploy.spaces.darts import MASKED_ALPHA, masked_alpha, mixing_weights, node_softmax  # noqa: F401

ZERO_OPS = ("none", "random")


@dataclass(frozen=True)
class ZeroConfig:
    """Table 3.1: the zero op in the search network, and what a selected zero is in E and at retraining.

    ``None`` in ``search`` means no zero op at all; ``None`` in ``evaluation`` means a zero can never be
    selected at discretisation (V0: it is mixed in during search but ignored when discretising).
    """

    name: str
    search: str | None
    evaluation: str | None
    retraining: str | None


ZERO_CONFIGS: dict[str, ZeroConfig] = {
    "V0": ZeroConfig("V0", "none", None, None),
    "V1": ZeroConfig("V1", None, None, None),
    "V2": ZeroConfig("V2", "random", "random", "random"),
    "V3": ZeroConfig("V3", "random", "random", "none"),
    "V4": ZeroConfig("V4", "random", "none", "none"),
}


def get_zero_config(name: str) -> ZeroConfig:
    try:
        return ZERO_CONFIGS[str(name).upper()]
    except KeyError:
        raise NasDeployError(f"unknown zero configuration {name!r}; choose one of: {', '.join(ZERO_CONFIGS)}") from None


def search_op_names(op_space_ops: list[str], zero: ZeroConfig) -> list[str]:
    """The candidate ops of the search network: the op space plus the configuration's zero op (last)."""
    ops = [op for op in op_space_ops if op not in ZERO_OPS]
    return ops + [zero.search] if zero.search else ops


def stage_op(op: str, zero: ZeroConfig, stage: str) -> str:
    """The op a discretised choice becomes in ``stage`` ("evaluation" | "retraining"); zero ops are remapped."""
    if op not in ZERO_OPS:
        return op
    target = zero.evaluation if stage == "evaluation" else zero.retraining
    assert target is not None, f"{zero.name} never selects a zero op"
    return target


# ----------------------------------------------------------------------------------------------- rules
Choice = tuple[int, int]  # (op index, input index)
Rule = Callable[[torch.Tensor, torch.Tensor, int, int], list[list[Choice]]]
DISCRETIZATIONS: Registry[Rule] = Registry("discretization rule")


def _top_pairs(weights: torch.Tensor, selectable: torch.Tensor, k: int) -> list[Choice]:
    """The k (op, input) pairs of a node block with the largest weight; ties go to the lower index."""
    scored = [
        (-float(weights[i, o]), i, o)
        for i in range(weights.shape[0])
        for o in range(weights.shape[1])
        if selectable[i, o]
    ]
    scored.sort()
    return [(o, i) for _, i, o in scored[:k]]


@DISCRETIZATIONS.register("darts")
def discretize_darts(weights: torch.Tensor, selectable: torch.Tensor, nodes: int, k: int) -> list[list[Choice]]:
    """§3.1.1: per node, the top-k edges by their strongest selectable op, each with that op."""
    cell = []
    for edges in node_edge_ranges(nodes):
        ranked = []
        for i, row in enumerate(edges):
            candidates = [(float(weights[row, o]), -o) for o in range(weights.shape[1]) if selectable[row, o]]
            if candidates:
                strength, neg_op = max(candidates)
                ranked.append((-strength, i, -neg_op))
        ranked.sort()
        cell.append([(op, i) for _, i, op in ranked[:k]])
    return cell


@DISCRETIZATIONS.register("idarts")
def discretize_idarts(weights: torch.Tensor, selectable: torch.Tensor, nodes: int, k: int) -> list[list[Choice]]:
    """§4.2, Figure 4.8b: the top-k (edge, op) pairs among all incoming edges of a node."""
    return [_top_pairs(weights[e.start : e.stop], selectable[e.start : e.stop], k) for e in node_edge_ranges(nodes)]


@DISCRETIZATIONS.register("xdarts")
def discretize_xdarts(weights: torch.Tensor, selectable: torch.Tensor, nodes: int, k: int) -> list[list[Choice]]:
    """§4.2, Figure 4.8c: node j keeps as many (edge, op) pairs as it has predecessors, j + 2."""
    return [
        _top_pairs(weights[e.start : e.stop], selectable[e.start : e.stop], j + 2)
        for j, e in enumerate(node_edge_ranges(nodes))
    ]


def selectable_ops(op_names: list[str], zero: ZeroConfig, mask: torch.Tensor | None, edges: int) -> torch.Tensor:
    """Boolean ``[edges, ops]``: ops present on the edge and allowed at discretisation (V0/V1: no zero)."""
    allowed = torch.tensor([op not in ZERO_OPS or zero.evaluation is not None for op in op_names])
    allowed = allowed.expand(edges, len(op_names)).clone()
    return allowed if mask is None else allowed & mask


def discretize_cell(
    alpha: torch.Tensor,
    op_names: list[str],
    nodes: int,
    rule: str,
    zero: ZeroConfig,
    stage: str = "retraining",
    k: int = 2,
    mask: torch.Tensor | None = None,
    edge_weights: torch.Tensor | None = None,
) -> list[list[tuple[str, int]]]:
    """One cell's ``[(op, input_index), ...]`` per node under ``rule``, zero ops mapped for ``stage``.

    ``edge_weights`` ([E], PC-DARTS edge normalisation, softmax of β per node): each edge's weights are scaled
    by its edge weight before the rule ranks them, so the ``darts`` rule keeps per edge the op of largest α and
    per node the k edges of largest (max_o α)·β (PC-DARTS §3.2; SS PCP-DARTS §IV-A.3).
    """
    with torch.no_grad():
        weights = mixing_weights(alpha.detach().float(), nodes, rule, mask)
        if edge_weights is not None:
            weights = weights * edge_weights.detach().float().unsqueeze(-1)
    choices = DISCRETIZATIONS.get(rule)(weights, selectable_ops(op_names, zero, mask, alpha.shape[0]), nodes, k)
    return [[(stage_op(op_names[o], zero, stage), i) for o, i in node] for node in choices]


def discretize(
    alpha_normal: torch.Tensor,
    alpha_reduce: torch.Tensor,
    op_names: list[str],
    nodes: int,
    rule: str = "darts",
    zero: ZeroConfig = ZERO_CONFIGS["V1"],
    stage: str = "retraining",
    k: int = 2,
    masks: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
    edge_weights: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
):
    """ᾱ: a ``spaces.darts.Genotype`` from both cells' α (§3.1.1 / §4.2), edge-normalised by ``edge_weights``."""
    from nasdeploy.spaces.darts import Genotype

    concat = list(range(2, nodes + 2))
    return Genotype(
        normal=discretize_cell(alpha_normal, op_names, nodes, rule, zero, stage, k, masks[0], edge_weights[0]),
        normal_concat=concat,
        reduce=discretize_cell(alpha_reduce, op_names, nodes, rule, zero, stage, k, masks[1], edge_weights[1]),
        reduce_concat=concat,
    )


def candidate_ops(template, config) -> tuple[list[str], ZeroConfig]:
    """The search network's candidates (the template's op space + the zero op of ``config.zero_config``) and the
    zero configuration (ICDARTS, hierarchical ICDARTS, PCP-DARTS)."""
    from nasdeploy.spaces.ops import OP_SPACES

    op_space = str(template.op_space)
    if op_space not in OP_SPACES:
        raise NasDeployError(f"unknown op space {op_space!r}; choose one of: {', '.join(OP_SPACES)}")
    zero = get_zero_config(config.zero_config)
    return search_op_names(list(OP_SPACES[op_space]), zero), zero
