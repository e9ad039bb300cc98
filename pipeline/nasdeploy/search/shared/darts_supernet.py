"""The continuous DARTS search network: one module for every DARTS-space strategy (ICDARTS, PC-DARTS, ...).

Every edge (i, j) holds all candidate ops of the search op list (or the subset its mask allows, for the
tournament of Algorithm 2) and outputs their weighted sum (ICDARTS Eq. 3.1); node j sums its incoming edges
(x_j = Σ_i ō^(i,j)(x_i)); the cell concatenates its intermediate nodes. The weights come from
``discretize.mixing_weights``: a softmax per edge for the DARTS rule (Eq. 3.1), one softmax over all
incoming (edge, op) pairs of a node for I-DARTS / XDARTS (§4.2). The cell forward, the edge order, stem,
cell preprocessing and classifier are those of the discrete network (``spaces.darts``: ``cell_forward``,
``node_edge_ranges``, ``cell_layouts``).

Two PC-DARTS (Xu et al. 2020) options, both off by default (then S is exactly ICDARTS' network):

* ``partial_channels = K`` (§3.1): a mixed op runs its ops on the first C/K channels only; the other
  channels bypass the edge (max-pooled on a stride-2 edge), the two parts are concatenated and channel-shuffled
  with K groups, so the next edge sees other channels.
* ``edge_normalisation`` (§3.2): each edge has a weight β; node j weights its incoming edges by a softmax of β
  over them, x_j = Σ_i softmax(β_j)_i · ō^(i,j)(x_i). β is an architecture parameter next to α.

With a template whose ``auxiliary`` is on and ``aux_head`` is ``cdarts``, S carries §3.1.1's heads on both
reduction cells (``spaces.heads.ReductionHeads``) and in training mode returns ``CombinedOutput(logits,
combined)``; any other template gives the plain S (no DARTS tower: S never had one).

Two options for SS PCP-DARTS (Deevi et al. 2024, ``search.pcpdarts``), also off by default:

* ``random_channels`` (§III-B): the C/K channels that enter the ops are sampled at random at every forward in
  training (the sampling mask S_{i,j} of the paper's f^PC), not the first C/K; the ops' outputs and the
  untouched rest are concatenated and channel-shuffled as above. In eval mode the first C/K are taken.
* skip-connect dropout (P-DARTS §3.3, ``set_skip_dropout``): in training, dropout of rate p on the output of
  every stride-1 ``skip_connect`` of a mixed op, a search-space regulariser against early skip dominance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nasdeploy.errors import NasDeployError
from nasdeploy.search.shared.discretize import masked_alpha, mixing_weights, node_softmax
from nasdeploy.spaces.blocks import channel_shuffle, half_size_max_pool
from nasdeploy.spaces.heads import reduction_heads
from nasdeploy.spaces.darts import (
    CellPreprocess,
    Classifier,
    all_node_inputs,
    cell_forward,
    cell_layouts,
    edge_index,
    edge_stride,
    make_stem,
    node_edge_ranges,
    num_edges,
)
from nasdeploy.spaces.ops import build_op


class MixedOp(nn.Module):
    """Eq. 3.1: ō(x) = Σ_o w_o · o(x) over the ops present on this edge, on 1/K of the channels (PC-DARTS)."""

    def __init__(self, op_names: list[str], present: list[bool], c: int, stride: int, partial_channels: int = 1,
                 random_channels: bool = False):
        super().__init__()
        if partial_channels < 1 or c % partial_channels:
            raise NasDeployError(
                f"partial channels K = {partial_channels} does not divide the {c} channels of a cell; "
                "choose a K that divides the template's C (e.g. 2 or 4)"
            )
        self.stride = stride
        self.partial_channels = partial_channels
        self.random_channels = random_channels
        self.skip_dropout = 0.0  # P-DARTS' dropout on skip_connect outputs (``SearchNetwork.set_skip_dropout``)
        c_ops = c // partial_channels
        self.index = [o for o, keep in enumerate(present) if keep]
        self.ops = nn.ModuleList(build_op(op_names[o], c_ops, c_ops, stride) for o in self.index)
        self.is_skip = [op_names[o] == "skip_connect" and stride == 1 for o in self.index]

    def op_output(self, slot: int, x: torch.Tensor) -> torch.Tensor:
        h = self.ops[slot](x)
        if self.is_skip[slot] and self.training and self.skip_dropout > 0:
            h = F.dropout(h, self.skip_dropout)  # P-DARTS §3.3: operation-level dropout on skip-connect
        return h

    def mix(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(weights[o] * self.op_output(slot, x) for slot, o in enumerate(self.index))  # Eq. 3.1

    def channel_choice(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(channels into the ops, channels that bypass them): the first C/K, or a random C/K in training."""
        c, c_ops = x.shape[1], x.shape[1] // self.partial_channels
        if not (self.random_channels and self.training):
            return x[:, :c_ops], x[:, c_ops:]
        order = torch.randperm(c, device=x.device)  # S_{i,j}: a fresh sampling mask at every forward (§III-B)
        return x[:, order[:c_ops]], x[:, order[c_ops:]]

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        k = self.partial_channels
        if k == 1:
            return self.mix(x, weights)
        through, bypass = self.channel_choice(x)  # PC-DARTS: only C/K channels enter the ops
        if self.stride == 2:
            bypass = half_size_max_pool(bypass)
        return channel_shuffle(torch.cat([self.mix(through, weights), bypass], dim=1), k)


