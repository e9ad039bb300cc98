"""Latency predictions from a table: exact sums for one architecture, differentiable expectations for search.

* ``predict_latency_ms``: sum of the arch's entries, passed through the table's overhead model.
* ``expected_latency_darts``: Algorithm 3 of Herron (2023, §4.3), the ICDARTS latency penalty P(α) of Eq. 4.1,
  from a table (ms) or from Table 4.6-style op weights (``OpWeights``, unitless).
* ``expected_latency_layerwise``: the expected latency of a layer-wise (MobileNet-like) supernet.
* ``cheapest_latency_ms``: the predicted latency of the cheapest architecture, for budget checks.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Mapping, Sequence

import torch

from nasdeploy.errors import NasDeployError
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


def overhead_coef(table: LatencyTable, scaled: bool = True) -> dict[str, float] | None:
    """The fitted overhead coefficients, or None (no model, or a profile interrupted before the fit).

    ``scaled``: multiplied by ``table.speed_ratio``, the machine's drift since profiling that the table's last spot
    check measured (``latency.trust``), so every prediction and expectation built on them is in today's ms.
    """
    coef = (table.overhead or {}).get("coef") or None
    ratio = table.speed_ratio if scaled else 1.0
    if coef is None or ratio == 1.0:
        return coef
    return {name: value * ratio for name, value in coef.items()}


def predict_from_instances(table: LatencyTable, instances: Sequence[OpInstance], scaled: bool = True,
                           merged: Mapping[str, float] | None = None) -> float:
    """The overhead model on these instances; ``merged``: the work among them the runtime merges, by feature
    (``SearchSpace.merged_work``)."""
    total, count = sum_and_count(table, instances)
    coef = overhead_coef(table, scaled)
    return total if coef is None else float(apply_overhead(coef, total, count, merged))


def predict_latency_ms(table: LatencyTable, arch: Any, space: SearchSpace | None = None, template: Any = None,
                       scaled: bool = True) -> float:
    """Predicted end-to-end latency of ``arch``: its entries summed, then the overhead model (if fitted; with the work
    the runtime merges), times the machine's drift (``table.speed_ratio``; ``scaled=False``: as the table was profiled)."""
    space, template = table_space_template(table, space, template)
    return predict_from_instances(table, space.arch_op_instances(arch, template), scaled,
                                  space.merged_work(arch, template))


# ----------------------------------------------------------------------------------------------
# DARTS: Algorithm 3


class OpWeights:
    """Table 4.6: one unitless latency weight per operation (``profile --method stem-repeat``), the same on every edge.

    As a ``source`` of ``expected_latency_darts`` it makes P(α) the paper's weighted sum of normalised weights,
    so a fixed δ of Eq. 4.1 means what it means in Table 4.7 (δ ∈ {0.01, 0.05, 0.1}).
    """

    unit = "normalised weight"

    def __init__(self, weights: dict[str, float], path: str | None = None):
        self.weights = {op: float(w) for op, w in weights.items()}
        self.path = path

    def cost(self, op: str, inst: OpInstance) -> float:
        if op in self.weights:
            return self.weights[op]
        if op in ZERO_COST_OPS:
            return 0.0
        raise NasDeployError(f"stem-repeat weights {self.path or ''} have no weight for op {op!r} (they have: "
                             f"{', '.join(self.weights)}); profile them for this op space with --method stem-repeat")


class TableCosts:
    """A latency table as a ``source``: op o on an edge costs its table entry at that edge's shape (ms)."""

    unit = "ms"

    def __init__(self, table: LatencyTable):
        self.table = table

    def cost(self, op: str, inst: OpInstance) -> float:
        return 0.0 if op in ZERO_COST_OPS else op_latency_ms(self.table, inst)


def edge_offset(node: int) -> int:
    """Index of node ``node``'s first incoming edge: nodes before it have 2, 3, ... inputs."""
    return node * (node + 3) // 2


