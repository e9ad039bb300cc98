"""How SE-NAS sees each search space: its searchable layers, its supernet, and per-(layer, choice) costs.

* ``mobilenet`` (layer-wise): a layer is a ``LayerLayout``; the supernet is ``stem -> layers -> head``
  where stem and head are the space's fixed parts (``fixed_instances``) built with ``space.build_op``.
* ``darts`` (edge-wise): a layer is an edge of the normal or reduction cell; the supernet is the DARTS
  skeleton (stem, cells with preprocessing, classifier) with one module per (cell, edge, op); every cell of a
  type follows the path. ``darts_cell = "paper"`` (default, §3.5): all 14 edges, the template's op space plus
  ``none`` (op space 3 + none = the paper's 8 ops, 8^14 per cell); ``"two-inputs"``: the template's ops and two
  sampled inputs per node, so every path is a standard DARTS genotype.

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
from nasdeploy.search.shared.paths import NONE, AllEdgesPaths, EdgewisePaths, LayerCosts, LayerwisePaths, Path, PathSpace
from nasdeploy.search.shared.supernet import Supernet, LayerwiseSupernet
from nasdeploy.spaces.blocks import Zero
from nasdeploy.spaces.darts import all_node_inputs, cell_forward, edge_stride


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
    first_stage_epochs: int  # the paper's first-stage supernet epochs on this space (§4.3)


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


AdapterFactory = Callable[..., SpaceAdapter]  # (search_template, deploy_template, table=None, config=None) -> SpaceAdapter
ADAPTERS: Registry[AdapterFactory] = Registry("SE-NAS space adapter")


def make_adapter(space_name: str, search_template, deploy_template, table=None, config=None) -> SpaceAdapter:
    """The registered adapter of ``space_name``; a space gains SE-NAS support by ``@ADAPTERS.register(name)``."""
    if space_name not in ADAPTERS:
        names = ADAPTERS.names()
        raise NasDeployError(f"SE-NAS supports the {' and '.join(names)} spaces, not {space_name!r}; "
                             f"pass --space {' or '.join(names)}")
    return ADAPTERS.get(space_name)(search_template, deploy_template, table, config)


# ---------------------------------------------------------------------------------- MobileNet


def reference_layerwise(layouts) -> list[str]:
    """Per layer, the first choice that is not ``identity``."""
    return [next(c for c in layout.choices if c != "identity") for layout in layouts]


@ADAPTERS.register("mobilenet")
def mobilenet_adapter(search_template, deploy_template, table=None, config=None) -> SpaceAdapter:
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
                        [l.stride for l in deploy_layouts], first_stage_epochs=100)  # §4.3: 100 first-stage epochs


# ---------------------------------------------------------------------------------- DARTS


def darts_op_names(template, with_none: bool = False) -> list[str]:
    """The template's op space (``op_space_names`` has no ``none``), plus ``none`` for the paper's space."""
    from nasdeploy.spaces.ops import op_space_names

    return [op for op in op_space_names(template.op_space) if op not in (NONE, "random")] + ([NONE] if with_none else [])


DARTS_CELLS: dict[str, Callable[[list[str], int], EdgewisePaths]] = {
    "paper": lambda ops, nodes: AllEdgesPaths(ops + [NONE], nodes),  # §3.5: 14 edges x 8 ops incl. none
    "two-inputs": EdgewisePaths,  # DARTS genotypes: two sampled inputs per node
}


def genotype_of(paths: EdgewisePaths, path: Path, nodes: int):
    """The path's genotype; a node whose edges are all ``none`` keeps one ``none`` edge (its output is zero)."""
    from nasdeploy.spaces.darts import Genotype

    cells = []
    for cell_type in range(2):
        cell = []
        for node in range(nodes):
            inputs = paths.node_inputs(path, cell_type, node)
            cell.append([(path.choices[paths.edge(cell_type, node, i)], i) for i in inputs] or [(NONE, 0)])
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
                        if op != NONE:  # zero: no weights, never on a path
                            self.add_candidate(cell, layer, op, space.build_op(edge_instance(layout, i, op)))
        self.classifier = Classifier(template)

    def fixed_modules(self) -> list[nn.Module]:
        return [self.stem, self.preprocess, self.classifier]

    def cell(self, index: int, s0: torch.Tensor, s1: torch.Tensor, path: Path) -> torch.Tensor:
        """Cell ``index`` on ``path``: node j = Σ o(x_i) over the path's inputs of node j, nodes concatenated."""
        layout = self.layouts[index]
        cell_type = int(layout.reduction)
        # a node with no edge on the path outputs zeros of its shape (DARTS' zero op on input 0)
        node_inputs = [self.paths.node_inputs(path, cell_type, node) for node in range(self.nodes)]
        empty = {node for node, inputs in enumerate(node_inputs) if not inputs}

        def edge_output(node: int, slot: int, i: int, x: torch.Tensor) -> torch.Tensor:
            if node in empty:
                return Zero(layout.c, edge_stride(layout, i))(x)
            return self.op(index, self.paths.edge(cell_type, node, i), path)(x)

        node_inputs = [inputs or (0,) for inputs in node_inputs]

        return cell_forward(s0, s1, self.preprocess[index], node_inputs, edge_output)

    def forward(self, x: torch.Tensor, path: Path) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for index in range(len(self.layouts)):
            s0, s1 = s1, self.cell(index, s0, s1, path)
        return self.classifier(s1)


