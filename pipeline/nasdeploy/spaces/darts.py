"""The DARTS cell space (Liu et al. 2019; CDARTS/ICDARTS evaluation networks).

A network is a 3x3 stem, ``layers`` cells with reduction cells at ``layers // 3`` and ``2 * layers // 3``,
and a classifier. A cell takes the outputs of the two previous cells (inputs 0, 1), computes ``nodes``
intermediate nodes, each the sum of ops on its incoming edges, and concatenates them.

Edge order (search α rows, Algorithm 3): node ``j`` (0-based) has edges from inputs ``0..j+1``, enumerated node
by node, so ``edge_index(j, i) = Σ_{m<j}(m + 2) + i`` and 4 nodes have 14 edges. This module is the one place that
knows it (``edge_index``, ``num_edges``, ``node_edge_ranges``, ``locate_edge``, ``candidate_inputs``).

``cell_forward`` is the one cell forward of every DARTS-space network: the discrete ``DartsCell`` here, the
continuous ``search.shared.darts_supernet.SearchCell`` and the SE-NAS single-path ``search.shared.space_adapters.DartsSupernet``
differ only in what an edge computes.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable, Sequence

import torch
from torch import nn

from nasdeploy.errors import NasDeployError
from nasdeploy.spaces import blocks
from nasdeploy.spaces.base import SPACES, OpInstance, SearchSpace
from nasdeploy.spaces.blocks import FactorizedReduce, Identity, ReLUConvBN
from nasdeploy.spaces.heads import AUX_HEADS, reduction_heads, wants_darts_tower
from nasdeploy.spaces.ops import MERGED_WORK_FEATURES, OPS, build_op, op_space_names, shared_work

FIXED_PARTS = ("stem", "preprocess_1x1", "factorized_reduce", "classifier")


# ---- template and genotype ----------------------------------------------------------------------------

@dataclass
class DartsTemplate:
    """The skeleton a genotype is placed in (DARTS CIFAR evaluation network)."""

    C: int = 16
    layers: int = 8
    nodes: int = 4
    stem_multiplier: int = 3
    num_classes: int = 10
    in_channels: int = 3
    input_size: int = 32
    op_space: str = "3"
    auxiliary: bool = True
    drop_path: float = 0.0
    aux_head: str = "darts"  # the head ``auxiliary`` switches on: darts (tower) | cdarts (§3.1.1) | none (spaces.heads)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def reduction_indices(self) -> tuple[int, int]:
        return (self.layers // 3, 2 * self.layers // 3)


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"C": 36, "layers": 20},  # DARTS/CDARTS CIFAR evaluation network
    "paper-mo": {"C": 36, "layers": 20},  # the same network for multiobjective ICDARTS (Table 4.7)
    "cpu": {"C": 16, "layers": 8},
    "tiny": {"C": 8, "layers": 5},
}


Node = list[tuple[str, int]]


@dataclass
class Genotype:
    """Per intermediate node its incoming edges ``(op, input index)``; inputs 0, 1 are the cell inputs."""

    normal: list[Node]
    normal_concat: list[int]
    reduce: list[Node]
    reduce_concat: list[int]

    def to_json(self) -> dict[str, Any]:
        return {
            "normal": [[[op, int(i)] for op, i in node] for node in self.normal],
            "normal_concat": [int(i) for i in self.normal_concat],
            "reduce": [[[op, int(i)] for op, i in node] for node in self.reduce],
            "reduce_concat": [int(i) for i in self.reduce_concat],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Genotype":
        try:
            genotype = cls(
                normal=[[(str(op), int(i)) for op, i in node] for node in d["normal"]],
                normal_concat=[int(i) for i in d["normal_concat"]],
                reduce=[[(str(op), int(i)) for op, i in node] for node in d["reduce"]],
                reduce_concat=[int(i) for i in d["reduce_concat"]],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NasDeployError(
                f"genotype is malformed ({exc!r}); expected {{'normal': [[[op, input], ...], ...], 'normal_concat': [...], "
                "'reduce': ..., 'reduce_concat': ...}"
            ) from None
        genotype.validate()
        return genotype

    def validate(self) -> None:
        for kind, cell, concat in (("normal", self.normal, self.normal_concat), ("reduce", self.reduce, self.reduce_concat)):
            validate_cell(kind, cell, concat)


def validate_cell(kind: str, cell: list[Node], concat: list[int]) -> None:
    if not cell:
        raise NasDeployError(f"genotype {kind} cell has no nodes; give at least one node")
    for j, node in enumerate(cell):
        if not node:
            raise NasDeployError(f"genotype {kind} node {j} has no inputs; give each node at least one (op, input)")
        for op, i in node:
            if op not in OPS:
                raise NasDeployError(f"genotype {kind} node {j} uses unknown op {op!r}; choose one of: {', '.join(OPS.names())}")
            if i not in candidate_inputs(j):
                raise NasDeployError(f"genotype {kind} node {j} has input {i}; node {j} can only take inputs 0..{j + 1}")
    if not concat:
        raise NasDeployError(f"genotype {kind}_concat is empty; list the nodes to concatenate (2..{len(cell) + 1})")
    for i in concat:
        if not 2 <= i <= len(cell) + 1:
            raise NasDeployError(f"genotype {kind}_concat has {i}; concatenated nodes must be in 2..{len(cell) + 1}")


# ---- edge order (the one place that knows it) -------------------------------------------------------------

def edge_index(node: int, input_index: int) -> int:
    """Row of edge ``input_index -> node`` in the node-by-node edge order: Σ_{m<node}(m + 2) + input_index."""
    assert input_index in candidate_inputs(node)
    return node * (node + 3) // 2 + input_index


def num_edges(nodes: int) -> int:
    """Edges of a cell with ``nodes`` intermediate nodes (node j has j + 2 inputs): 14 for 4 nodes."""
    return edge_index(nodes, 0)


def candidate_inputs(node: int) -> range:
    """The inputs node ``node`` may read: the two cell inputs and every earlier node, 0..node+1."""
    return range(node + 2)


def all_node_inputs(nodes: int) -> list[range]:
    """Inputs of every node of a continuous cell, in edge order: node j reads all of 0..j+1."""
    return [candidate_inputs(j) for j in range(nodes)]


def node_edge_ranges(nodes: int) -> list[range]:
    """Rows of each intermediate node j's incoming edges (inputs 0..j+1), e.g. ``alpha[r.start:r.stop]``."""
    return [range(edge_index(j, 0), edge_index(j + 1, 0)) for j in range(nodes)]