def node_pair_weights(alpha: torch.Tensor, nodes: int, rule: str = "darts",
                      edge_weights: torch.Tensor | None = None) -> torch.Tensor:
    """w_{k,o}: α normalised over each node's incoming (edge k, op o) pairs as ``rule`` normalises them.

    * ``idarts`` / ``xdarts``: one softmax over all of node j's pairs, as their search network mixes and their
      rule discretises (``search.shared.discretize.mixing_weights``, §4.2, Figure 4.8b/c).
    * ``darts``: the network mixes with a softmax per edge (Eq. 3.1) and the rule keeps the edges whose
      strongest op weighs most (§3.1.1). So w_{k,o} = softmax_o(α_k)_o · softmax_k(s)_k with edge strength
      s_k = max_o softmax_o(α_k)_o, the rule's own ranking score. Like the network and the rule, it is
      unchanged by adding a constant to one edge's α row; a single softmax over the node's pairs is not, and
      its gradient would spend α's steps on row shifts that change neither the network nor the genotype.

    The weights of each node sum to 1. Masked α (-1e4, ``spaces.darts.masked_alpha``) get weight 0. A zero
    op mixed in the search (V0, V2-V4) counts in an edge's strength even where the rule may not select it.

    ``edge_weights`` ([E], PC-DARTS edge normalisation: softmax of β over each node's edges, summing to 1 per
    node) replace the edge-strength softmax: w_{k,o} = softmax_o(α_k)_o · softmax_k(β)_k, exactly how the
    edge-normalised network mixes node j's inputs, differentiable in α and β (``darts`` rule only).
    """
    if edge_weights is not None:
        if rule != "darts":
            raise NasDeployError(f"edge normalisation is defined for the darts rule, not {rule!r}; pass discretization=darts")
        return torch.softmax(alpha, dim=-1) * edge_weights.unsqueeze(-1)  # PC-DARTS §3.2 with Eq. 3.1
    if rule != "darts":
        from nasdeploy.spaces.darts import mixing_weights

        return mixing_weights(alpha, nodes, rule)  # one softmax over node j's (edge, op) pairs
    per_edge = torch.softmax(alpha, dim=-1)  # Eq. 3.1
    rows = []
    for j in range(nodes):
        block = per_edge[edge_offset(j) : edge_offset(j) + j + 2]
        strength = block.max(dim=-1).values  # §3.1.1: an edge ranks by its strongest op
        rows.append(block * torch.softmax(strength, dim=0).unsqueeze(-1))
    return torch.cat(rows, dim=0)


def cell_expected_latency(alpha: torch.Tensor, edge_costs: torch.Tensor, nodes: int, rule: str = "darts",
                          edge_weights: torch.Tensor | None = None) -> torch.Tensor:
    """The maximum expected latency of one cell (the inner loops of Algorithm 3).

    ``alpha`` and ``edge_costs`` are [num_edges, num_ops]: architecture weights and each op's cost on that
    edge. Node j has inputs k = 0..j+1 (the two cell inputs, then nodes 0..j-1); its latency is
    l^c_j = Σ_{k,o} w_{k,o} (L_T(o, k) + [k ≥ 2] l^c_{k-2}) with w from ``node_pair_weights``, so the choice
    of edges (shallow k < 2 against deep k ≥ 2) gets a gradient, not only the choice of ops.
    The cell's value is Σ_j l^c_j softmax(l^c)_j.
    """
    weights = node_pair_weights(alpha, nodes, rule, edge_weights)
    node_latency: list[torch.Tensor] = []
    for j in range(nodes):
        rows = slice(edge_offset(j), edge_offset(j) + j + 2)
        zero = edge_costs.new_zeros(())
        input_latency = torch.stack([zero, zero, *node_latency])  # l^c_{k-2} for k >= 2, nothing for the cell inputs
        l_n = edge_costs[rows] + input_latency.unsqueeze(-1)  # l^n_k = L_T (+ l^c_{k-2} if k >= 2)
        node_latency.append((weights[rows] * l_n).sum())  # l^c_j = Σ(l^n α_j)
    l_c = torch.stack(node_latency)
    return (l_c * torch.softmax(l_c, dim=0)).sum()  # Σ_j l^c_j softmax(l^c)_j


def darts_edge_costs(layout, op_names: Sequence[str], nodes: int, table: LatencyTable | None,
                     dtype: torch.dtype = torch.float32, source: Any = None) -> torch.Tensor:
    """[num_edges, num_ops] cost of each candidate op on each edge of cell ``layout``: table ms, or ``source.cost``."""
    from nasdeploy.spaces.darts import edge_instance

    source = source if source is not None else TableCosts(table)
    rows = []
    for j in range(nodes):
        for k in range(j + 2):
            rows.append([source.cost(op, edge_instance(layout, k, op)) for op in op_names])
    return torch.tensor(rows, dtype=dtype)


