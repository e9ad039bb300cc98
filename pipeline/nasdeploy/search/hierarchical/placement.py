"""Hierarchical ICDARTS version 2: cell placement (Herron 2023, §6, Figures 6.3-6.4).

Micro phase (Figure 6.3): ICDARTS with four normal cell types instead of one; they alternate in S_micro and
E_micro (the p-th normal cell is type p mod 4), the reduction cell is shared. ``TypedSearchNetwork`` adds α of
types 1-3 to ``SearchNetwork`` (type 0 keeps ``alpha_normal``); ``TypedMicroRun`` is ``ICDARTSRun`` with that S,
Algorithm 3 summed over the cells with each cell's own α (the costs of ``latency.predictor.darts_costs``), and
ᾱ giving every type's cell (``discretize_cell``).

A documented deviation: §6 says the micro phase searches "four normal cell structures rather than one normal and
one reduction cell structure", yet its networks "otherwise follow the templates of the original search phase",
which reduce twice; the text does not say what fills those two stride-2 positions (Figure 6.3, which would, is not
in the text we have). We keep one searched reduction cell there (α ``alpha_reduce``, shared by both positions,
never placed by γ), so the result stays a ``MacroGenotype`` with DARTS' reduce cell and every table prices it.
The likeliest reading, the alternating normal types applied at stride 2 at the reduction positions too (and γ
choosing among four types there as well), would need per-depth reduction types in ``MacroGenotype``, in its
latency instances and in ``PlacementLatency`` / the fix-ups; not done.

Macro phase (Figure 6.4): S_macro has one cell of each type at every normal depth, each reading the two previous
layers' outputs; the layer outputs Σ_t softmax(γ_d)_t · cell_t (γ initialised randomly, Algorithm 4); a reduction
depth has its one reduction cell. E_macro keeps per depth the type with the highest γ (ties: the lower type).
Each new E_macro warms up two epochs (§6, ``macro_warmup_epochs``).

Budget: P(γ) = O(F + Σ_d Σ_t softmax(γ_d)_t · L_{d,t},  N_F + Σ_d Σ_t softmax(γ_d)_t · n_{d,t}), L_{d,t} the
summed entries of type t's ops at depth d, n_{d,t} their count, F / N_F everything else (stem, every cell's input
preprocessing, reduction cells, classifier), O the table's overhead model. One-hot γ: the LUT prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from nasdeploy.latency.overhead import apply_overhead
from nasdeploy.latency.predictor import cell_expected_latency, darts_costs, overhead_coef, sum_and_count
from nasdeploy.search.shared.darts_supernet import SearchNetwork
from nasdeploy.search.shared.discretize import discretize_cell
from nasdeploy.search.hierarchical.macro import GammaParameters, SkipFit, greedy_fit
from nasdeploy.search.icdarts.run import ICDARTSRun, SearchSetup
from nasdeploy.spaces.darts import CellPreprocess, Classifier, DartsCell, Genotype, genotype_layouts, make_stem, num_edges
from nasdeploy.spaces.darts_macro import MacroGenotype, cell_instances, default_inputs, second_input_instance, skip_instance

TYPES = 4  # normal cell types (§6)


def alternating_types(template, types: int = TYPES) -> list[int]:
    """Figure 6.3: the p-th normal cell is type p mod ``types``; reduction cells read 0 (ignored)."""
    reductions, found, p = set(template.reduction_indices), [], 0
    for k in range(template.layers):
        found.append(0 if k in reductions else p % types)
        p += k not in reductions
    return found


# ------------------------------------------------------------------------------------------ micro phase
class TypedSearchNetwork(SearchNetwork):
    """S_micro of version 2: ``SearchNetwork`` whose normal cells use the α of their type (type 0: alpha_normal)."""

    def __init__(self, template, op_names: list[str], rule: str = "darts", types: int = TYPES):
        super().__init__(template, op_names, rule)
        edges = num_edges(self.nodes)
        self.alpha_types = nn.ParameterList(nn.Parameter(1e-3 * torch.randn(edges, len(op_names))) for _ in range(types - 1))
        self.cell_types = alternating_types(template, types)

    def type_alphas(self) -> list[torch.Tensor]:
        return [self.alpha_normal, *self.alpha_types]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha_normal, self.alpha_reduce, *self.alpha_types]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from nasdeploy.search.shared.discretize import mixing_weights

        normal = [mixing_weights(a, self.nodes, self.rule) for a in self.type_alphas()]
        reduce = mixing_weights(self.alpha_reduce, self.nodes, self.rule)
        s0 = s1 = self.stem(x)
        for cell, t in zip(self.cells, self.cell_types):
            s0, s1 = s1, cell(s0, s1, reduce if cell.reduction else normal[t])
        return self.classifier(s1)


def typed_arch(alphas: Sequence[torch.Tensor], alpha_reduce: torch.Tensor, setup: SearchSetup, template, stage: str,
               types: list[int], k: int) -> MacroGenotype:
    """ᾱ of every type (the rule of ``discretization``), placed by ``types`` in DARTS' template."""
    cfg, nodes = setup.config, setup.search_template.nodes
    cells = [discretize_cell(a, setup.op_names, nodes, cfg.discretization, setup.zero, stage, k) for a in alphas]
    concat = list(range(2, nodes + 2))
    reduce = discretize_cell(alpha_reduce, setup.op_names, nodes, cfg.discretization, setup.zero, stage, k)
    genotype = Genotype(normal=cells[0], normal_concat=concat, reduce=reduce, reduce_concat=list(concat))
    return MacroGenotype(genotype, default_inputs(template.layers), [(c, list(concat)) for c in cells[1:]], types)


