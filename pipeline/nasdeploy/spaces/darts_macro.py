"""DARTS cells in a searched network template: the architecture encoding of hierarchical ICDARTS (Herron 2023, ch. 6).

An architecture is a ``MacroGenotype``: the cells (a DARTS ``Genotype``, found by the micro phase) plus the macro
template, which for version 1 (skip connections between cells, Figure 6.2) is the *first input* of every cell:
cell ``k`` reads the previous cell ``k - 1`` as DARTS does, and as its other input the output of any earlier cell
``s`` in ``k - 2, ..., 0`` or the stem (``s = -1``). DARTS' own template is ``inputs[k] = k - 2`` (the stem for
the first two cells); a plain ``Genotype`` means exactly that, so the micro phase's networks live in this space too.

The other input reaches the cell's ``c`` channels at the cell's size through its own preprocessing: a 1x1
ReLU-conv-BN when the source has the cell's size (``preprocess_1x1``), a factorized reduce of stride 2 or 4 when
one or two reduction cells lie between (``factorized_reduce``, stride in the op instance). ``op_instances``
lists every such shape the template allows, so a ``darts_macro`` latency table predicts every macro template;
``skip_instance`` is the one place that knows the shape.

Sources of cell ``k``, nearest first (``skip_sources``): ``[k-2, k-3, ..., 0, -1]``; ``[-1]`` for cells 0 and 1.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from nasdeploy.errors import NasDeployError
from nasdeploy.spaces.base import SPACES, OpInstance, SearchSpace
from nasdeploy.spaces.blocks import FactorizedReduce, ReLUConvBN
from nasdeploy.spaces.heads import reduction_heads, wants_darts_tower
from nasdeploy.spaces.darts import (
    AuxiliaryHead,
    CellLayout,
    Classifier,
    DartsCell,
    DartsSpace,
    DartsTemplate,
    Genotype,
    Node,
    classifier_instance,
    edge_instance,
    genotype_layouts,
    make_stem,
    stem_instance,
    validate_cell,
    _distinct,
)
from nasdeploy.spaces.ops import op_space_names

STEM = -1  # the index of the stem's output as a skip source


# ---- the encoding ---------------------------------------------------------------------------------------

def skip_sources(cell: int) -> list[int]:
    """The outputs cell ``cell`` may take as its other input, nearest first (the stem is -1)."""
    return list(range(cell - 2, -1, -1)) + [STEM] if cell >= 2 else [STEM]


def default_inputs(layers: int) -> list[int]:
    """DARTS' template: cell k reads k - 2 (the stem for cells 0 and 1)."""
    return [skip_sources(k)[0] for k in range(layers)]


Cell = tuple[list[Node], list[int]]  # (nodes, concat)