def expected_latency_darts(alpha_normal: torch.Tensor, alpha_reduce: torch.Tensor, op_names: Sequence[str],
                           template: Any, table: LatencyTable | None, include_fixed: bool = True, rule: str = "darts",
                           source: Any = None, edge_weights: tuple[torch.Tensor, torch.Tensor] | None = None,
                           cell_counts: tuple[int, int] | None = None) -> torch.Tensor:
    """Algorithm 3 (Herron 2023, §4.3): the search network's expected latency P(α), differentiable in α.

    Each cell of ``cell_layouts(template)`` (normal cells use ``alpha_normal``, reduction cells
    ``alpha_reduce``) contributes its maximum expected latency at its own shapes, so the cell counts C_i of
    the algorithm are the repeated layouts. α is normalised per node as ``rule`` normalises it
    (``node_pair_weights``). Costs come from ``source`` when given (e.g. ``OpWeights``, the stem-repeat
    weights of Table 4.6: P is then unitless, as in the paper, and no fixed parts are added), else from
    ``table`` in ms; then ``include_fixed`` adds the constant latency of the fixed parts (stem,
    preprocessing, classifier) so that P is in ms. The overhead model is never applied (Algorithm 3 is not
    a sum of the network's ops). ``edge_weights`` = (normal, reduce) [E] edge-normalisation weights (PC-DARTS
    §3.2, softmax of β per node) folded into w (``node_pair_weights``), or None.

    ``cell_counts`` = (normal, reduction) C_i of another network, e.g. the search network's, as Algorithm 3 has
    them: each cell type's sum over ``template``'s cells is rescaled to C_i cells of that type (its mean cell times
    C_i). With shape-free costs (the stem-repeat weights) that is Algorithm 3 exactly; with a table's ms it prices
    the search network's cell counts at the deployed shapes.
    """
    costs, fixed = darts_costs(table, template, tuple(op_names), alpha_normal.dtype, alpha_normal.device, source)
    per_type = [alpha_normal.new_zeros(()), alpha_normal.new_zeros(())]  # Σ over the template's normal / reduction cells
    for reduction, edge_costs in costs:
        alpha = alpha_reduce if reduction else alpha_normal
        edges = None if edge_weights is None else edge_weights[1 if reduction else 0]
        per_type[reduction] = per_type[reduction] + cell_expected_latency(alpha, edge_costs, template.nodes, rule, edges)
    if cell_counts is not None:  # P = Σ_i C_i · (Σ l^c softmax(l^c)) with the given C_i
        per_type = [value * (count / n if n else 0.0)
                    for value, count, n in zip(per_type, cell_counts, cell_type_counts(template))]
    total = per_type[0] + per_type[1]  # P += C_i · (Σ l^c softmax(l^c)) over the cell types
    if include_fixed and source is None:
        total = total + fixed
    return total


def cell_type_counts(template: Any) -> tuple[int, int]:
    """(normal, reduction) cell counts C_i of a DARTS template (Algorithm 3's input)."""
    from nasdeploy.spaces.darts import cell_layouts

    layouts = cell_layouts(template)
    reductions = sum(1 for layout in layouts if layout.reduction)
    return len(layouts) - reductions, reductions


def darts_costs(table: LatencyTable | None, template: Any, op_names: tuple[str, ...], dtype: torch.dtype,
                device: torch.device, source: Any = None):
    """Per cell ``(reduction, [num_edges, num_ops] costs)`` and the fixed parts' ms (0 for a ``source``),
    cached on the table or the source (a search evaluates Algorithm 3 every step)."""
    from nasdeploy.latency.table import latency_template
    from nasdeploy.spaces.darts import cell_layouts

    owner = source if source is not None else table
    size = len(table.entries) if source is None else len(getattr(source, "weights", ()))
    corrections = tuple(sorted(((table.overhead or {}).get("corrections") or {}).items())) if source is None else ()
    key = ("darts", op_names, repr(sorted(latency_template(template).items())), str(dtype), str(device), size,
           hash(corrections))
    cache = owner.__dict__.setdefault("_expected_latency_cache", {})
    if key not in cache:
        by_shape: dict[tuple, torch.Tensor] = {}
        costs = []
        for layout in cell_layouts(template):
            shape = (layout.reduction, layout.reduction_prev, layout.c_pp, layout.c_p, layout.c, layout.h, layout.w)
            if shape not in by_shape:
                by_shape[shape] = darts_edge_costs(layout, op_names, template.nodes, table, dtype, source).to(device)
            costs.append((layout.reduction, by_shape[shape]))
        fixed = fixed_parts_ms(table, get_space("darts"), template) if source is None else 0.0
        cache[key] = (costs, fixed)
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
    if hasattr(space, "cheapest_architecture"):  # a space that knows its own (darts_macro)
        return space.cheapest_architecture(table, template, op_names)
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


def sampled_latencies_ms(table: LatencyTable, space_name: str, template: Any, seed: int, samples: int = 32) -> list[float]:
    """Predicted latencies of ``samples`` uniformly sampled architectures (``space.sample``, ``random.Random(seed)``),
    sorted: the random architectures budgets are placed against (``pipeline.derive_budget``, ``tight_budget_ms``)."""
    space, rng = get_space(space_name), random.Random(seed)
    return sorted(predict_latency_ms(table, space.sample(template, rng), space, template) for _ in range(samples))


def tight_budget_ms(cheapest_ms: float, sampled_ms: Sequence[float], fraction: float = 0.25) -> float:
    """``cheapest + fraction · (median of the sampled architectures − cheapest)``: a budget near the cheapest network
    that a search must steer to (issue 27's "tight budget", fraction 0.25)."""
    ordered = sorted(sampled_ms)
    n = len(ordered)
    median = ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
    return cheapest_ms + fraction * (median - cheapest_ms)