def locate_edge(edge: int) -> tuple[int, int]:
    """``(node, input_index)`` of row ``edge``: the inverse of ``edge_index``."""
    assert edge >= 0
    node = 0
    while edge >= edge_index(node + 1, 0):
        node += 1
    return node, edge - edge_index(node, 0)


# ---- continuous relaxation (the search networks' mixing weights, Eq. 3.1) -------------------------------

MASKED_ALPHA = -1.0e4  # exp(-1e4) == 0 in float32: a masked op gets exactly zero weight and zero gradient


def masked_alpha(alpha: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return alpha if mask is None else torch.where(mask, alpha, torch.full_like(alpha, MASKED_ALPHA))


def mixing_weights(alpha: torch.Tensor, nodes: int, rule: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Weights of every (edge, op) in the continuous cell: Eq. 3.1 per edge (darts) or per node (idarts/xdarts)."""
    alpha = masked_alpha(alpha, mask)
    if rule == "darts":
        return torch.softmax(alpha, dim=-1)  # Eq. 3.1
    return node_softmax(alpha, nodes)  # one softmax over all incoming (edge, op) pairs of node j


def node_softmax(values: torch.Tensor, nodes: int) -> torch.Tensor:
    """One softmax over all entries of each node's rows (rows in edge order; ``[E]`` or ``[E, ops]``).

    I-DARTS / XDARTS mixing weights over a node's (edge, op) pairs, and PC-DARTS edge normalisation
    (softmax of β over a node's incoming edges).
    """
    rows = []
    for edges in node_edge_ranges(nodes):
        block = values[edges.start : edges.stop]
        rows.append(torch.softmax(block.reshape(-1), dim=0).reshape(block.shape))
    return torch.cat(rows, dim=0)


# ---- layout --------------------------------------------------------------------------------------------

@dataclass
class CellLayout:
    """Shapes of one cell. ``h, w``: spatial size of its (preprocessed) inputs s0/s1, before any reduction.

    ``h_pp, w_pp``: size of the raw s0 (twice ``h`` after a reduction cell, where it is factorized-reduced).
    ``multiplier``: number of concatenated nodes, so the cell outputs ``multiplier * c`` channels.
    """

    index: int
    reduction: bool
    reduction_prev: bool
    c_pp: int
    c_p: int
    c: int
    h: int
    w: int
    h_pp: int = 0
    w_pp: int = 0
    multiplier: int = 4

    @property
    def out_h(self) -> int:
        return math.ceil(self.h / 2) if self.reduction else self.h

    @property
    def out_w(self) -> int:
        return math.ceil(self.w / 2) if self.reduction else self.w

    @property
    def c_out(self) -> int:
        return self.multiplier * self.c


def cell_layouts(template: DartsTemplate, normal_multiplier: int | None = None,
                 reduce_multiplier: int | None = None) -> list[CellLayout]:
    """Shapes of every cell (DARTS NetworkCIFAR). Multipliers default to ``template.nodes`` (concat all nodes)."""
    normal_multiplier = normal_multiplier or template.nodes
    reduce_multiplier = reduce_multiplier or template.nodes
    c_stem = template.stem_multiplier * template.C
    c_pp, c_p, c = c_stem, c_stem, template.C
    size_pp = size_p = (template.input_size, template.input_size)
    reduction_prev = False
    layouts = []
    for index in range(template.layers):
        reduction = index in template.reduction_indices
        if reduction:
            c *= 2
        multiplier = reduce_multiplier if reduction else normal_multiplier
        layout = CellLayout(index, reduction, reduction_prev, c_pp, c_p, c, size_p[0], size_p[1], size_pp[0], size_pp[1],
                            multiplier)
        layouts.append(layout)
        c_pp, c_p = c_p, layout.c_out
        size_pp, size_p = size_p, (layout.out_h, layout.out_w)
        reduction_prev = reduction
    return layouts


def edge_stride(layout: CellLayout, input_index: int) -> int:
    return 2 if layout.reduction and input_index < 2 else 1


def edge_instance(layout: CellLayout, input_index: int, op: str) -> OpInstance:
    """The op on edge ``input_index -> node`` of a cell.

    ``h, w`` are the op's *input* size: ``layout.h, layout.w`` for edges from the cell inputs; in a reduction
    cell, edges from intermediate nodes (input >= 2) see the already halved size at stride 1.
    """
    stride = edge_stride(layout, input_index)
    h, w = (layout.h, layout.w) if input_index < 2 else (layout.out_h, layout.out_w)
    return OpInstance(op, layout.c, layout.c, h, w, stride)


def preprocess_instances(layout: CellLayout) -> list[OpInstance]:
    if layout.reduction_prev:
        first = OpInstance("factorized_reduce", layout.c_pp, layout.c, layout.h_pp, layout.w_pp, 2)
    else:
        first = OpInstance("preprocess_1x1", layout.c_pp, layout.c, layout.h_pp, layout.w_pp, 1)
    return [first, OpInstance("preprocess_1x1", layout.c_p, layout.c, layout.h, layout.w, 1)]


def stem_instance(template: DartsTemplate) -> OpInstance:
    c = template.stem_multiplier * template.C
    return OpInstance("stem", template.in_channels, c, template.input_size, template.input_size, 1)


def classifier_instance(template: DartsTemplate, layouts: list[CellLayout]) -> OpInstance:
    last = layouts[-1]
    return OpInstance("classifier", last.c_out, template.num_classes, last.out_h, last.out_w, 1)


# ---- fixed parts ---------------------------------------------------------------------------------------

class Stem(nn.Sequential):
    """3x3 conv + BN to ``stem_multiplier * C`` channels (DARTS CIFAR stem)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))


def make_stem(template: DartsTemplate) -> Stem:
    return Stem(template.in_channels, template.stem_multiplier * template.C)


class CellPreprocess(nn.Module):
    """Bring both cell inputs to ``c`` channels at the cell's size: s0 via FactorizedReduce after a reduction."""

    def __init__(self, layout: CellLayout, affine: bool = True):
        super().__init__()
        if layout.reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(layout.c_pp, layout.c, affine=affine)
        else:
            self.preprocess0 = ReLUConvBN(layout.c_pp, layout.c, 1, 1, 0, affine=affine)
        self.preprocess1 = ReLUConvBN(layout.c_p, layout.c, 1, 1, 0, affine=affine)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.preprocess0(s0), self.preprocess1(s1)


class AuxiliaryHead(nn.Module):
    """DARTS CIFAR auxiliary tower on the 8x8 output of the second reduction cell.

    For other sizes the first pool adapts (adaptive 2x2 below 8x8) and a final global pool keeps 768 features.
    """

    def __init__(self, c_in: int, num_classes: int, size: int = 8):
        super().__init__()
        pool = nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False) if size >= 8 else nn.AdaptiveAvgPool2d(2)
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            pool,
            nn.Conv2d(c_in, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=False),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class Classifier(blocks.Classifier):
    """Global average pool + linear. ``Classifier(template)`` (channels from the layout) or ``Classifier(c_in, n)``."""

    def __init__(self, c_in: int | DartsTemplate, num_classes: int | None = None):
        if isinstance(c_in, DartsTemplate):
            template = c_in
            c_in, num_classes = cell_layouts(template)[-1].c_out, template.num_classes
        assert num_classes is not None
        super().__init__(c_in, num_classes)