@dataclass
class MacroGenotype:
    """Cells plus the macro template: ``inputs[k]`` is the other input of cell ``k`` (its first is cell ``k - 1``).

    Version 2 (cell placement): ``extra_normals`` are normal cell types 1, 2, ... (type 0 is ``cells.normal``) and
    ``types[k]`` the type of normal cell ``k`` (ignored at reduction cells); empty ``types``: type 0 everywhere.
    """

    cells: Genotype
    inputs: list[int]
    extra_normals: list[Cell] = field(default_factory=list)
    types: list[int] = field(default_factory=list)

    def normal_types(self) -> list[Cell]:
        return [(self.cells.normal, self.cells.normal_concat)] + [(list(n), list(c)) for n, c in self.extra_normals]

    def cell_of(self, layout: CellLayout) -> Cell:
        """(nodes, concat) of the cell at ``layout``: the reduction cell, or the normal type placed there."""
        if layout.reduction:
            return self.cells.reduce, self.cells.reduce_concat
        return self.normal_types()[self.types[layout.index] if self.types else 0]

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"cells": self.cells.to_json(), "macro": {"inputs": [int(i) for i in self.inputs]}}
        if self.extra_normals or self.types:
            d["macro"]["types"] = [int(t) for t in self.types]
            d["extra_normals"] = [{"nodes": [[[op, int(i)] for op, i in node] for node in nodes], "concat": [int(i) for i in concat]}
                                  for nodes, concat in self.extra_normals]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "MacroGenotype":
        try:
            inputs = [int(i) for i in d["macro"]["inputs"]]
            types = [int(t) for t in d["macro"].get("types", [])]
            extra = [([[(str(op), int(i)) for op, i in node] for node in e["nodes"]], [int(i) for i in e["concat"]])
                     for e in d.get("extra_normals", [])]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise NasDeployError(f"macro template is malformed ({exc!r}); expected {{'cells': ..., 'macro': {{'inputs': "
                                 "[-1, -1, 0, 1, ...]}}}") from None
        macro = cls(Genotype.from_json(d["cells"]), inputs, extra, types)
        macro.validate()
        return macro

    def validate(self, layers: int | None = None) -> None:
        self.cells.validate()
        if layers is not None and len(self.inputs) != layers:
            raise NasDeployError(f"macro template has {len(self.inputs)} cell inputs but the template has {layers} cells; "
                                 "give one input per cell")
        for k, source in enumerate(self.inputs):
            if source not in skip_sources(k):
                raise NasDeployError(f"macro template: cell {k} takes input {source}; cell {k} can only take "
                                     f"{', '.join(map(str, sorted(skip_sources(k))))} (-1 is the stem)")
        for t, (nodes, concat) in enumerate(self.extra_normals, start=1):
            validate_cell(f"normal type {t}", nodes, concat)
            if len(concat) != len(self.cells.normal_concat):
                raise NasDeployError(f"normal type {t} concatenates {len(concat)} nodes, type 0 {len(self.cells.normal_concat)}; "
                                     "every normal type must output as many channels")
        if self.types and len(self.types) != len(self.inputs):
            raise NasDeployError(f"macro template has {len(self.types)} cell types for {len(self.inputs)} cells; give one per cell")
        for k, t in enumerate(self.types):
            if not 0 <= t <= len(self.extra_normals):
                raise NasDeployError(f"macro template: cell {k} has type {t}; types are 0..{len(self.extra_normals)}")


def as_macro(arch: Genotype | MacroGenotype, template: DartsTemplate) -> MacroGenotype:
    """A plain genotype is DARTS' template (every cell reads k - 1 and k - 2)."""
    if isinstance(arch, MacroGenotype):
        arch.validate(template.layers)
        return arch
    return MacroGenotype(arch, default_inputs(template.layers))


# ---- shapes ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Output:
    """Channels and size of the stem's or a cell's output."""

    c: int
    h: int
    w: int


def outputs(layouts: Sequence[CellLayout], template: DartsTemplate) -> dict[int, Output]:
    c_stem = template.stem_multiplier * template.C
    found = {STEM: Output(c_stem, template.input_size, template.input_size)}
    for layout in layouts:
        found[layout.index] = Output(layout.c_out, layout.out_h, layout.out_w)
    return found


def skip_stride(layouts: Sequence[CellLayout], source: int, cell: int) -> int:
    """2 ** (reduction cells strictly between ``source`` and ``cell``): the skip input's downsampling."""
    return 2 ** sum(1 for layout in layouts[source + 1 : cell] if layout.reduction)


def skip_instance(layouts: Sequence[CellLayout], template: DartsTemplate, source: int, cell: int) -> OpInstance:
    """The preprocessing of ``source``'s output into cell ``cell``: 1x1 conv or factorized reduce (stride 2 / 4)."""
    out, c = outputs(layouts, template)[source], layouts[cell].c
    stride = skip_stride(layouts, source, cell)
    op = "preprocess_1x1" if stride == 1 else "factorized_reduce"
    return OpInstance(op, out.c, c, out.h, out.w, stride)


