"""Latency predictions from a table: exact sums for one architecture, differentiable expectations for search.

* ``predict_latency_ms``: sum of the arch's entries, passed through the table's overhead model.
* ``expected_latency_darts``: Algorithm 3 of Herron (2023, §4.3), the ICDARTS latency penalty P(α) of Eq. 4.1.
* ``expected_latency_layerwise``: the expected latency of a layer-wise (MobileNet-like) supernet.
* ``cheapest_latency_ms``: the predicted latency of the cheapest architecture, for budget checks.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Sequence

import torch

from nasdeploy.latency.overhead import apply_overhead
from nasdeploy.latency.table import LatencyTable
from nasdeploy.spaces.base import OpInstance, SearchSpace, get_space

# Ops that compute nothing worth timing: DARTS' zero op, ICDARTS' random op, MobileNet's skipped layer.
ZERO_COST_OPS = frozenset({"none", "random", "identity"})


def op_latency_ms(table: LatencyTable, inst: OpInstance, corrected: bool = True) -> float:
    """The op's cost inside a network: its entry plus the overhead model's per-instance correction, if any
    (``latency.overhead``; never below 0). ``corrected=False``: the entry as measured alone."""
    if inst.op in ZERO_COST_OPS and not table.has(inst):
        return 0.0
    entry = table.lookup_ms(inst)
    if not corrected:
        return entry
    correction = ((table.overhead or {}).get("corrections") or {}).get(inst.key())
    return entry if correction is None else max(entry + correction, 0.0)


def table_space_template(table: LatencyTable, space: SearchSpace | None = None, template: Any = None):
    space = space or get_space(table.space)
    return space, (template if template is not None else space.template_from_dict(table.template))


def sum_and_count(table: LatencyTable, instances: Sequence[OpInstance], corrected: bool = True) -> tuple[float, int]:
    """S (sum of entries, ms; with per-instance corrections unless ``corrected=False``) and N (non-zero-cost ops)."""
    costs = [op_latency_ms(table, inst, corrected) for inst in instances]
    return float(sum(costs)), sum(1 for inst in instances if inst.op not in ZERO_COST_OPS)


def overhead_coef(table: LatencyTable) -> dict[str, float] | None:
    """The fitted overhead coefficients, or None (no model, or a profile interrupted before the fit)."""
    return (table.overhead or {}).get("coef") or None


def predict_from_instances(table: LatencyTable, instances: Sequence[OpInstance]) -> float:
    total, count = sum_and_count(table, instances)
    coef = overhead_coef(table)
    return total if coef is None else float(apply_overhead(coef, total, count))


def predict_latency_ms(table: LatencyTable, arch: Any, space: SearchSpace | None = None, template: Any = None) -> float:
    """Predicted end-to-end latency of ``arch``: its entries summed, then the overhead model (if fitted)."""
    space, template = table_space_template(table, space, template)
    return predict_from_instances(table, space.arch_op_instances(arch, template))


# ----------------------------------------------------------------------------------------------
# DARTS: Algorithm 3


def edge_offset(node: int) -> int:
    """Index of node ``node``'s first incoming edge: nodes before it have 2, 3, ... inputs."""
    return node * (node + 3) // 2


def cell_expected_latency(alpha: torch.Tensor, edge_costs: torch.Tensor, nodes: int) -> torch.Tensor:
    """The maximum expected latency of one cell (inner loops of Algorithm 3).

    ``alpha`` and ``edge_costs`` are [num_edges, num_ops]: architecture weights and each op's table
    latency (ms) on that edge. Node j has inputs k = 0..j+1 (the two cell inputs, then nodes 0..j-1).
    """
    edge_latency = (torch.softmax(alpha, dim=-1) * edge_costs).sum(dim=-1)  # l^n_k = Σ_o softmax(α_k)_o L_o
    node_latency: list[torch.Tensor] = []
    for j in range(nodes):
        incoming = []
        for k in range(j + 2):
            l_n = edge_latency[edge_offset(j) + k]
            if k >= 2:
                l_n = l_n + node_latency[k - 2]  # l^n_k += l^c_{k-2}: the input node's own latency
            incoming.append(l_n)
        node_latency.append(torch.stack(incoming).sum())  # l^c_j = Σ_k l^n_k
    l_c = torch.stack(node_latency)
    return (l_c * torch.softmax(l_c, dim=0)).sum()  # Σ_j l^c_j softmax(l^c)_j