@ADAPTERS.register("darts")
def darts_adapter(search_template, deploy_template, table=None, config=None) -> SpaceAdapter:
    from nasdeploy.spaces.base import get_space
    from nasdeploy.spaces.darts import cell_layouts, edge_instance

    space = get_space("darts")
    cell = getattr(config, "darts_cell", "paper")
    if cell not in DARTS_CELLS:
        raise NasDeployError(f"unknown darts_cell {cell!r}; pass --set darts_cell={' or '.join(DARTS_CELLS)}")
    op_names = darts_op_names(deploy_template)
    paths = DARTS_CELLS[cell](op_names, deploy_template.nodes)
    to_arch = lambda path: genotype_of(paths, path, deploy_template.nodes)  # noqa: E731
    layouts = cell_layouts(deploy_template)

    def edge_instances(layer: int, op: str) -> list:
        if op == NONE:
            return []  # zero: no op instance, no FLOPs, no latency
        cell_type, node, i = paths.locate(layer)
        return [edge_instance(l, i, op) for l in layouts if int(l.reduction) == cell_type]

    choices = paths.candidates[0]
    flops_per_layer = [{op: float(sum(module_flops(space, inst) for inst in edge_instances(layer, op))) for op in choices}
                       for layer in range(paths.num_layers)]
    ref = paths.sample([op_names] * paths.num_layers, random.Random(0))  # no none: every edge of ref is costed
    flops = costs_from(flops_per_layer, paths, ref, float(network_flops(space, to_arch(ref), deploy_template)))
    latency = predict = cheapest = None
    if table is not None:
        from nasdeploy.latency.predictor import cheapest_latency_ms, predict_latency_ms

        per_layer = latency_costs(table, [{op: edge_instances(layer, op) for op in choices} for layer in range(paths.num_layers)])
        predict = lambda path: predict_latency_ms(table, to_arch(path), space, deploy_template)  # noqa: E731
        latency = costs_from(per_layer, paths, ref, predict(ref))
        cheapest = lambda: cheapest_latency_ms(table, "darts", deploy_template, op_names)  # noqa: E731
    return SpaceAdapter("darts", paths, lambda: DartsSupernet(paths, search_template, space), to_arch, flops, latency,
                        predict, cheapest, [], first_stage_epochs=200)  # §4.3: 200 first-stage epochs on DARTS


def search_template_for(space, deploy_template, num_classes: int, channels: int):
    """The deployment template with the dataset's classes and channels (and no auxiliary head / drop-path)."""
    fields = {f.name for f in dataclasses.fields(deploy_template)}
    changes: dict[str, Any] = {"num_classes": num_classes, "in_channels": channels}
    if "auxiliary" in fields:
        changes["auxiliary"] = False
    if "drop_path" in fields:
        changes["drop_path"] = 0.0
    return dataclasses.replace(deploy_template, **{k: v for k, v in changes.items() if k in fields})
