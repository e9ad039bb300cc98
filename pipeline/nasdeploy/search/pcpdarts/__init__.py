"""PCP-DARTS and SS PCP-DARTS (Deevi et al. 2024): progressive, partial-channel DARTS, optionally self-supervised.

Two registered strategies on one implementation (§IV-C, "design of stages"):

* ``pcp-darts`` (vanilla PCP-DARTS): progressive search (§III-C, P-DARTS) over a partial-channel supernet with
  edge normalisation (§III-B, PC-DARTS); α, β and w all on cross-entropy.
* ``ss-pcp-darts``: the same, with α and β trained on ssf·L_BT + (1 − ssf)·L_CE (§IV-B.1; Barlow Twins §III-D on
  two distorted views from the shared context), w always on cross-entropy; ssf = 0.75 by default (Table II).

The supernet is the shared ``search.shared.darts_supernet`` (``partial_channels = K``, ``random_channels``,
``edge_normalisation``, skip-connect dropout); phases, op dropping, skip cap and the end-of-search rule are in
``pcpdarts.progressive``, the loop in ``pcpdarts.run``. With ``--latency-budget`` α and β are steered by
ICDARTS' Lagrangian controller on Algorithm 3 with the edge weights folded in; ``search.shared.budget.fit_to_budget``
is the last resort, counted in the metrics (``fixup_replacements``, ``budget_fallback``). Data (§III-B): the
paper preset trains w on the whole training split and α, β on the test split (CIFAR-10's 50K / 10K,
``val_split = "test"``); cpu and tiny on the training split's two halves. Architectures are retrained with the
paper's own recipe (``pcpdarts.recipe``: ``pcp-darts``, §III-B's Adam 6e-4, β (0.5, 0.999), auxiliary towers).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from nasdeploy.search.base import STRATEGIES, SearchStrategy
from nasdeploy.search.context import SearchContext, SearchOutcome
from nasdeploy.search.pcpdarts import recipe  # noqa: F401  (registers the pcp-darts retraining recipe)
from nasdeploy.search.pcpdarts.config import PRESETS, SS_PRESETS, PCPDARTSConfig, SSPCPDARTSConfig, validate
from nasdeploy.search.pcpdarts.run import PCPSearch, PCPSetup, pcp_setup

log = logging.getLogger(__name__)


def fit_genotype(setup: PCPSetup, search: PCPSearch, genotype):
    """``budget.fit_genotype`` with α·β-scaled weights (the last resort; every replacement is logged)."""
    from nasdeploy.search.shared.budget import fit_genotype as fit

    ctx = setup.ctx
    with torch.no_grad():
        mixing = search.S.mixing_weights()
        edges = search.edge_weights()
    weights = {"normal": mixing[0] * edges[0].unsqueeze(-1), "reduce": mixing[1] * edges[1].unsqueeze(-1)}
    return fit(genotype, ctx.latency_budget_ms, ctx.predict_latency_ms, ctx.table, ctx.template, setup.op_names,
               setup.zero, weights, "darts", 2)


def finish(setup: PCPSetup, search: PCPSearch, name: str) -> SearchOutcome:
    """End of search (§IV-A.3 + P-DARTS' skip cap); with a budget, the fix-up only if α and β missed it."""
    from nasdeploy.search.shared.budget import genotype_changes

    ctx, cfg = setup.ctx, setup.config
    final = search.end_of_search()
    genotype, fallback = final.genotype, []
    metrics: dict[str, Any] = {"ssf": search.ssf, "partial_channels": cfg.partial_channels,
                               "phase_layers": list(cfg.phase_layers), "zero_config": setup.zero.name,
                               "op_space": str(ctx.template.op_space), "skip_cap_removed": final.removed_skips,
                               "lambda_final": search.latency_control.coefficient}
    if ctx.table is not None:
        alpha_only = ctx.predict_latency_ms(genotype)
        metrics["alpha_only_latency_ms"] = alpha_only  # from α and β alone, before any fix-up
        if ctx.latency_budget_ms is not None and alpha_only > ctx.latency_budget_ms:
            log.warning("the α/β-discretised genotype is predicted %.3f ms > budget %.3f ms: greedy fix-up (last resort)",
                        alpha_only, ctx.latency_budget_ms)
            genotype, fallback = fit_genotype(setup, search, genotype)
        with torch.no_grad():
            metrics["expected_latency_ms"] = float(search.penalty())
    metrics.update({"budget_fallback": fallback, "fixup_replacements": genotype_changes(final.genotype, genotype)})
    log_extra = {"op_names": setup.op_names, "phases": [vars(p) for p in setup.phases],
                 "phase_history": search.phase_history, "delta_rule": search.latency_control.describe(),
                 "latency_control": search.latency_control.state_dict(), "epochs": search.log}
    title = f"{name} K={cfg.partial_channels}" + (f" ssf={search.ssf:g}" if search.ssf else "")
    return SearchOutcome(arch=genotype, search_seconds=search.seconds, metrics=metrics, log=log_extra,
                         extra_files=[search.checkpoint_path], title=title)


@STRATEGIES.register("pcp-darts")
class PCPDARTS(SearchStrategy):
    """Vanilla PCP-DARTS: progressive + partial channels + edge normalisation, cross-entropy for α and w."""

    name = "pcp-darts"
    spaces = ("darts",)
    config_class = PCPDARTSConfig
    presets = PRESETS
    summary = "progressive partial-channel DARTS (P-DARTS + PC-DARTS) with the LUT latency controller; Deevi et al. 2024"

    def validate(self, config: PCPDARTSConfig) -> None:
        validate(config)

    def template_overrides(self, config: PCPDARTSConfig, table_template=None, space: str = "darts") -> dict[str, Any]:
        return {"op_space": str(config.op_space)} if config.op_space is not None else {}

    def validation_split(self, config: PCPDARTSConfig) -> str:
        return "test" if config.val_split == "test" else "train"  # §III-B: 50K train / 10K (CIFAR's test) val

    def retrain_recipe(self, space: str) -> str:
        return "pcp-darts"

    def cheapest_latency_ms(self, ctx: SearchContext, config: PCPDARTSConfig) -> float:
        """The cheapest genotype the end-of-search rule can give (two edges per node, one op each)."""
        from nasdeploy.search.shared.budget import cheapest_genotype
        from nasdeploy.search.shared.discretize import candidate_ops

        op_names, zero = candidate_ops(ctx.template, config)
        return ctx.predict_latency_ms(cheapest_genotype(ctx.table, ctx.template, op_names, "darts", zero, 2))

    def search(self, ctx: SearchContext, config: PCPDARTSConfig) -> SearchOutcome:
        setup = pcp_setup(ctx, config)
        budget = ctx.latency_budget_ms
        log.info("%s: %d phases of %s cells, K = %d, %d candidate ops, %s", self.name, len(setup.phases),
                 config.phase_layers, config.partial_channels, len(setup.op_names),
                 f"budget {budget:.3f} ms (cheapest {ctx.cheapest_latency_ms:.3f} ms)" if budget else "no latency budget")
        search = PCPSearch(setup).run(ctx.resume)
        return finish(setup, search, self.name)


@STRATEGIES.register("ss-pcp-darts")
class SSPCPDARTS(PCPDARTS):
    """SS PCP-DARTS: α on ssf·L_BT + (1 − ssf)·L_CE (Barlow Twins on two views), w on cross-entropy."""

    name = "ss-pcp-darts"
    config_class = SSPCPDARTSConfig
    presets = SS_PRESETS
    summary = "SS PCP-DARTS: PCP-DARTS with α on ssf·Barlow Twins + (1-ssf)·cross-entropy; Deevi et al. 2024"


__all__ = ["PCPDARTS", "SSPCPDARTS"]