def drop_path(x: torch.Tensor, prob: float) -> torch.Tensor:
    """Drop whole samples' paths with probability ``prob`` and rescale the kept ones by 1/(1 - prob)."""
    if prob <= 0.0:
        return x
    keep = 1.0 - prob
    mask = torch.bernoulli(torch.full((x.size(0), 1, 1, 1), keep, dtype=x.dtype, device=x.device))
    return x / keep * mask


def build_fixed(inst: OpInstance) -> nn.Module:
    if inst.op == "stem":
        return Stem(inst.c_in, inst.c_out)
    if inst.op == "preprocess_1x1":
        return ReLUConvBN(inst.c_in, inst.c_out, 1, 1, 0)
    if inst.op == "factorized_reduce":
        return FactorizedReduce(inst.c_in, inst.c_out)
    if inst.op == "classifier":
        return Classifier(inst.c_in, inst.c_out)
    raise NasDeployError(f"unknown DARTS fixed part {inst.op!r}; choose one of: {', '.join(FIXED_PARTS)}")


# ---- the cell forward (one for every kind of cell) ------------------------------------------------------

EdgeOutput = Callable[[int, int, int, torch.Tensor], torch.Tensor]


def cell_forward(s0: torch.Tensor, s1: torch.Tensor, preprocess: nn.Module, node_inputs: Sequence[Sequence[int]],
                 edge_output: EdgeOutput, concat: Sequence[int] | None = None) -> torch.Tensor:
    """One DARTS cell: preprocess both inputs, x_j = Σ_{i ∈ inputs(j)} o^(i,j)(x_i), concatenate (DARTS Eq. 1).

    ``node_inputs[j]`` lists the inputs node j reads (repeats allowed: a discrete cell may take two ops from
    one input); ``edge_output(j, slot, i, x_i)`` is what the edge in position ``slot`` of node j contributes:
    the genotype's op (``DartsCell``), a weighted mixed op (``SearchCell``, Eq. 3.1, optionally scaled by an
    edge-normalisation weight) or a path's op (SE-NAS ``DartsSupernet``). ``concat``: states to concatenate
    (default: every intermediate node).
    """
    states = list(preprocess(s0, s1))
    for j, inputs in enumerate(node_inputs):
        x_j = 0
        for slot, i in enumerate(inputs):
            x_j = x_j + edge_output(j, slot, i, states[i])  # x_j = Σ_i o^(i,j)(x_i)
        states.append(x_j)
    concat = range(2, len(states)) if concat is None else concat
    return torch.cat([states[k] for k in concat], dim=1)


