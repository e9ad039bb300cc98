"""Hierarchical ICDARTS (Herron 2023, chapter 6) as the ``hierarchical-icdarts`` strategy of the ``darts_macro`` space.

1. Micro phase: ICDARTS as it is (``search.icdarts``: S_micro / E_micro, Algorithm 1, the latency controller and
   the greedy fix-up as last resort) finds the cells; its result is the cells in DARTS' template.
2. Macro phase (Algorithm 4, ``hierarchical.macro``): γ on the macro search graph S_macro built from those cells at
   the deployment depth, learned with the cyclic losses of Eqs. 6.1-6.4; E_macro regenerated from γ̄ every S_U
   steps. Version 1: each cell's skip input (Figure 6.2). With a budget, P(γ) drives the same Lagrangian
   controller as Algorithm 3 drives the micro phase; an E_macro still over the budget at the end has its costliest
   skips moved to the cheapest sources (last resort, counted).
   Version 2 (``hierarchical.placement``, Figures 6.3-6.4): the micro phase searches four normal cell types that
   alternate; the macro phase chooses the type at every normal depth (E_macro pre-trained two epochs per
   iteration); over budget at the end, the costliest depths move to their cheapest type (last resort, counted).

The result, ``arch.json``, is a ``spaces.darts_macro.MacroGenotype`` (cells + macro template) that
``nasdeploy train / export / measure`` build like any architecture. ``checkpoint.pt`` files: ``micro/`` and
``macro/``; each phase resumes at its last finished epoch with the same result (``ICDARTSRun``'s re-seeding).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from nasdeploy.errors import NasDeployError
from nasdeploy.search.base import STRATEGIES, SearchStrategy
from nasdeploy.search.context import SearchContext, SearchOutcome
from nasdeploy.search.hierarchical.config import ALIASES, PRESETS, HierarchicalConfig, validate
from nasdeploy.search.hierarchical.macro import MacroRun, SkipGraph, macro_setup
from nasdeploy.search.hierarchical.placement import PlacementGraph, TypedMicroRun, fit_types_to_budget
from nasdeploy.search.icdarts import ICDARTS
from nasdeploy.search.icdarts.run import ICDARTSRun, finish, icdarts_setup
from nasdeploy.spaces.darts_macro import cheapest_inputs

log = logging.getLogger(__name__)


@STRATEGIES.register("hierarchical-icdarts")
class HierarchicalICDARTS(SearchStrategy):
    """ICDARTS on the cells, then Algorithm 4 on the network template."""

    name = "hierarchical-icdarts"
    spaces = ("darts_macro",)
    default_for_spaces = ("darts_macro",)
    config_class = HierarchicalConfig
    presets = PRESETS
    aliases = ALIASES
    summary = ("ICDARTS cells, then the network template by Algorithm 4 (v1: cell-to-cell skip inputs, v2: cell "
               "placement); Herron 2023 ch. 6")

    def validate(self, config: HierarchicalConfig) -> None:
        validate(config)

    def template_overrides(self, config: HierarchicalConfig, table_template=None,
                           space: str = "darts_macro") -> dict[str, Any]:
        return ICDARTS().template_overrides(config, table_template, space)

    def wants_table(self, config: HierarchicalConfig) -> bool:
        return bool(config.delta)

    def cheapest_latency_ms(self, ctx: SearchContext, config: HierarchicalConfig) -> float:
        """The micro phase's cheapest genotype with the cheapest skip per cell: nothing cheaper can come out."""
        from nasdeploy.search.shared.budget import cheapest_genotype
        from nasdeploy.search.shared.discretize import candidate_ops

        op_names, zero = candidate_ops(ctx.template, config)
        cells = cheapest_genotype(ctx.table, ctx.template, op_names, config.discretization, zero, config.k)
        if config.version == 2:  # every type can be the cheapest cell; the template stays DARTS'
            return ctx.predict_latency_ms(cells)
        return ctx.predict_latency_ms(cheapest_inputs(ctx.table, cells, ctx.template))

    def search(self, ctx: SearchContext, config: HierarchicalConfig) -> SearchOutcome:
        setup = icdarts_setup(ctx, config)
        out = ctx.out_dir
        log.info("hierarchical ICDARTS v%d: micro phase (ICDARTS, %d epochs)", config.version, config.epochs)
        if config.version == 2:
            check_types_fit(setup.search_template)
            micro_run = TypedMicroRun(setup, out / "micro", config.epochs)
            micro_run.run(ctx.resume and micro_run.checkpoint_path.exists())
            micro = finish_typed(setup, micro_run)
            graph = PlacementGraph(micro.arch)
        else:
            micro_run = ICDARTSRun(setup, out / "micro", config.epochs, label="micro")
            micro_run.run(ctx.resume and micro_run.checkpoint_path.exists())
            micro = finish(setup, micro_run, {})
            graph = SkipGraph(micro.arch, config.gamma_init)
        log.info("hierarchical ICDARTS v%d: macro phase (Algorithm 4, %d epochs)", config.version, config.macro_epochs)
        msetup = macro_setup(setup, config)
        macro_run = MacroRun(msetup, out / "macro", config.macro_epochs, graph)
        macro_run.run(ctx.resume and macro_run.checkpoint_path.exists())
        return outcome(ctx, config, micro, micro_run, macro_run)