def build_skip(inst: OpInstance) -> nn.Module:
    if inst.op == "preprocess_1x1":
        return ReLUConvBN(inst.c_in, inst.c_out, 1, 1, 0)
    return FactorizedReduce(inst.c_in, inst.c_out, stride=inst.stride)


def second_input_instance(layout: CellLayout) -> OpInstance:
    """The preprocessing of the previous cell's output (always a 1x1 conv, as in DARTS)."""
    return OpInstance("preprocess_1x1", layout.c_p, layout.c, layout.h, layout.w, 1)


def cell_instances(arch: MacroGenotype, layout: CellLayout) -> list[OpInstance]:
    nodes, _ = arch.cell_of(layout)
    return [edge_instance(layout, i, op) for node in nodes for op, i in node if op != "none"]


def fixed_macro_instances(arch: MacroGenotype, template: DartsTemplate) -> list[OpInstance]:
    """Everything but the skip preprocessing: stem, each cell's ops and second-input preprocessing, classifier."""
    layouts = genotype_layouts(arch.cells, template)
    found = [stem_instance(template)]
    for layout in layouts:
        found += [second_input_instance(layout)] + cell_instances(arch, layout)
    return found + [classifier_instance(template, layouts)]


# ---- networks --------------------------------------------------------------------------------------------

class SecondInput(nn.Module):
    """A cell's preprocessing when its other input arrives already preprocessed (``MacroNetwork.skips``)."""

    def __init__(self, layout: CellLayout):
        super().__init__()
        self.preprocess1 = ReLUConvBN(layout.c_p, layout.c, 1, 1, 0)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return s0, self.preprocess1(s1)


class MacroNetwork(nn.Module):
    """Stem -> cells (cell k reads cell k - 1 and its ``sources[k]``) -> classifier.

    ``skips[k][i]`` preprocesses ``sources[k][i]``'s output for cell k. With one source per cell this is the
    discrete network E_macro; with several, ``forward(x, weights)`` mixes them, Σ_i weights[k][i] · skip_i, as
    the search network S_macro does (``search.hierarchical.macro``).
    """

    def __init__(self, cells: Genotype, template: DartsTemplate, sources: Sequence[Sequence[int]],
                 cell_genes: Sequence[Cell] | None = None):
        super().__init__()
        cells.validate()
        self.drop_path_prob = template.drop_path
        layouts = genotype_layouts(cells, template)
        if len(sources) != len(layouts):
            raise NasDeployError(f"{len(sources)} cell inputs for {len(layouts)} cells; give one per cell")
        self.sources = [list(s) for s in sources]
        self.stem = make_stem(template)
        self.skips = nn.ModuleList(
            nn.ModuleList(build_skip(skip_instance(layouts, template, s, k)) for s in srcs) for k, srcs in enumerate(self.sources)
        )
        if cell_genes is None:  # ``cell_genes[k]``: (nodes, concat) of cell k (version 2: the placed normal type)
            cell_genes = [MacroGenotype(cells, []).cell_of(l) for l in layouts]
        self.cells = nn.ModuleList(
            DartsCell(nodes, concat, l, template.drop_path, preprocess=SecondInput(l)) for l, (nodes, concat) in zip(layouts, cell_genes)
        )
        self.aux_index = template.reduction_indices[1]
        self.auxiliary_head = None
        if wants_darts_tower(template) and self.aux_index < len(layouts):
            aux = layouts[self.aux_index]
            self.auxiliary_head = AuxiliaryHead(aux.c_out, template.num_classes, aux.out_h)
        self.aux_heads = reduction_heads(template, layouts)  # §3.1.1's heads (template.aux_head == "cdarts")
        self.classifier = Classifier(layouts[-1].c_out, template.num_classes)

    def forward(self, x: torch.Tensor, weights: Sequence[torch.Tensor] | None = None):
        aux_logits = None
        outs = {STEM: self.stem(x)}
        for k, cell in enumerate(self.cells):
            skipped = [skip(outs[s]) for s, skip in zip(self.sources[k], self.skips[k])]
            s0 = skipped[0] if weights is None else sum(w * h for w, h in zip(weights[k], skipped))
            outs[k] = cell(s0, outs[k - 1], self.drop_path_prob)
            if k == self.aux_index and self.auxiliary_head is not None and self.training:
                aux_logits = self.auxiliary_head(outs[k])
        logits = self.classifier(outs[len(self.cells) - 1])
        if self.aux_heads is not None and self.training:
            return self.aux_heads(logits, outs)  # §3.1.1: both reduction cells' heads with the final logits
        return (logits, aux_logits) if aux_logits is not None else logits


