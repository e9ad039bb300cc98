"""How SE-NAS sees each search space: its searchable layers, its supernet, and per-(layer, choice) costs.

* ``mobilenet`` (layer-wise): a layer is a ``LayerLayout``; the supernet is ``stem -> layers -> head``
  where stem and head are the space's fixed parts (``fixed_instances``) built with ``space.build_op``.
* ``darts`` (edge-wise): a layer is an edge of the normal or reduction cell; the candidates are the
  template's op space; the supernet is the DARTS skeleton (stem, cells with preprocessing, classifier)
  with one module per (cell, edge, op); every cell of a type follows the path's genotype.

Costs are computed on the *deployment* template (the LUT's template when a table is given), the
supernet is built on the *search* template (the deployment template with the dataset's classes and
channels). FLOPs per (layer, choice) come from ``count_flops`` of each candidate module once;
the fixed part is ``count_flops(whole reference network) - its layers``. Latency per (layer, choice)
is the predictor's own additive model (``predict_from_instances([inst]) - predict_from_instances([])``),
so path latencies agree with ``predict_latency_ms``.

A space gains SE-NAS support by registering its adapter factory in ``ADAPTERS``; ``make_adapter`` looks it up.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from nasdeploy.errors import NasDeployError
from nasdeploy.registry import Registry
from nasdeploy.search.senas_paths import EdgewisePaths, LayerCosts, LayerwisePaths, Path, PathSpace
from nasdeploy.search.supernet import Supernet, LayerwiseSupernet
from nasdeploy.spaces.darts import all_node_inputs, cell_forward


@dataclass
class SpaceAdapter:
    name: str
    paths: PathSpace
    build_supernet: Callable[[], Supernet]
    to_arch: Callable[[Path], Any]
    flops: LayerCosts
    latency: LayerCosts | None
    predict_latency: Callable[[Path], float] | None
    cheapest_latency: Callable[[], float] | None
    strides: list[int]


def input_shape(inst) -> tuple[int, int, int, int]:
    return (1, inst.c_in, inst.h, inst.w)


def module_flops(space, inst) -> int:
    from nasdeploy.spaces.flops import count_flops

    return int(count_flops(space.build_op(inst), input_shape(inst)))


def network_flops(space, arch, template) -> int:
    from nasdeploy.spaces.flops import count_flops

    model = space.build(arch, template).eval()
    return int(count_flops(model, (1, template.in_channels, template.input_size, template.input_size)))


def latency_costs(table, per_layer_instances: list[dict[str, list]]) -> list[dict[str, float]]:
    """Each (layer, choice)'s share of the predicted latency (entries through the overhead model)."""
    from nasdeploy.latency.predictor import predict_from_instances

    base = predict_from_instances(table, [])
    return [{c: predict_from_instances(table, insts) - base for c, insts in layer.items()} for layer in per_layer_instances]


def costs_from(per_layer: list[dict[str, float]], paths: PathSpace, ref: Path, total: float) -> LayerCosts:
    partial = LayerCosts(0.0, per_layer)
    return LayerCosts(total - partial.of(paths, ref), per_layer)


AdapterFactory = Callable[..., SpaceAdapter]  # (search_template, deploy_template, table=None) -> SpaceAdapter
ADAPTERS: Registry[AdapterFactory] = Registry("SE-NAS space adapter")


def make_adapter(space_name: str, search_template, deploy_template, table=None) -> SpaceAdapter:
    """The registered adapter of ``space_name``; a space gains SE-NAS support by ``@ADAPTERS.register(name)``."""
    if space_name not in ADAPTERS:
        names = ADAPTERS.names()
        raise NasDeployError(f"SE-NAS supports the {' and '.join(names)} spaces, not {space_name!r}; "
                             f"pass --space {' or '.join(names)}")
    return ADAPTERS.get(space_name)(search_template, deploy_template, table)


# ---------------------------------------------------------------------------------- MobileNet


def reference_layerwise(layouts) -> list[str]:
    """Per layer, the first choice that is not ``identity``."""
    return [next(c for c in layout.choices if c != "identity") for layout in layouts]


@ADAPTERS.register("mobilenet")
def mobilenet_adapter(search_template, deploy_template, table=None) -> SpaceAdapter:
    from nasdeploy.spaces.base import get_space
    from nasdeploy.spaces.mobilenet import LayerwiseArch, fixed_instances, layer_instance, layer_layouts

    space = get_space("mobilenet")
    layouts = layer_layouts(search_template)
    deploy_layouts = layer_layouts(deploy_template)
    paths = LayerwisePaths([layout.choices for layout in deploy_layouts])
    to_arch = lambda path: LayerwiseArch(list(path.choices))  # noqa: E731

    def build_supernet() -> Supernet:
        prefix, suffix = fixed_instances(search_template)
        stem = nn.Sequential(*[space.build_op(inst) for inst in prefix])
        head = nn.Sequential(*[space.build_op(inst) for inst in suffix])
        return LayerwiseSupernet(paths, stem, head, lambda i, c: space.build_op(layer_instance(layouts[i], c)))

    ref = Path(tuple(reference_layerwise(deploy_layouts)))
    flops_per_layer = [{c: float(module_flops(space, layer_instance(l, c))) for c in l.choices} for l in deploy_layouts]
    flops = costs_from(flops_per_layer, paths, ref, float(network_flops(space, to_arch(ref), deploy_template)))
    latency = predict = cheapest = None
    if table is not None:
        from nasdeploy.latency.predictor import cheapest_latency_ms, predict_latency_ms

        per_layer = latency_costs(table, [{c: [layer_instance(l, c)] for c in l.choices} for l in deploy_layouts])
        predict = lambda path: predict_latency_ms(table, to_arch(path), space, deploy_template)  # noqa: E731
        latency = costs_from(per_layer, paths, ref, predict(ref))
        cheapest = lambda: cheapest_latency_ms(table, "mobilenet", deploy_template)  # noqa: E731
    return SpaceAdapter("mobilenet", paths, build_supernet, to_arch, flops, latency, predict, cheapest,
                        [l.stride for l in deploy_layouts])