# ---- discrete network ----------------------------------------------------------------------------------

class DartsCell(nn.Module):
    """A discrete cell: x_j = Σ_{(o, i) ∈ node j} o(x_i); output = concat(x_k for k in concat) (DARTS Eq. 1)."""

    def __init__(self, nodes: list[Node], concat: list[int], layout: CellLayout, drop_path: float = 0.0,
                 preprocess: nn.Module | None = None):
        super().__init__()
        # ``preprocess``: how the inputs reach ``c`` channels (default: DARTS'; hierarchical ICDARTS passes its own)
        self.preprocess = CellPreprocess(layout) if preprocess is None else preprocess
        self.inputs = [[i for _, i in node] for node in nodes]
        self.concat = list(concat)
        self.drop_path = drop_path
        self.ops = nn.ModuleList(
            nn.ModuleList(build_op(op, layout.c, layout.c, edge_stride(layout, i)) for op, i in node) for node in nodes
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float | None = None) -> torch.Tensor:
        drop_prob = self.drop_path if drop_prob is None else drop_prob

        def edge_output(j: int, slot: int, i: int, x: torch.Tensor) -> torch.Tensor:
            op = self.ops[j][slot]
            h = op(x)
            if self.training and drop_prob > 0 and not isinstance(op, Identity):
                h = drop_path(h, drop_prob)
            return h

        return cell_forward(s0, s1, self.preprocess, self.inputs, edge_output, self.concat)