# ---- the space -------------------------------------------------------------------------------------------

@SPACES.register("darts_macro")
class DartsMacroSpace(DartsSpace):
    """The DARTS space with a searched macro template (hierarchical ICDARTS); plain genotypes are accepted."""

    name = "darts_macro"

    def sample(self, template: DartsTemplate, rng: random.Random) -> MacroGenotype:
        cells = super().sample(template, rng)
        return MacroGenotype(cells, [rng.choice(skip_sources(k)) for k in range(template.layers)])

    def build(self, arch, template: DartsTemplate) -> nn.Module:
        macro = as_macro(arch, template)
        layouts = genotype_layouts(macro.cells, template)
        return MacroNetwork(macro.cells, template, [[s] for s in macro.inputs], [macro.cell_of(l) for l in layouts])

    def op_instances(self, template: DartsTemplate) -> list[OpInstance]:
        """DARTS' instances plus every skip preprocessing any macro template of ``template`` can contain."""
        instances = super().op_instances(template)
        op_space_names(template.op_space)
        from nasdeploy.spaces.darts import cell_layouts

        layouts = cell_layouts(template)
        for k in range(template.layers):
            instances += [skip_instance(layouts, template, s, k) for s in skip_sources(k)]
            instances.append(second_input_instance(layouts[k]))
        return _distinct(instances)

    # its cells and skip inputs share tensors in other ways; not modelled (the feature stays 0, the fit drops it)
    merged_work = SearchSpace.merged_work

    def arch_op_instances(self, arch, template: DartsTemplate) -> list[OpInstance]:
        macro = as_macro(arch, template)
        layouts = genotype_layouts(macro.cells, template)
        skips = [skip_instance(layouts, template, s, k) for k, s in enumerate(macro.inputs)]
        return fixed_macro_instances(macro, template) + skips

    def build_op(self, inst: OpInstance) -> nn.Module:
        if inst.op == "factorized_reduce":
            return FactorizedReduce(inst.c_in, inst.c_out, stride=inst.stride)
        return super().build_op(inst)

    def arch_to_json(self, arch) -> dict[str, Any]:
        return arch.to_json()

    def arch_from_json(self, d: dict[str, Any]):
        return MacroGenotype.from_json(d) if "macro" in d else Genotype.from_json(d)

    def draw(self, arch, template: DartsTemplate, path, title: str = "") -> Path:
        from nasdeploy.spaces.macro_plot import plot_macro

        return plot_macro(as_macro(arch, template), path, set(template.reduction_indices), title=title)

    def cheapest_architecture(self, table, template: DartsTemplate, op_names: Sequence[str] | None = None) -> MacroGenotype:
        """DARTS' cheapest genotype with, per cell, the cheapest skip input (each cell's choice is independent)."""
        from nasdeploy.latency.predictor import cheapest_genotype

        return cheapest_inputs(table, cheapest_genotype(table, template, op_names), template)


def cheapest_inputs(table, cells: Genotype, template: DartsTemplate) -> MacroGenotype:
    from nasdeploy.latency.predictor import op_latency_ms

    layouts = genotype_layouts(cells, template)
    inputs = [min(skip_sources(k), key=lambda s: op_latency_ms(table, skip_instance(layouts, template, s, k)))
              for k in range(template.layers)]
    return MacroGenotype(cells, inputs)