# ---------------------------------------------------------------------------------- DARTS


def darts_op_names(template) -> list[str]:
    from nasdeploy.spaces.ops import op_space_names

    return [op for op in op_space_names(template.op_space) if op not in ("none", "random")]


def genotype_of(paths: EdgewisePaths, path: Path, nodes: int):
    from nasdeploy.spaces.darts import Genotype

    cells = []
    for cell_type in range(2):
        cell = []
        for node in range(nodes):
            cell.append([(path.choices[paths.edge(cell_type, node, i)], i) for i in paths.node_inputs(path, cell_type, node)])
        cells.append(cell)
    concat = list(range(2, nodes + 2))
    return Genotype(normal=cells[0], normal_concat=concat, reduce=cells[1], reduce_concat=concat)


class DartsSupernet(Supernet):
    """DARTS skeleton: stem, ``layers`` cells (reduction at 1/3 and 2/3), classifier; one op per chosen edge."""

    def __init__(self, paths: EdgewisePaths, template, space):
        from nasdeploy.spaces.darts import CellPreprocess, Classifier, cell_layouts, edge_instance, make_stem

        layouts = cell_layouts(template)
        units = [[cell for cell, l in enumerate(layouts) if l.reduction == bool(layer >= paths.num_edges)]
                 for layer in range(paths.num_layers)]
        super().__init__(paths, units)
        self.layouts = layouts
        self.nodes = template.nodes
        self.stem = make_stem(template)
        self.preprocess = nn.ModuleList([CellPreprocess(l) for l in layouts])
        for cell, layout in enumerate(layouts):
            cell_type = int(layout.reduction)
            for node, inputs in enumerate(all_node_inputs(self.nodes)):
                for i in inputs:
                    layer = paths.edge(cell_type, node, i)
                    for op in paths.candidates[layer]:
                        self.add_candidate(cell, layer, op, space.build_op(edge_instance(layout, i, op)))
        self.classifier = Classifier(template)

    def fixed_modules(self) -> list[nn.Module]:
        return [self.stem, self.preprocess, self.classifier]

    def cell(self, index: int, s0: torch.Tensor, s1: torch.Tensor, path: Path) -> torch.Tensor:
        """Cell ``index`` on ``path``: node j = Σ o(x_i) over the path's two inputs of node j, nodes concatenated."""
        cell_type = int(self.layouts[index].reduction)
        node_inputs = [self.paths.node_inputs(path, cell_type, node) for node in range(self.nodes)]

        def edge_output(node: int, slot: int, i: int, x: torch.Tensor) -> torch.Tensor:
            return self.op(index, self.paths.edge(cell_type, node, i), path)(x)

        return cell_forward(s0, s1, self.preprocess[index], node_inputs, edge_output)

    def forward(self, x: torch.Tensor, path: Path) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for index in range(len(self.layouts)):
            s0, s1 = s1, self.cell(index, s0, s1, path)
        return self.classifier(s1)


@ADAPTERS.register("darts")
def darts_adapter(search_template, deploy_template, table=None) -> SpaceAdapter:
    from nasdeploy.spaces.base import get_space
    from nasdeploy.spaces.darts import cell_layouts, edge_instance

    space = get_space("darts")
    op_names = darts_op_names(deploy_template)
    paths = EdgewisePaths(op_names, deploy_template.nodes)
    to_arch = lambda path: genotype_of(paths, path, deploy_template.nodes)  # noqa: E731
    layouts = cell_layouts(deploy_template)

    def edge_instances(layer: int, op: str) -> list:
        cell_type, node, i = paths.locate(layer)
        return [edge_instance(l, i, op) for l in layouts if int(l.reduction) == cell_type]

    flops_per_layer = [{op: float(sum(module_flops(space, inst) for inst in edge_instances(layer, op))) for op in op_names}
                       for layer in range(paths.num_layers)]
    ref = paths.sample([op_names] * paths.num_layers, random.Random(0))
    flops = costs_from(flops_per_layer, paths, ref, float(network_flops(space, to_arch(ref), deploy_template)))
    latency = predict = cheapest = None
    if table is not None:
        from nasdeploy.latency.predictor import cheapest_latency_ms, predict_latency_ms

        per_layer = latency_costs(table, [{op: edge_instances(layer, op) for op in op_names} for layer in range(paths.num_layers)])
        predict = lambda path: predict_latency_ms(table, to_arch(path), space, deploy_template)  # noqa: E731
        latency = costs_from(per_layer, paths, ref, predict(ref))
        cheapest = lambda: cheapest_latency_ms(table, "darts", deploy_template, op_names)  # noqa: E731
    return SpaceAdapter("darts", paths, lambda: DartsSupernet(paths, search_template, space), to_arch, flops, latency,
                        predict, cheapest, [])


def search_template_for(space, deploy_template, num_classes: int, channels: int):
    """The deployment template with the dataset's classes and channels (and no auxiliary head / drop-path)."""
    fields = {f.name for f in dataclasses.fields(deploy_template)}
    changes: dict[str, Any] = {"num_classes": num_classes, "in_channels": channels}
    if "auxiliary" in fields:
        changes["auxiliary"] = False
    if "drop_path" in fields:
        changes["drop_path"] = 0.0
    return dataclasses.replace(deploy_template, **{k: v for k, v in changes.items() if k in fields})
