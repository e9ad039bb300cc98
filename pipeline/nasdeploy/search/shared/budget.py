"""Latency budget for ICDARTS: per-edge LUT costs, the cheapest genotype a rule can produce, and the
budget-aware discretisation fallback (the last resort: the latency controller, ``search.shared.latency_control``,
is what steers α under the budget).

* ``edge_costs``: the LUT latency (ms) of op o on edge e summed over every cell of one type in the deployment
  template; zero ops (``none``/``random``) cost 0.
* ``cheapest_genotype``: the rule applied to ``-cost`` instead of α, i.e. the cheapest cell structure the
  discretisation rule can output (DARTS: 2 inputs/node; XDARTS: j + 2 pairs/node). A budget below its
  predicted latency cannot be met and the search stops before training.
* ``fit_to_budget``: while the genotype is predicted over budget, the chosen op with the largest LUT cost
  that has a cheaper alternative on its edge is replaced by the cheaper alternative with the largest α
  weight; if no single replacement is left, the rule's cheapest genotype is returned (it fits: checked
  before training).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from nasdeploy.search.shared.discretize import DISCRETIZATIONS, ZERO_OPS, selectable_ops, stage_op
from nasdeploy.spaces.darts import node_edge_ranges, num_edges

log = logging.getLogger(__name__)


def edge_costs(table, template, op_names: list[str], reduction: bool) -> torch.Tensor:
    """``[num_edges, len(op_names)]`` ms: op o on edge e, summed over all cells of this type (zero ops: 0)."""
    from nasdeploy.latency.predictor import darts_edge_costs
    from nasdeploy.spaces.darts import cell_layouts

    costs = torch.zeros(num_edges(template.nodes), len(op_names), dtype=torch.float64)
    for layout in cell_layouts(template):
        if bool(layout.reduction) == reduction:
            costs += darts_edge_costs(layout, op_names, template.nodes, table, torch.float64)
    return costs


def _genotype(normal, reduce, nodes):
    from nasdeploy.spaces.darts import Genotype

    concat = list(range(2, nodes + 2))
    return Genotype(normal=normal, normal_concat=concat, reduce=reduce, reduce_concat=concat)


def cheapest_genotype(table, template, op_names, rule, zero, k=2, masks=(None, None)):
    """The cheapest genotype ``rule`` can produce: the rule run on ``-cost`` (retraining ops)."""
    nodes = template.nodes
    cells = []
    for reduction, mask in ((False, masks[0]), (True, masks[1])):
        cost = edge_costs(table, template, op_names, reduction)
        selectable = selectable_ops(op_names, zero, mask, cost.shape[0])
        choices = DISCRETIZATIONS.get(rule)(-cost, selectable, nodes, k)
        cells.append([[(stage_op(op_names[o], zero, "retraining"), i) for o, i in node] for node in choices])
    return _genotype(cells[0], cells[1], nodes)


@dataclass
class BudgetFit:
    genotype: object
    predicted_ms: float
    replacements: list[dict]
    used_cheapest: bool = False


def fit_to_budget(genotype, budget_ms, predict, costs, weights, op_names, zero, cheapest) -> BudgetFit:
    """Replace the costliest chosen ops by cheaper ones ranked by α until ``predict(genotype) <= budget_ms``.

    ``costs``/``weights``: ``{"normal": [E, O], "reduce": [E, O]}`` LUT costs and mixing weights;
    ``predict(genotype) -> ms``; ``cheapest``: the rule's cheapest genotype, the last resort.
    """
    cells = {"normal": [list(n) for n in genotype.normal], "reduce": [list(n) for n in genotype.reduce]}
    nodes = len(cells["normal"])
    rows = node_edge_ranges(nodes)
    index = {op: o for o, op in enumerate(op_names)}
    for op in ZERO_OPS:  # a zero mapped for retraining still reads its α from the search zero op
        if zero.search is not None:
            index.setdefault(op, index.get(zero.search, -1))
    current = _genotype(cells["normal"], cells["reduce"], nodes)
    predicted = predict(current)
    replacements: list[dict] = []
    while predicted > budget_ms:
        best = None
        for cell, nodes_choices in cells.items():
            for j, node in enumerate(nodes_choices):
                for s, (op, i) in enumerate(node):
                    row, o = rows[j][i], index[op]
                    cheaper = [
                        (float(weights[cell][row, c]), -c)
                        for c, name in enumerate(op_names)
                        if float(costs[cell][row, c]) < float(costs[cell][row, o])
                        and (name not in ZERO_OPS or zero.retraining is not None)
                        and (stage_op(name, zero, "retraining"), i) not in node
                    ]
                    if cheaper and (best is None or float(costs[cell][row, o]) > best[0]):
                        best = (float(costs[cell][row, o]), cell, j, s, -max(cheaper)[1])
        if best is None:
            log.warning("no single op replacement left; using the rule's cheapest genotype")
            return BudgetFit(cheapest, predict(cheapest), replacements, used_cheapest=True)
        _, cell, j, s, c = best
        old_op, i = cells[cell][j][s]
        cells[cell][j][s] = (stage_op(op_names[c], zero, "retraining"), i)
        current = _genotype(cells["normal"], cells["reduce"], nodes)
        new_predicted = predict(current)
        replacements.append({"cell": cell, "node": j, "input": i, "from": old_op, "to": cells[cell][j][s][0],
                             "predicted_ms": new_predicted})
        log.info("budget fallback: %s node %d input %d %s -> %s (%.3f -> %.3f ms)",
                 cell, j, i, old_op, cells[cell][j][s][0], predicted, new_predicted)
        predicted = new_predicted
    return BudgetFit(current, predicted, replacements)


def cell_edge_costs(table, template, op_names: list[str]) -> dict[str, torch.Tensor]:
    """``edge_costs`` of the normal and the reduction cell, keyed as ``fit_to_budget`` reads them."""
    return {"normal": edge_costs(table, template, op_names, False), "reduce": edge_costs(table, template, op_names, True)}


def fit_genotype(genotype, budget_ms: float, predict, table, template, op_names, zero, weights, rule: str, k: int):
    """``fit_to_budget`` with the table's edge costs and the rule's cheapest genotype as the final fallback;
    returns the fitted genotype and the fallback record (every replacement, and whether the cheapest genotype
    was used). One line and exit 2 when even that misses the budget."""
    from nasdeploy.errors import NasDeployError

    cheapest = cheapest_genotype(table, template, op_names, rule, zero, k)
    fit = fit_to_budget(genotype, budget_ms, predict, cell_edge_costs(table, template, op_names), weights, op_names, zero,
                        cheapest)
    if fit.predicted_ms > budget_ms:
        raise NasDeployError(f"could not fit the latency budget {budget_ms:.3f} ms (best {fit.predicted_ms:.3f} ms); "
                             "raise the budget")
    return fit.genotype, list(fit.replacements) + ([{"used_cheapest_genotype": True}] if fit.used_cheapest else [])


def genotype_changes(before, after) -> int:
    """How many (op, input) pairs of ``before`` the fix-up changed (whichever way it got there)."""
    cells = zip(before.normal + before.reduce, after.normal + after.reduce)
    return sum(len(set(map(tuple, old)) - set(map(tuple, new))) for old, new in cells)


def fixup_summary(metrics: dict) -> list[dict]:
    """How a search met its budget, phase by phase, from its metrics: the latency its architecture parameters alone
    reached (``alpha_only_latency_ms``; hierarchical ICDARTS: the micro phase's α, then the macro phase's γ) and the
    replacements each last-resort fix-up made. Rows ``{"key", "label", "ms" | "count"}`` for ``search``'s and ``run``'s
    summaries; empty when the search has neither (no table, or a strategy without a fix-up)."""
    if "gamma_only_latency_ms" in metrics or "micro_fixup_replacements" in metrics:  # hierarchical ICDARTS
        rows = [("micro_alpha_only_latency_ms", "micro phase: α-discretised (before fix-up)", "ms"),
                ("micro_fixup_replacements", "fix-up replacements before the macro phase", "count"),
                ("gamma_only_latency_ms", "macro phase: γ-discretised (before fix-up)", "ms"),
                ("macro_fixup_replacements", "macro fix-up replacements", "count"),
                ("fixup_replacements", "fix-up replacements, all phases", "count")]
    else:
        rows = [("alpha_only_latency_ms", "α-discretised (before fix-up)", "ms"),
                ("fixup_replacements", "fix-up replacements", "count")]
    return [{"key": key, "label": label, unit: metrics[key]} for key, label, unit in rows if metrics.get(key) is not None]
