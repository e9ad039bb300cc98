"""The MobileNet-like layer-wise space of SE-NAS Table 2 (identical to ProxylessNAS).

Skeleton (paper preset, 224 input): 3x3 conv 40 s2 -> fixed CBS 24 (k3, e1) -> searchable stages
32x4 s2, 56x4 s2, 112x4 s2, 128x4 s1, 256x4 s2, 432x1 s1 (21 layers) -> 1x1 conv 1728 -> GAP -> FC.
Each searchable layer picks one of ``mb{3,5,7}_e{3,6}`` (MobileNetV2 inverted residual, kernel k, expansion e)
or ``identity``; the first layer of every stage changes stride/channels, so it has no identity. The space
therefore holds 6^6 · 7^15 architectures (SE-NAS §3.5 quotes 7^21, counting every layer as 7-way).

Small inputs: the "cpu"/"tiny" presets use a 32x32 input with the same strides, so it flows
32 -> 16 (first conv) -> 16 (first block) -> 8 -> 4 -> 2 -> 2 -> 1 -> 1 (last stage, feature mix, GAP).
Every conv pads ``k // 2`` so a stride-2 layer maps ``H`` to ``ceil(H / 2)`` and sizes never drop below 1.
The "cpu" preset also shortens the stages to 1, 2, 2, 1, 2, 1 layers (9 searchable layers, same candidates):
a uniform single-path supernet of all 21 layers stays near chance accuracy for the few thousand steps a CPU
can give it in minutes, while the 9-layer one learns (SE-NAS search notes in ``search.senas``).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn

from nasdeploy.errors import NasDeployError
from nasdeploy.spaces.base import SPACES, OpInstance, SearchSpace
from nasdeploy.spaces.blocks import Classifier, ConvBNAct, Identity, InvertedResidual, make_divisible
from nasdeploy.spaces.ops import build_op

LAYER_CHOICES = ["mb3_e3", "mb3_e6", "mb5_e3", "mb5_e6", "mb7_e3", "mb7_e6"]
FIXED_PARTS = ("first_conv", "first_block", "feature_mix", "classifier")

# (output channels, repeat, stride) of the searchable stages, SE-NAS Table 2.
PAPER_STAGES: list[list[int]] = [[32, 4, 2], [56, 4, 2], [112, 4, 2], [128, 4, 1], [256, 4, 2], [432, 1, 1]]


@dataclass
class MobileNetTemplate:
    """The skeleton; channels are multiplied by ``width_mult`` and rounded to a multiple of 8.

    ``depth`` (optional) overrides each stage's repeat count, e.g. ``[1, 1, 1, 1, 1, 1]`` for a short test net.
    """

    input_size: int = 224
    width_mult: float = 1.0
    num_classes: int = 1000
    in_channels: int = 3
    first_conv_channels: int = 40
    first_conv_stride: int = 2
    first_block_channels: int = 24
    stages: list[list[int]] = field(default_factory=lambda: [list(s) for s in PAPER_STAGES])
    feature_channels: int = 1728
    depth: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def channels(self, c: int) -> int:
        return make_divisible(c * self.width_mult, 8)

    def stage_repeats(self) -> list[int]:
        if self.depth is None:
            return [int(s[1]) for s in self.stages]
        if len(self.depth) != len(self.stages):
            raise NasDeployError(f"template depth has {len(self.depth)} entries for {len(self.stages)} stages; give one per stage")
        return [int(d) for d in self.depth]


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"input_size": 224, "width_mult": 1.0, "num_classes": 1000},
    "cpu": {"input_size": 32, "width_mult": 0.35, "num_classes": 10, "depth": [1, 2, 2, 1, 2, 1]},
    "tiny": {"input_size": 32, "width_mult": 0.25, "num_classes": 10, "depth": [2, 2, 2, 1, 2, 1]},
}


@dataclass
class LayerLayout:
    """One searchable layer: input channels/size, output channels, stride and its candidate choices."""

    index: int
    c_in: int
    c_out: int
    h: int
    w: int
    stride: int
    choices: list[str]


@dataclass
class LayerwiseArch:
    """One choice per searchable layer."""

    choices: list[str]


def _down(size: int, stride: int) -> int:
    return math.ceil(size / stride)


def stem_shapes(template: MobileNetTemplate) -> dict[str, int]:
    """Channels and spatial sizes of the fixed parts before the searchable layers."""
    c0 = template.channels(template.first_conv_channels)
    c1 = template.channels(template.first_block_channels)
    h0 = _down(template.input_size, template.first_conv_stride)
    return {"c0": c0, "c1": c1, "h0": h0}


def layer_layouts(template: MobileNetTemplate) -> list[LayerLayout]:
    shapes = stem_shapes(template)
    c_in, h = shapes["c1"], shapes["h0"]
    layouts = []
    for (channels, _, stride), repeat in zip(template.stages, template.stage_repeats()):
        c_out = template.channels(channels)
        for r in range(repeat):
            s = int(stride) if r == 0 else 1
            choices = list(LAYER_CHOICES) if r == 0 else LAYER_CHOICES + ["identity"]
            layouts.append(LayerLayout(len(layouts), c_in, c_out, h, h, s, choices))
            c_in, h = c_out, _down(h, s)
    return layouts


def choices_for_layer(template: MobileNetTemplate, i: int) -> list[str]:
    return list(layer_layouts(template)[i].choices)


def layer_instance(layout: LayerLayout, choice: str) -> OpInstance:
    return OpInstance(choice, layout.c_in, layout.c_out, layout.h, layout.w, layout.stride)


def fixed_instances(template: MobileNetTemplate) -> tuple[list[OpInstance], list[OpInstance]]:
    """``(before the searchable layers, after them)``."""
    shapes = stem_shapes(template)
    layouts = layer_layouts(template)
    c_last = layouts[-1].c_out if layouts else shapes["c1"]
    h_last = _down(layouts[-1].h, layouts[-1].stride) if layouts else shapes["h0"]
    c_feat = template.channels(template.feature_channels)
    s = template.input_size
    head = [
        OpInstance("first_conv", template.in_channels, shapes["c0"], s, s, template.first_conv_stride),
        OpInstance("first_block", shapes["c0"], shapes["c1"], shapes["h0"], shapes["h0"], 1),
    ]
    tail = [
        OpInstance("feature_mix", c_last, c_feat, h_last, h_last, 1),
        OpInstance("classifier", c_feat, template.num_classes, h_last, h_last, 1),
    ]
    return head, tail


def build_layer(inst: OpInstance) -> nn.Module:
    if inst.op == "identity":
        if inst.stride != 1 or inst.c_in != inst.c_out:
            raise NasDeployError(f"identity cannot change shape ({inst.key()}); identity is only a choice after a stage's first layer")
        return Identity()
    if inst.op not in LAYER_CHOICES:
        raise NasDeployError(f"unknown MobileNet layer choice {inst.op!r}; choose one of: {', '.join(LAYER_CHOICES + ['identity'])}")
    return build_op(inst.op, inst.c_in, inst.c_out, inst.stride)


def build_fixed(inst: OpInstance) -> nn.Module:
    if inst.op == "first_conv":
        return ConvBNAct(inst.c_in, inst.c_out, 3, inst.stride)
    if inst.op == "first_block":
        return InvertedResidual(inst.c_in, inst.c_out, 3, inst.stride, expand_ratio=1)
    if inst.op == "feature_mix":
        return ConvBNAct(inst.c_in, inst.c_out, 1)
    if inst.op == "classifier":
        return Classifier(inst.c_in, inst.c_out)
    raise NasDeployError(f"unknown MobileNet fixed part {inst.op!r}; choose one of: {', '.join(FIXED_PARTS)}")


def validate_arch(arch: LayerwiseArch, template: MobileNetTemplate) -> None:
    layouts = layer_layouts(template)
    if len(arch.choices) != len(layouts):
        raise NasDeployError(f"architecture has {len(arch.choices)} layers, the template has {len(layouts)}; search again for this template")
    for layout, choice in zip(layouts, arch.choices):
        if choice not in layout.choices:
            raise NasDeployError(f"layer {layout.index} cannot be {choice!r}; choose one of: {', '.join(layout.choices)}")


class MobileNetNetwork(nn.Module):
    """first conv -> first block -> searchable layers -> feature mix -> GAP + FC."""

    def __init__(self, arch: LayerwiseArch, template: MobileNetTemplate):
        super().__init__()
        validate_arch(arch, template)
        head, tail = fixed_instances(template)
        self.first_conv = build_fixed(head[0])
        self.first_block = build_fixed(head[1])
        self.layers = nn.Sequential(*[build_layer(layer_instance(l, c)) for l, c in zip(layer_layouts(template), arch.choices)])
        self.feature_mix = build_fixed(tail[0])
        self.classifier = build_fixed(tail[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_block(self.first_conv(x))
        x = self.layers(x)
        return self.classifier(self.feature_mix(x))


@SPACES.register("mobilenet")
class MobileNetSpace(SearchSpace):
    name = "mobilenet"

    def default_template(self, preset: str = "cpu", **overrides: Any) -> MobileNetTemplate:
        if preset not in PRESETS:
            raise NasDeployError(f"unknown MobileNet preset {preset!r}; choose one of: {', '.join(PRESETS)}")
        known = {f.name for f in fields(MobileNetTemplate)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise NasDeployError(f"unknown MobileNet template field(s) {unknown}; choose from: {', '.join(sorted(known))}")
        return replace(MobileNetTemplate(**PRESETS[preset]), **overrides)

    def template_from_dict(self, d: dict[str, Any]) -> MobileNetTemplate:
        known = {f.name for f in fields(MobileNetTemplate)}
        values = {k: v for k, v in d.items() if k in known}
        if "stages" in values:
            values["stages"] = [[int(x) for x in s] for s in values["stages"]]
        if values.get("depth") is not None:
            values["depth"] = [int(x) for x in values["depth"]]
        return MobileNetTemplate(**values)

    def sample(self, template: MobileNetTemplate, rng: random.Random) -> LayerwiseArch:
        return LayerwiseArch([rng.choice(l.choices) for l in layer_layouts(template)])

    def build(self, arch: LayerwiseArch, template: MobileNetTemplate) -> nn.Module:
        return MobileNetNetwork(arch, template)

    def op_instances(self, template: MobileNetTemplate) -> list[OpInstance]:
        head, tail = fixed_instances(template)
        layers = [layer_instance(l, c) for l in layer_layouts(template) for c in l.choices if c != "identity"]
        seen: dict[str, OpInstance] = {}
        for inst in head + layers + tail:
            seen.setdefault(inst.key(), inst)
        return list(seen.values())

    def arch_op_instances(self, arch: LayerwiseArch, template: MobileNetTemplate) -> list[OpInstance]:
        validate_arch(arch, template)
        head, tail = fixed_instances(template)
        layers = [layer_instance(l, c) for l, c in zip(layer_layouts(template), arch.choices) if c != "identity"]
        return head + layers + tail

    def build_op(self, inst: OpInstance) -> nn.Module:
        if inst.op in FIXED_PARTS:
            return build_fixed(inst)
        return build_layer(inst)

    def arch_to_json(self, arch: LayerwiseArch) -> dict[str, Any]:
        return {"layers": list(arch.choices)}

    def arch_graph(self, arch: LayerwiseArch, template: MobileNetTemplate):
        """A chain ``input -> layer_1 -> ... -> layer_n -> output`` whose nodes are the layer-wise choices
        (``identity`` included, so every architecture of a template has the same nodes); each node also
        carries a one-hot of its position, since the same block costs and learns differently per stage."""
        from nasdeploy.spaces.graph import ArchGraph, GraphPart, dag, one_hot_rows

        validate_arch(arch, template)
        names = ("input", *arch.choices, "output")
        vocabulary = ("input", "output", *LAYER_CHOICES, "identity")
        edges = [(k, k + 1) for k in range(len(names) - 1)]
        return ArchGraph((GraphPart(dag(len(names), edges), names, vocabulary, one_hot_rows(range(len(names)), len(names))),))

    def draw(self, arch: LayerwiseArch, template: MobileNetTemplate, path, title: str = ""):
        from nasdeploy.spaces.arch_plot import plot_layerwise

        return plot_layerwise(arch.choices, [layout.stride for layout in layer_layouts(template)], path, title=title)

    def arch_from_json(self, d: dict[str, Any]) -> LayerwiseArch:
        try:
            layers = d["layers"]
        except (KeyError, TypeError):
            raise NasDeployError("MobileNet architecture has no 'layers' list; expected {\"layers\": [\"mb3_e3\", ...]}") from None
        if not isinstance(layers, list) or not all(isinstance(c, str) for c in layers):
            raise NasDeployError("MobileNet architecture 'layers' must be a list of choice names, e.g. [\"mb3_e3\", \"identity\"]")
        allowed = set(LAYER_CHOICES) | {"identity"}
        for i, c in enumerate(layers):
            if c not in allowed:
                raise NasDeployError(f"layer {i} has unknown choice {c!r}; choose one of: {', '.join(sorted(allowed))}")
        return LayerwiseArch(list(layers))