class TypedMicroRun(ICDARTSRun):
    """Version 2's micro phase: Algorithm 1 on ``TypedSearchNetwork`` (four normal types alternating)."""

    def __init__(self, setup: SearchSetup, out_dir, epochs: int, label: str = "micro"):
        super().__init__(setup, out_dir, epochs, label=label)

    def build_search_network(self) -> nn.Module:
        return TypedSearchNetwork(self.setup.search_template, self.setup.op_names, self.cfg.discretization)

    def stem_repeat_source(self) -> None:
        return None  # this phase's penalty prices each type's ops from the table

    def penalty(self) -> torch.Tensor:
        """Algorithm 3 with each cell's own α: Σ_cells (cell's maximum expected latency) + the fixed parts."""
        template = self.setup.deploy_template
        alphas = self.S.type_alphas()
        costs, fixed = darts_costs(self.setup.table, template, tuple(self.setup.op_names), alphas[0].dtype, alphas[0].device)
        total = alphas[0].new_zeros(())
        for (reduction, edge_costs), t in zip(costs, alternating_types(template)):
            alpha = self.S.alpha_reduce if reduction else alphas[t]
            total = total + cell_expected_latency(alpha, edge_costs, template.nodes, self.cfg.discretization)
        return total + fixed

    def genotype(self, stage: str = "retraining") -> MacroGenotype:
        """ᾱ: the four normal types alternating (Figure 6.3, right) at E_micro's depth or the deployment depth."""
        template = self.setup.eval_template if stage == "evaluation" else self.setup.deploy_template
        return typed_arch(self.S.type_alphas(), self.S.alpha_reduce, self.setup, template, stage,
                          alternating_types(template), self.cfg.k)

    def epoch_record(self, epoch: int, phase: str, lr: float, means: dict[str, float], seconds: float) -> dict[str, Any]:
        record = super().epoch_record(epoch, phase, lr, means, seconds)
        record["alpha_types"] = [[[round(float(v), 5) for v in row] for row in torch.softmax(a.detach(), -1)]
                                 for a in self.S.alpha_types]
        return record


def fit_types_to_budget(run: TypedMicroRun, arch: MacroGenotype, budget_ms: float, predict) -> tuple[MacroGenotype, list[dict]]:
    """Last resort for the micro result: ICDARTS' greedy op replacement (``budget.fit_to_budget``, ranked by each
    type's α) on one normal type (with the reduction cell) at a time, dearest type first, until it fits."""
    from nasdeploy.search.shared.budget import cell_edge_costs, cheapest_genotype, fit_to_budget
    from nasdeploy.search.shared.discretize import mixing_weights

    setup, cfg = run.setup, run.cfg
    template, table = setup.deploy_template, setup.table
    costs = cell_edge_costs(table, template, setup.op_names)
    cheapest = cheapest_genotype(table, template, setup.op_names, cfg.discretization, setup.zero, cfg.k)
    alphas = [a.detach() for a in run.S.type_alphas()]
    reduce_w = mixing_weights(run.S.alpha_reduce.detach(), template.nodes, cfg.discretization)
    layouts = genotype_layouts(arch.cells, template)
    placed = [t for k, t in enumerate(arch.types) if not layouts[k].reduction]
    replacements: list[dict] = []
    for t in sorted(set(placed), key=lambda t: -placed.count(t)):
        normals = arch.normal_types()

        def with_type(genotype: Genotype, t: int = t) -> MacroGenotype:
            types = [(genotype.normal, genotype.normal_concat) if u == t else normals[u] for u in range(len(normals))]
            cells = Genotype(types[0][0], types[0][1], genotype.reduce, genotype.reduce_concat)
            return MacroGenotype(cells, arch.inputs, types[1:], arch.types)

        current = Genotype(normals[t][0], normals[t][1], arch.cells.reduce, arch.cells.reduce_concat)
        weights = {"normal": mixing_weights(alphas[t], template.nodes, cfg.discretization), "reduce": reduce_w}
        fit = fit_to_budget(current, budget_ms, lambda g: predict(with_type(g)), costs, weights, setup.op_names, setup.zero,
                            cheapest)
        arch = with_type(fit.genotype)
        replacements += [{"type": t, **r} for r in fit.replacements] + ([{"type": t, "used_cheapest_genotype": True}]
                                                                        if fit.used_cheapest else [])
        if fit.predicted_ms <= budget_ms:
            break
    return arch, replacements