def darts_edge_costs(layout, op_names: Sequence[str], nodes: int, table: LatencyTable,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[num_edges, num_ops] table latencies of each candidate op on each edge of cell ``layout``."""
    from nasdeploy.spaces.darts import edge_instance

    rows = []
    for j in range(nodes):
        for k in range(j + 2):
            rows.append([0.0 if op in ZERO_COST_OPS else op_latency_ms(table, edge_instance(layout, k, op)) for op in op_names])
    return torch.tensor(rows, dtype=dtype)


def expected_latency_darts(alpha_normal: torch.Tensor, alpha_reduce: torch.Tensor, op_names: Sequence[str],
                           template: Any, table: LatencyTable, include_fixed: bool = True) -> torch.Tensor:
    """Algorithm 3 (Herron 2023): the search network's expected latency P(α) in ms, differentiable in α.

    Each cell of ``cell_layouts(template)`` (normal cells use ``alpha_normal``, reduction cells
    ``alpha_reduce``) contributes its maximum expected latency at its own shapes, so the cell counts
    C_i of the algorithm are the repeated layouts. With ``include_fixed`` the constant latency of the
    fixed parts (stem, preprocessing, classifier) is added, so that P is in the same ms as a budget;
    the overhead model is not applied (Algorithm 3 is not a sum of the network's ops).
    """
    costs, fixed = darts_costs(table, template, tuple(op_names), alpha_normal.dtype, alpha_normal.device)
    total = alpha_normal.new_zeros(())
    for reduction, edge_costs in costs:
        alpha = alpha_reduce if reduction else alpha_normal
        total = total + cell_expected_latency(alpha, edge_costs, template.nodes)  # P += C_i · (Σ l^c softmax(l^c))
    if include_fixed:
        total = total + fixed
    return total


def darts_costs(table: LatencyTable, template: Any, op_names: tuple[str, ...], dtype: torch.dtype, device: torch.device):
    """Per cell ``(reduction, [num_edges, num_ops] costs)`` and the fixed parts' ms, cached on the table
    (a search evaluates Algorithm 3 every step)."""
    from nasdeploy.latency.table import latency_template
    from nasdeploy.spaces.darts import cell_layouts

    corrections = tuple(sorted(((table.overhead or {}).get("corrections") or {}).items()))
    key = ("darts", op_names, repr(sorted(latency_template(template).items())), str(dtype), str(device), len(table.entries),
           hash(corrections))
    cache = table.__dict__.setdefault("_expected_latency_cache", {})
    if key not in cache:
        by_shape: dict[tuple, torch.Tensor] = {}
        costs = []
        for layout in cell_layouts(template):
            shape = (layout.reduction, layout.reduction_prev, layout.c_pp, layout.c_p, layout.c, layout.h, layout.w)
            if shape not in by_shape:
                by_shape[shape] = darts_edge_costs(layout, op_names, template.nodes, table, dtype).to(device)
            costs.append((layout.reduction, by_shape[shape]))
        cache[key] = (costs, fixed_parts_ms(table, get_space(table.space), template))
    return cache[key]


def darts_edge_instances(arch: Any, template: Any) -> list[OpInstance]:
    """The op instances on the chosen edges of a DARTS genotype (no fixed parts)."""
    from nasdeploy.spaces.darts import edge_instance, genotype_layouts

    found = []
    for layout in genotype_layouts(arch, template):
        for node in (arch.reduce if layout.reduction else arch.normal):
            found += [edge_instance(layout, k, op) for op, k in node if op not in ZERO_COST_OPS]
    return found


def fixed_instances(space: SearchSpace, template: Any) -> list[OpInstance]:
    """The op instances every architecture of ``template`` contains (stem, preprocessing, classifier...)."""
    arch = space.sample(template, random.Random(0))
    chosen = Counter(searchable_instances(space, arch, template))
    fixed = []
    for inst in space.arch_op_instances(arch, template):
        if chosen[inst] > 0:
            chosen[inst] -= 1
        else:
            fixed.append(inst)
    return fixed


def searchable_instances(space: SearchSpace, arch: Any, template: Any) -> list[OpInstance]:
    if space.name == "darts":
        return darts_edge_instances(arch, template)
    from nasdeploy.spaces.mobilenet import layer_instance, layer_layouts

    return [layer_instance(layout, choice) for layout, choice in zip(layer_layouts(template), arch.choices)]


def fixed_parts_ms(table: LatencyTable, space: SearchSpace, template: Any) -> float:
    return sum(op_latency_ms(table, inst) for inst in fixed_instances(space, template))


# ----------------------------------------------------------------------------------------------
# Layer-wise (MobileNet-like) spaces


def expected_latency_layerwise(probs: Sequence[torch.Tensor], template: Any, table: LatencyTable) -> torch.Tensor:
    """E[T] = a + b·(Σ_layers Σ_choices p·L + fixed) + c·(E[number of ops]); identity costs 0.

    ``probs[i]`` is a distribution over ``layer_layouts(template)[i].choices``. For one-hot ``probs``
    this equals ``predict_latency_ms`` of that architecture.
    """
    from nasdeploy.spaces.mobilenet import layer_instance, layer_layouts

    layouts = layer_layouts(template)
    if len(probs) != len(layouts):
        raise ValueError(f"expected {len(layouts)} probability vectors (one per layer), got {len(probs)}")
    space = get_space(table.space)
    fixed = fixed_instances(space, template)
    fixed_sum, fixed_count = sum_and_count(table, fixed)
    expected_sum = probs[0].new_tensor(fixed_sum)
    expected_count = probs[0].new_tensor(float(fixed_count))
    for p, layout in zip(probs, layouts):
        costs = [0.0 if c in ZERO_COST_OPS else op_latency_ms(table, layer_instance(layout, c)) for c in layout.choices]
        is_op = [0.0 if c in ZERO_COST_OPS else 1.0 for c in layout.choices]
        expected_sum = expected_sum + (p * p.new_tensor(costs)).sum()
        expected_count = expected_count + (p * p.new_tensor(is_op)).sum()
    coef = overhead_coef(table)
    return expected_sum if coef is None else apply_overhead(coef, expected_sum, expected_count)


# ----------------------------------------------------------------------------------------------
# Budget checks


def cheapest_architecture(table: LatencyTable, space_name: str, template: Any, op_names: Sequence[str] | None = None) -> Any:
    """The architecture with the smallest sum of entries (DARTS: 2 inputs per node, one genotype for all cells of a type)."""
    space = get_space(space_name)
    if space_name == "darts":
        return cheapest_genotype(table, template, op_names)
    from nasdeploy.spaces.mobilenet import LayerwiseArch, layer_instance, layer_layouts

    choices = []
    for layout in layer_layouts(template):
        allowed = [c for c in layout.choices if op_names is None or c in op_names] or list(layout.choices)
        choices.append(min(allowed, key=lambda c: 0.0 if c in ZERO_COST_OPS else op_latency_ms(table, layer_instance(layout, c))))
    del space
    return LayerwiseArch(choices)


def cheapest_genotype(table: LatencyTable, template: Any, op_names: Sequence[str] | None = None):
    from nasdeploy.spaces.darts import Genotype, cell_layouts, edge_instance
    from nasdeploy.spaces.ops import OP_SPACES

    candidates = [op for op in (op_names or OP_SPACES[str(template.op_space)]) if op not in ZERO_COST_OPS]
    layouts = cell_layouts(template)
    genes = {}
    for reduction in (False, True):
        cells = [layout for layout in layouts if layout.reduction == reduction]
        nodes = []
        for j in range(template.nodes):
            # cheapest op per input, summed over every cell of this type (they share one genotype)
            best = []
            for k in range(j + 2):
                cost, op = min((sum(op_latency_ms(table, edge_instance(c, k, op)) for c in cells), op) for op in candidates)
                best.append((cost, k, op))
            nodes.append([(op, k) for _, k, op in sorted(best)[:2]])
        genes[reduction] = nodes
    concat = list(range(2, template.nodes + 2))
    return Genotype(normal=genes[False], normal_concat=concat, reduce=genes[True], reduce_concat=concat)


def cheapest_latency_ms(table: LatencyTable, space_name: str, template: Any, op_names: Sequence[str] | None = None) -> float:
    """Predicted latency of the cheapest architecture of ``template``: no budget below it can be met."""
    arch = cheapest_architecture(table, space_name, template, op_names)
    return predict_latency_ms(table, arch, get_space(space_name), template)