def genotype_layouts(genotype: Genotype, template: DartsTemplate) -> list[CellLayout]:
    return cell_layouts(template, len(genotype.normal_concat), len(genotype.reduce_concat))


class DartsNetwork(nn.Module):
    """Stem -> cells -> classifier; in training mode with a head returns ``(logits, aux)`` (``spaces.heads``)."""

    def __init__(self, genotype: Genotype, template: DartsTemplate):
        super().__init__()
        genotype.validate()
        self.drop_path_prob = template.drop_path
        layouts = genotype_layouts(genotype, template)
        self.stem = make_stem(template)
        self.cells = nn.ModuleList(
            DartsCell(genotype.reduce if l.reduction else genotype.normal,
                      genotype.reduce_concat if l.reduction else genotype.normal_concat, l, template.drop_path)
            for l in layouts
        )
        self.aux_index = template.reduction_indices[1]
        self.auxiliary_head = None
        if wants_darts_tower(template) and self.aux_index < len(layouts):
            aux_layout = layouts[self.aux_index]
            self.auxiliary_head = AuxiliaryHead(aux_layout.c_out, template.num_classes, aux_layout.out_h)
        self.aux_heads = reduction_heads(template, layouts)  # §3.1.1's heads (template.aux_head == "cdarts")
        self.classifier = Classifier(layouts[-1].c_out, template.num_classes)

    def forward(self, x: torch.Tensor):
        aux_logits, taps = None, {}
        heads = self.aux_heads if self.training else None
        s0 = s1 = self.stem(x)
        for index, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if index == self.aux_index and self.auxiliary_head is not None and self.training:
                aux_logits = self.auxiliary_head(s1)
            if heads is not None and index in heads.indices:
                taps[index] = s1  # a reduction cell's output (§3.1.1)
        logits = self.classifier(s1)
        if heads is not None:
            return heads(logits, taps)
        if aux_logits is not None:
            return logits, aux_logits
        return logits


def check_aux_head(template: DartsTemplate) -> None:
    if template.aux_head not in AUX_HEADS:
        raise NasDeployError(f"unknown auxiliary head {template.aux_head!r}; choose one of: {', '.join(AUX_HEADS)}")


# ---- the space -----------------------------------------------------------------------------------------