# ------------------------------------------------------------------------------------------ macro phase
class PlacementSearchNetwork(GammaParameters, nn.Module):
    """S_macro of version 2 (Figure 6.4, left): every normal depth holds one cell of each type; γ mixes them."""

    def __init__(self, arch: MacroGenotype, template):
        super().__init__()
        layouts = genotype_layouts(arch.cells, template)
        types = arch.normal_types()
        self.stem = make_stem(template)
        self.layers = nn.ModuleList()
        for layout in layouts:
            genes = [(arch.cells.reduce, arch.cells.reduce_concat)] if layout.reduction else types
            self.layers.append(nn.ModuleList(DartsCell(nodes, concat, layout, preprocess=CellPreprocess(layout))
                                             for nodes, concat in genes))
        self.gammas = nn.ParameterList(nn.Parameter(1e-3 * torch.randn(len(cells))) for cells in self.layers)
        self.classifier = Classifier(layouts[-1].c_out, template.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cells, w in zip(self.layers, self.gamma_weights()):
            s0, s1 = s1, sum(w[t] * cell(s0, s1) for t, cell in enumerate(cells))  # Σ_t softmax(γ_d)_t · cell_t
        return self.classifier(s1)


def discretize_types(gammas: Sequence[torch.Tensor], reductions: set[int]) -> list[int]:
    """γ̄ (version 2): per normal depth the type with the highest γ (ties: the lower type); reductions read 0."""
    found = []
    for k, gamma in enumerate(gammas):
        values = [float(v) for v in gamma.detach().reshape(-1)]
        found.append(0 if k in reductions else max(range(len(values)), key=lambda t: (values[t], -t)))
    return found


class PlacementLatency:
    """P(γ) of the module docstring for one set of cell types at the deployment template."""

    def __init__(self, table, arch: MacroGenotype, template):
        layouts = genotype_layouts(arch.cells, template)
        fixed = [skip_instance(layouts, template, s, k) for k, s in enumerate(default_inputs(template.layers))]
        fixed += [second_input_instance(layout) for layout in layouts]
        from nasdeploy.spaces.darts import classifier_instance, stem_instance

        fixed += [stem_instance(template), classifier_instance(template, layouts)]
        fixed += [i for layout in layouts if layout.reduction for i in cell_instances(arch, layout)]
        self.fixed_ms, self.fixed_count = sum_and_count(table, fixed)
        self.costs: list[torch.Tensor] = []
        self.counts: list[torch.Tensor] = []
        for layout in layouts:
            per_type = [sum_and_count(table, cell_instances(MacroGenotype(arch.cells, [], arch.extra_normals,
                                                                          [t] * template.layers), layout))
                        for t in range(len(arch.normal_types()))] if not layout.reduction else [(0.0, 0)]
            self.costs.append(torch.tensor([c for c, _ in per_type]))
            self.counts.append(torch.tensor([float(n) for _, n in per_type]))
        self.coef = overhead_coef(table)

    def __call__(self, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        total, count = weights[0].new_tensor(self.fixed_ms), weights[0].new_tensor(float(self.fixed_count))
        for w, cost, n in zip(weights, self.costs, self.counts):
            total = total + (w * cost.to(w)).sum()  # Σ_t softmax(γ_d)_t · L_{d,t}
            count = count + (w * n.to(w)).sum()
        return total if self.coef is None else apply_overhead(self.coef, total, count)


@dataclass
class PlacementGraph:
    """Version 2's macro search graph for ``MacroRun``: S_macro, γ̄, P(γ) and the last-resort fix-up."""

    micro: MacroGenotype  # the micro phase's four types (its ``types``: alternating)

    def network(self, template) -> PlacementSearchNetwork:
        return PlacementSearchNetwork(self.micro, template)

    def arch(self, network: PlacementSearchNetwork) -> MacroGenotype:
        layers = len(network.gammas)
        reductions = {k for k, cells in enumerate(network.layers) if len(cells) == 1}
        return MacroGenotype(self.micro.cells, default_inputs(layers), self.micro.extra_normals,
                             discretize_types(network.gammas, reductions))

    def latency(self, table, template) -> PlacementLatency:
        return PlacementLatency(table, self.micro, template)

    def fit(self, arch: MacroGenotype, budget_ms: float, predict, table, template) -> SkipFit:
        """Last resort: move the depth whose type costs most above its cheapest type to that type, until it fits."""
        layouts = genotype_layouts(arch.cells, template)

        def cost(k: int, t: int) -> float:
            placed = MacroGenotype(arch.cells, [], arch.extra_normals, [t] * template.layers)
            return sum_and_count(table, cell_instances(placed, layouts[k]))[0]

        normal = [k for k, layout in enumerate(layouts) if not layout.reduction]
        count = len(arch.normal_types())
        return greedy_fit(arch.types, normal, lambda k: range(count), cost,
                          lambda types: MacroGenotype(arch.cells, arch.inputs, arch.extra_normals, types), predict,
                          budget_ms, ("from_type", "to_type"))

    def describe(self, arch: MacroGenotype) -> dict[str, Any]:
        return {"types": list(arch.types)}