class SearchCell(nn.Module):
    """A continuous cell: preprocess both inputs, mixed edges into each node, concatenate the nodes."""

    def __init__(self, layout, nodes: int, op_names: list[str], mask: torch.Tensor, partial_channels: int = 1,
                 random_channels: bool = False):
        super().__init__()
        self.reduction = bool(layout.reduction)
        self.nodes = nodes
        self.preprocess = CellPreprocess(layout)
        self.edges = nn.ModuleList()
        for edges in node_edge_ranges(nodes):
            for i, row in enumerate(edges):
                self.edges.append(MixedOp(op_names, mask[row].tolist(), layout.c, edge_stride(layout, i), partial_channels,
                                          random_channels))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                edge_weights: torch.Tensor | None = None) -> torch.Tensor:
        """``weights``: [E, ops] mixing weights; ``edge_weights``: [E] edge-normalisation weights or None."""

        def edge_output(j: int, slot: int, i: int, x: torch.Tensor) -> torch.Tensor:
            e = edge_index(j, i)
            h = self.edges[e](x, weights[e])  # ō^(i,j)(x_i)
            return h if edge_weights is None else edge_weights[e] * h  # softmax(β_j)_i · ō^(i,j)(x_i)

        return cell_forward(s0, s1, self.preprocess, all_node_inputs(self.nodes), edge_output)


class SearchNetwork(nn.Module):
    """S: stem, continuous normal/reduction cells laid out by ``cell_layouts(template)``, classifier.

    ``alpha_normal`` / ``alpha_reduce`` are ``[num_edges, len(op_names)]`` parameters (α), initialised
    as 1e-3·N(0, 1) as in DARTS; with ``edge_normalisation``, ``beta_normal`` / ``beta_reduce`` are
    ``[num_edges]`` parameters (β, same initialisation as PC-DARTS). ``weight_parameters()`` are w_S
    (everything else). ``random_channels``: random partial-channel sampling (module docstring).
    """

    def __init__(self, template, op_names: list[str], rule: str = "darts", masks=(None, None), *,
                 partial_channels: int = 1, edge_normalisation: bool = False, random_channels: bool = False):
        super().__init__()
        self.op_names, self.rule, self.nodes = list(op_names), rule, template.nodes
        self.partial_channels, self.edge_normalisation = partial_channels, edge_normalisation
        edges = num_edges(self.nodes)
        full = torch.ones(edges, len(op_names), dtype=torch.bool)
        mask_n = full if masks[0] is None else masks[0].bool()
        mask_r = full if masks[1] is None else masks[1].bool()
        self.register_buffer("mask_normal", mask_n.clone(), persistent=False)
        self.register_buffer("mask_reduce", mask_r.clone(), persistent=False)
        self.stem = make_stem(template)
        layouts = cell_layouts(template)
        self.cells = nn.ModuleList(
            SearchCell(layout, self.nodes, self.op_names, mask_r if layout.reduction else mask_n, partial_channels,
                       random_channels)
            for layout in layouts
        )
        self.classifier = Classifier(layouts[-1].c_out, template.num_classes)
        self.aux_heads = reduction_heads(template, layouts)  # §3.1.1's heads, in S as in E
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(edges, len(op_names)))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(edges, len(op_names)))
        if edge_normalisation:
            self.beta_normal = nn.Parameter(1e-3 * torch.randn(edges))
            self.beta_reduce = nn.Parameter(1e-3 * torch.randn(edges))

    def arch_parameters(self) -> list[nn.Parameter]:
        betas = [self.beta_normal, self.beta_reduce] if self.edge_normalisation else []
        return [self.alpha_normal, self.alpha_reduce] + betas

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

    def edge_weights(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """PC-DARTS edge normalisation: softmax of β over each node's incoming edges ([E] each), or Nones."""
        if not self.edge_normalisation:
            return None, None
        return node_softmax(self.beta_normal, self.nodes), node_softmax(self.beta_reduce, self.nodes)

    def set_skip_dropout(self, p: float) -> None:
        """P-DARTS' skip-connect dropout rate for every mixed op (0 switches it off)."""
        for module in self.modules():
            if isinstance(module, MixedOp):
                module.skip_dropout = float(p)

    def features(self, x: torch.Tensor, taps: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """The pooled last-cell features the classifier's linear layer reads (a projector's input); ``taps``, if
        given, receives the output of every cell (the reduction cells' feed §3.1.1's heads)."""
        weights_normal, weights_reduce = self.mixing_weights()
        edges_normal, edges_reduce = self.edge_weights()
        s0 = s1 = self.stem(x)
        for index, cell in enumerate(self.cells):
            if cell.reduction:
                s0, s1 = s1, cell(s0, s1, weights_reduce, edges_reduce)
            else:
                s0, s1 = s1, cell(s0, s1, weights_normal, edges_normal)
            if taps is not None:
                taps[index] = s1
        return torch.flatten(self.classifier.pool(s1), 1)

    def forward(self, x: torch.Tensor):
        if self.aux_heads is None or not self.training:
            return self.classifier.linear(self.features(x))  # = Classifier.forward: pool, flatten, linear
        taps: dict[int, torch.Tensor] = {}
        logits = self.classifier.linear(self.features(x, taps))
        return self.aux_heads(logits, taps)  # §3.1.1: CombinedOutput(logits, mean of heads and logits)
