"""The continuous search network S of ICDARTS: DARTS cells whose edges are mixed ops (Eq. 3.1).

Every edge (i, j) holds all candidate ops of the search op list (or the subset its mask allows, for the
tournament of Algorithm 2) and outputs their weighted sum; node j sums its incoming edges
(x_j = Σ_i ō^(i,j)(x_i)); the cell concatenates its intermediate nodes. The weights come from
``discretize.mixing_weights``: a softmax per edge for the DARTS rule (Eq. 3.1), one softmax over all
incoming (edge, op) pairs of a node for I-DARTS / XDARTS (§4.2). Stem, cell preprocessing and classifier
are the same building blocks as the discrete network (``spaces.darts``); shapes come from ``cell_layouts``.
"""

from __future__ import annotations

import torch
from torch import nn

from nasdeploy.search.discretize import masked_alpha, mixing_weights, node_edge_ranges, num_edges


class MixedOp(nn.Module):
    """Eq. 3.1: ō(x) = Σ_o w_o · o(x) over the ops present on this edge."""

    def __init__(self, op_names: list[str], present: list[bool], c: int, stride: int):
        super().__init__()
        from nasdeploy.spaces.ops import build_op

        self.index = [o for o, keep in enumerate(present) if keep]
        self.ops = nn.ModuleList(build_op(op_names[o], c, c, stride) for o in self.index)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(weights[o] * op(x) for o, op in zip(self.index, self.ops))  # Eq. 3.1


class SearchCell(nn.Module):
    """A continuous cell: preprocess both inputs, mixed edges into each node, concatenate the nodes."""

    def __init__(self, layout, nodes: int, op_names: list[str], mask: torch.Tensor):
        super().__init__()
        from nasdeploy.spaces.darts import CellPreprocess

        self.reduction = bool(layout.reduction)
        self.nodes = nodes
        self.preprocess = CellPreprocess(layout)
        self.edges = nn.ModuleList()
        for edges in node_edge_ranges(nodes):
            for i, row in enumerate(edges):
                stride = 2 if self.reduction and i < 2 else 1
                self.edges.append(MixedOp(op_names, mask[row].tolist(), layout.c, stride))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = list(self.preprocess(s0, s1))
        for edges in node_edge_ranges(self.nodes):
            states.append(sum(self.edges[e](states[i], weights[e]) for i, e in enumerate(edges)))  # x_j = Σ_i ō(x_i)
        return torch.cat(states[2:], dim=1)


class SearchNetwork(nn.Module):
    """S: stem, continuous normal/reduction cells laid out by ``cell_layouts(template)``, classifier.

    ``alpha_normal`` / ``alpha_reduce`` are ``[num_edges, len(op_names)]`` parameters (α), initialised
    as 1e-3·N(0, 1) as in DARTS; ``weight_parameters()`` are w_S (everything else).
    """

    def __init__(self, template, op_names: list[str], rule: str = "darts", masks=(None, None)):
        super().__init__()
        from nasdeploy.spaces.darts import Classifier, cell_layouts, make_stem

        self.op_names, self.rule, self.nodes = list(op_names), rule, template.nodes
        edges = num_edges(self.nodes)
        full = torch.ones(edges, len(op_names), dtype=torch.bool)
        mask_n = full if masks[0] is None else masks[0].bool()
        mask_r = full if masks[1] is None else masks[1].bool()
        self.register_buffer("mask_normal", mask_n.clone(), persistent=False)
        self.register_buffer("mask_reduce", mask_r.clone(), persistent=False)
        self.stem = make_stem(template)
        layouts = cell_layouts(template)
        self.cells = nn.ModuleList(
            SearchCell(layout, self.nodes, self.op_names, mask_r if layout.reduction else mask_n) for layout in layouts
        )
        self.classifier = Classifier(layouts[-1].c_out, template.num_classes)
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(edges, len(op_names)))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(edges, len(op_names)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha_normal, self.alpha_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def masked_alphas(self) -> tuple[torch.Tensor, torch.Tensor]:
        """α with absent ops pushed to -1e4 (zero weight, zero gradient)."""
        return masked_alpha(self.alpha_normal, self.mask_normal), masked_alpha(self.alpha_reduce, self.mask_reduce)

    def mixing_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            mixing_weights(self.alpha_normal, self.nodes, self.rule, self.mask_normal),
            mixing_weights(self.alpha_reduce, self.nodes, self.rule, self.mask_reduce),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights_normal, weights_reduce = self.mixing_weights()
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, weights_reduce if cell.reduction else weights_normal)
        return self.classifier(s1)