@SPACES.register("darts")
class DartsSpace(SearchSpace):
    name = "darts"

    def default_template(self, preset: str = "cpu", **overrides: Any) -> DartsTemplate:
        if preset not in PRESETS:
            raise NasDeployError(f"unknown DARTS preset {preset!r}; choose one of: {', '.join(PRESETS)}")
        known = {f.name for f in fields(DartsTemplate)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise NasDeployError(f"unknown DARTS template field(s) {unknown}; choose from: {', '.join(sorted(known))}")
        template = replace(DartsTemplate(**PRESETS[preset]), **overrides)
        template.op_space = str(template.op_space)
        op_space_names(template.op_space)
        check_aux_head(template)
        return template

    def template_from_dict(self, d: dict[str, Any]) -> DartsTemplate:
        known = {f.name for f in fields(DartsTemplate)}
        template = DartsTemplate(**{k: v for k, v in d.items() if k in known})
        template.op_space = str(template.op_space)
        return template

    def sample(self, template: DartsTemplate, rng: random.Random) -> Genotype:
        ops = op_space_names(template.op_space)

        def cell() -> list[Node]:
            return [[(rng.choice(ops), i) for i in sorted(rng.sample(inputs, 2))] for inputs in all_node_inputs(template.nodes)]

        concat = list(range(2, template.nodes + 2))
        return Genotype(normal=cell(), normal_concat=concat, reduce=cell(), reduce_concat=list(concat))

    def build(self, arch: Genotype, template: DartsTemplate) -> nn.Module:
        return DartsNetwork(arch, template)

    def op_instances(self, template: DartsTemplate) -> list[OpInstance]:
        ops = op_space_names(template.op_space)
        layouts = cell_layouts(template)
        instances = [stem_instance(template)]
        for layout in layouts:
            instances += preprocess_instances(layout)
            for inputs in all_node_inputs(template.nodes):
                instances += [edge_instance(layout, i, op) for i in inputs for op in ops]
        instances.append(classifier_instance(template, layouts))
        return _distinct(instances)

    def arch_op_instances(self, arch: Genotype, template: DartsTemplate) -> list[OpInstance]:
        layouts = genotype_layouts(arch, template)
        instances = [stem_instance(template)]
        for layout in layouts:
            instances += preprocess_instances(layout)
            for node in arch.reduce if layout.reduction else arch.normal:
                instances += [edge_instance(layout, i, op) for op, i in node if op != "none"]
        instances.append(classifier_instance(template, layouts))
        return instances

    def merged_work(self, arch: Genotype, template: DartsTemplate) -> dict[str, float]:
        """Per cell, each edge whose op does the same weight-free work as an earlier edge on the same input adds its
        input's elements to that work's feature (``spaces.ops.shared_work``): two ReLU-led convs their ReLU, two equal
        pools the whole pool (``merged_kelems``), two factorized reduces also the shifted copy (``merged_shift_kelems``)."""
        total = dict.fromkeys(MERGED_WORK_FEATURES, 0.0)
        for layout in genotype_layouts(arch, template):
            started: set[tuple[int, str]] = set()
            for op, i in (edge for node in (arch.reduce if layout.reduction else arch.normal) for edge in node):
                inst = edge_instance(layout, i, op)
                parts = () if op in ("none", "random") else shared_work(op, inst.c_in, inst.c_out, inst.stride)
                for feature, signature in parts:
                    if (i, signature) in started:
                        total[feature] += inst.c_in * inst.h * inst.w / 1000.0
                    started.add((i, signature))
        return total

    def build_op(self, inst: OpInstance) -> nn.Module:
        if inst.op in FIXED_PARTS:
            return build_fixed(inst)
        return build_op(inst.op, inst.c_in, inst.c_out, inst.stride)

    def arch_to_json(self, arch: Genotype) -> dict[str, Any]:
        return arch.to_json()

    def arch_graph(self, arch: Genotype, template: DartsTemplate):
        """Two parts, the normal and the reduction cell (``cell_graph``), encoded by the same vocabulary."""
        from nasdeploy.spaces.graph import ArchGraph

        ops = op_space_names(template.op_space)
        return ArchGraph((cell_graph(arch.normal, arch.normal_concat, ops), cell_graph(arch.reduce, arch.reduce_concat, ops)))

    def draw(self, arch: Genotype, template: DartsTemplate, path, title: str = ""):
        from nasdeploy.spaces.cell_plot import plot_cells

        return plot_cells(arch, path, title=title)

    def arch_from_json(self, d: dict[str, Any]) -> Genotype:
        return Genotype.from_json(d)


CELL_GRAPH_NODES = ("c_k-2", "c_k-1", "add", "concat")


def cell_graph(cell: list[Node], concat: list[int], op_names: Sequence[str]):
    """One cell as a DAG of operations (CTNAS Fig. 3): the two cell inputs, one node per (op, input) edge of
    each intermediate node (``none`` edges carry nothing and are left out), an ``add`` node per intermediate
    node summing its ops, and a ``concat`` output reading the nodes of ``concat``."""
    from nasdeploy.spaces.graph import GraphPart, dag

    names, edges = ["c_k-2", "c_k-1"], []
    state = {0: 0, 1: 1}  # cell state index -> graph node
    for j, node in enumerate(cell):
        op_nodes = []
        for op, i in node:
            if op == "none":
                continue
            names.append(op)
            op_nodes.append(len(names) - 1)
            edges.append((state[i], len(names) - 1))
        names.append("add")
        state[j + 2] = len(names) - 1
        edges += [(o, state[j + 2]) for o in op_nodes]
    names.append("concat")
    edges += [(state[k], len(names) - 1) for k in concat]
    vocabulary = (*CELL_GRAPH_NODES, *[op for op in op_names if op not in CELL_GRAPH_NODES])
    unknown = sorted(set(names) - set(vocabulary))
    if unknown:
        raise NasDeployError(f"genotype uses op(s) {unknown} outside op space {list(op_names)}; pass a matching --op-space")
    return GraphPart(dag(len(names), edges), tuple(names), vocabulary)


def _distinct(instances: list[OpInstance]) -> list[OpInstance]:
    seen: dict[str, OpInstance] = {}
    for inst in instances:
        seen.setdefault(inst.key(), inst)
    return list(seen.values())