def check_types_fit(search_template) -> None:
    """Every normal type must occur in S_micro, or its α never learns (Figure 6.3 has 6 normal cells for 4 types)."""
    from nasdeploy.search.hierarchical.placement import TYPES

    normal = search_template.layers - len(set(search_template.reduction_indices))
    if normal < TYPES:
        raise NasDeployError(f"version 2 alternates {TYPES} normal cell types but the search network has {normal} normal "
                             f"cells; pass --set search_layers=6 or more")


def finish_typed(setup, run: TypedMicroRun) -> SearchOutcome:
    """Version 2's micro result: the four types alternating; over the budget, ICDARTS' greedy op fix-up per type
    (last resort, counted) so that the macro phase starts from a network that meets it."""
    arch = run.genotype("retraining")
    metrics: dict[str, Any] = {"delta_final": run.latency_control.coefficient, "discretization": setup.config.discretization,
                               "zero_config": setup.zero.name, "op_space": str(setup.deploy_template.op_space)}
    fallback: list[dict] = []
    if setup.table is not None:
        metrics["alpha_only_latency_ms"] = setup.ctx.predict_latency_ms(arch)
        with torch.no_grad():
            metrics["expected_latency_ms"] = float(run.penalty())
        if setup.budget_ms is not None and metrics["alpha_only_latency_ms"] > setup.budget_ms:
            log.warning("the α-discretised types are predicted %.3f ms > budget %.3f ms: greedy fix-up (last resort)",
                        metrics["alpha_only_latency_ms"], setup.budget_ms)
            arch, fallback = fit_types_to_budget(run, arch, setup.budget_ms, setup.ctx.predict_latency_ms)
    metrics.update({"budget_fallback": fallback, "fixup_replacements": sum(1 for r in fallback if "from" in r)})
    log_extra = {"op_names": setup.op_names, "search_template": setup.search_template.to_dict(),
                 "eval_template": setup.eval_template.to_dict(), "delta_rule": run.latency_control.describe(),
                 "latency_control": run.latency_control.state_dict(), "epochs": run.log}
    return SearchOutcome(arch=arch, search_seconds=run.seconds, metrics=metrics, log=log_extra)


def outcome(ctx: SearchContext, config: HierarchicalConfig, micro: SearchOutcome, micro_run, macro_run: MacroRun) -> SearchOutcome:
    arch = macro_run.genotype()
    metrics: dict[str, Any] = {"version": config.version, "micro_seconds": round(micro_run.seconds, 2),
                               "macro_seconds": round(macro_run.seconds, 2), "inputs_gamma": list(arch.inputs),
                               "micro_arch": ctx.space.arch_to_json(micro.arch),
                               **{f"micro_{k}": v for k, v in micro.metrics.items()}}
    metrics["micro_predicted_latency_ms"] = ctx.predict_latency_ms(micro.arch)  # E_micro's cells at the deployment depth
    if config.version == 2:
        metrics["types_gamma"] = list(arch.types)
    fallback: list[dict] = []
    if ctx.table is not None:
        metrics["gamma_only_latency_ms"] = ctx.predict_latency_ms(arch)  # γ̄, before any fix-up
        with torch.no_grad():
            metrics["macro_expected_latency_ms"] = float(macro_run.penalty())
        budget = ctx.latency_budget_ms
        if budget is not None and metrics["gamma_only_latency_ms"] > budget:
            log.warning("the γ-discretised template is predicted %.3f ms > budget %.3f ms: moving the dearest choices to "
                        "the cheapest (last resort)", metrics["gamma_only_latency_ms"], budget)
            fit = macro_run.graph.fit(arch, budget, ctx.predict_latency_ms, ctx.table, ctx.template)
            arch, fallback = fit.arch, fit.replacements
            if fit.predicted_ms > budget:
                raise NasDeployError(f"could not fit the latency budget {budget:.3f} ms (best {fit.predicted_ms:.3f} ms); "
                                     "raise the budget")
    metrics["macro_budget_fallback"] = fallback
    metrics["macro_fixup_replacements"] = len(fallback)  # one record per moved cell (``macro.greedy_fit``)
    # how each phase met the budget, summed as every strategy reports it: α-only = the micro phase's genotype before
    # its fix-up; the replacements = the fix-up of the micro result before the macro phase + the macro phase's
    metrics["alpha_only_latency_ms"] = metrics.get("micro_alpha_only_latency_ms")
    metrics["fixup_replacements"] = metrics.get("micro_fixup_replacements", 0) + metrics["macro_fixup_replacements"]
    log_extra = {"micro": micro.log, "macro": {"epochs": macro_run.log, "delta_rule": macro_run.latency_control.describe(),
                                               "latency_control": macro_run.latency_control.state_dict(),
                                               "search_template": macro_run.setup.search_template.to_dict(),
                                               "eval_template": macro_run.setup.eval_template.to_dict()}}
    title = f"hierarchical ICDARTS v{config.version} ({config.discretization} {micro.metrics.get('zero_config', '')})"
    return SearchOutcome(arch=arch, search_seconds=micro_run.seconds + macro_run.seconds, metrics=metrics, log=log_extra,
                         extra_files=[micro_run.checkpoint_path, macro_run.checkpoint_path], title=title)
