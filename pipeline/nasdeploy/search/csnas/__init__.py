"""CSNAS (Nguyen & Chang): label-free contrastive architecture search with TPE, here under a latency budget.

Algorithm 1 (SMBO with TPE, Eqs. 4-6) on Optuna's ask-and-tell interface, one trial per candidate:

1. ``ask``: the study's sampler proposes θ = (θ_normal, θ_reduce), one op (or ``none``) per cell edge
   (``csnas.encoding``): ``n_startup_trials`` random trials, then TPE (top-``gamma`` share forms l(θ),
   ``n_ei_candidates`` draws from l maximise l/g, Eq. 6).
2. **Budget before training**: the LUT predicts θ's latency on the deployment template (and FLOPs are counted
   when a FLOPs budget is given). Each is recorded as an Optuna constraint (``Trial.set_constraint``:
   predicted - budget, feasible when <= 0); a θ over a budget is told ``PRUNED`` at once and never trained.
   TPE ranks such infeasible trials after every feasible one (g(θ) learns where the budget is broken) and the
   loop asks again; ``max_rejections`` proposals over budget in a row end the search with one line.
3. Otherwise the candidate is built at the search size and trained on the unlabelled search images with the
   PIRL objective (Eqs. 1-3, memory bank) for a short schedule (``csnas.candidate``), and **the objective TPE
   minimises** is told: the mean over every search image of L_θ (Eq. 3) after training, in one pass without
   updates, views from a fixed seed, anchors r_x from the trained memory bank. A θ identical to a completed
   trial is told that trial's value without training (the same θ would score the same: common random numbers).
4. Until the study has ``n_trials`` trained trials (all workers together; repeats do not count). After
   ``max_rejections`` proposals in a row that train nothing new (over budget, or repeats: TPE has converged) a
   worker stops; with nothing trained at all that is an error (the budget is too tight). A worker then waits for the other
   workers' running trials (up to 3x the longest trial so far, so a crashed worker's leftover does not hang it)
   and writes the study's best completed trial as ``arch.json``.

No label is ever read: the candidates see only ``ctx.data.two_views`` (images and their augmented views).
The searched cells are evaluated on appendix B's 20 x 36 network (the paper template) and retrained with the
``csnas`` recipe (``csnas.recipe``: appendix B's 1200 epochs, weight decay 3e-4, drop-path 0.2, clip 5).
Several processes with the same ``--set storage=... --set study=...`` share one study; each trial is trained by
the one process that asked for it.
"""

from __future__ import annotations

from typing import Any

from nasdeploy.search.base import STRATEGIES, SearchStrategy
from nasdeploy.search.context import SearchContext, SearchOutcome
from nasdeploy.search.csnas import recipe  # noqa: F401  (registers the csnas retraining recipe)
from nasdeploy.search.csnas.config import ALIASES, PRESETS, CSNASConfig, validate
from nasdeploy.search.csnas.encoding import all_zero_theta, decode
from nasdeploy.search.csnas.run import CSNASRun


@STRATEGIES.register("csnas")
class CSNAS(SearchStrategy):
    """Label-free contrastive (PIRL) scoring of DARTS cells proposed by Optuna's TPE, under LUT latency / FLOPs budgets."""

    name = "csnas"
    spaces = ("darts",)
    config_class = CSNASConfig
    presets = PRESETS
    aliases = ALIASES
    uses_flops_budget = True
    summary = "label-free contrastive (PIRL/NCE) scoring + Optuna TPE, budget-checked before training, shareable studies; Nguyen & Chang"

    def validate(self, config: CSNASConfig) -> None:
        validate(config)

    def template_overrides(self, config: CSNASConfig, table_template=None, space: str = "darts") -> dict[str, Any]:
        overrides: dict[str, Any] = {}
        if config.op_space is not None:
            overrides["op_space"] = str(config.op_space)
        if config.nodes is not None:
            overrides["nodes"] = config.nodes
        return overrides

    def retrain_recipe(self, space: str) -> str:
        return "csnas"  # appendix B: 1200 epochs, wd 3e-4, drop-path 0.2, clip 5 (``csnas.recipe``)

    def cheapest_latency_ms(self, ctx: SearchContext, config: CSNASConfig) -> float:
        """Every edge ``none``: only the fixed parts (stem, cell pre-processing, classifier) cost anything."""
        nodes = ctx.template.nodes
        return ctx.predict_latency_ms(decode(all_zero_theta(nodes), nodes))

    def search(self, ctx: SearchContext, config: CSNASConfig) -> SearchOutcome:
        return CSNASRun(ctx, config).run()
