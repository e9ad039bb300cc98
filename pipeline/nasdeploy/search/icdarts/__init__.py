"""ICDARTS (Herron 2023, chapters 3-4) as the ``icdarts`` search strategy, default for the ``darts`` space.

* Algorithm 1: a search network S of continuous cells (Eq. 3.1, ``search.shared.darts_supernet``) and an evaluation network
  E, the discretised α (§3.1.1) in the deeper CDARTS template, rebuilt every S_U steps and warmed up for
  ``warmup_epochs``; S is pre-trained for ``pretrain_epochs`` (Eq. 3.4). Both carry §3.1.1's auxiliary heads
  (option ``aux_head=cdarts``: a head on each reduction cell, combined with the final logits into the network's
  final output, ``spaces.heads``); ``aux_head=darts`` keeps DARTS' tower on E only. ``arch.json``'s template
  records the choice, so retraining trains the same heads with the same loss.
  Per step: α on a *val* batch (Eq. 3.9 + δ·P), w_S on a *train* batch (Eq. 3.10 / 4.1), w_E on the same
  *train* batch (Eq. 3.11). Separate optimisers (§3.4.2); see ``search.shared.objective`` for the gradient
  routing
  and why δ·P(α) also sits in α's objective.
* Train/val are the two halves of the training set (§3.4.2, ``train.data.split_halves``).
* Latency: P(α) is Algorithm 3 (``latency.predictor.expected_latency_darts``) on the *deployment* template,
  i.e. the LUT's template, α normalised as the discretisation rule does. With ``--latency-budget`` a
  Lagrange multiplier λ on the discretised genotype's predicted latency is updated after every α step
  (``search.shared.latency_control``; ``--delta`` fixes Eq. 4.1's δ instead), and a genotype still over the budget
  at the end is forced under it (``search.shared.budget.fit_to_budget``). A budget below the cheapest genotype the
  discretisation rule can produce fails before training.
* Discretisation rules, zero configurations V0-V4 and op spaces: ``search.shared.discretize``; Algorithm 2's
  tournament: ``search.icdarts.tournament`` (option ``tiers``).
* Resume: a checkpoint is written at every epoch boundary; every epoch re-seeds torch / numpy / random and
  the loaders from (seed, epoch), so a resumed search ends with the same genotype and α as an uninterrupted
  one. Tournament games keep their own checkpoints under ``tournament/tier<t>_game<r>/``.

Options: the table in ``nasdeploy.search.icdarts.config``.
Settings: ``nasdeploy strategies icdarts`` (``search.icdarts.config``). Setup (table, templates, data, budget
pre-check, seeds, checkpoint fingerprint) and outputs (``arch.json``, ``search_log.json``, ``architecture.png``)
come from the shared ``search.context``; ``checkpoint.pt`` is written here.

The folder: ``config.py`` (settings, presets), ``run.py`` (``ICDARTSRun``: Algorithm 1, the run hierarchical ICDARTS
extends; ``finish``: the result), ``tournament.py`` (Algorithm 2).
"""

from __future__ import annotations

import logging
from typing import Any

from nasdeploy.search.base import STRATEGIES, SearchStrategy
from nasdeploy.search.context import SearchContext, SearchOutcome
from nasdeploy.search.icdarts.config import ALIASES, PRESETS, ICDARTSConfig, validate
from nasdeploy.search.icdarts.run import ICDARTSRun, SearchSetup, finish, icdarts_setup  # noqa: F401  (the run class others extend)
from nasdeploy.search.icdarts.tournament import play_tournament
from nasdeploy.search.shared.budget import cheapest_genotype
from nasdeploy.search.shared.discretize import candidate_ops

log = logging.getLogger(__name__)


@STRATEGIES.register("icdarts")
class ICDARTS(SearchStrategy):
    """ICDARTS search phase (Algorithm 1) with the latency penalty (Eq. 4.1, Algorithm 3) and the tournament (Algorithm 2)."""

    name = "icdarts"
    spaces = ("darts",)
    default_for_spaces = ("darts",)
    config_class = ICDARTSConfig
    presets = PRESETS
    aliases = ALIASES
    summary = "cyclic DARTS (search + evaluation network) with the LUT latency penalty; Herron 2023"
    data_parallel = True  # torchrun: ctx.loader + ctx.average_gradients after every backward

    def validate(self, config: ICDARTSConfig) -> None:
        validate(config)

    def template_overrides(self, config: ICDARTSConfig, table_template=None, space: str = "darts") -> dict[str, Any]:
        overrides: dict[str, Any] = {}
        if config.op_space is not None:
            overrides["op_space"] = str(config.op_space)
        elif config.tiers and table_template is None:
            overrides["op_space"] = "combined"  # the tournament draws from the combined pool
        if config.nodes is not None:
            overrides["nodes"] = config.nodes
        overrides["aux_head"] = config.aux_head  # arch.json's template: retraining trains the heads E had (§3.1.1)
        return overrides

    def wants_table(self, config: ICDARTSConfig) -> bool:
        return bool(config.delta)

    def cheapest_latency_ms(self, ctx: SearchContext, config: ICDARTSConfig) -> float:
        """The cheapest genotype the discretisation rule can output (a budget below it cannot be met)."""
        op_names, zero = candidate_ops(ctx.template, config)
        cheapest = cheapest_genotype(ctx.table, ctx.template, op_names, config.discretization, zero, config.k)
        return ctx.predict_latency_ms(cheapest)

    def search(self, ctx: SearchContext, config: ICDARTSConfig) -> SearchOutcome:
        setup = icdarts_setup(ctx, config)
        log.info("ICDARTS: %s rule, %s, op space %s (%d candidates), %s", config.discretization, setup.zero.name,
                 setup.deploy_template.op_space, len(setup.op_names),
                 f"budget {setup.budget_ms:.3f} ms (cheapest {setup.cheapest_ms:.3f} ms)" if setup.budget_ms else "no latency budget")
        if config.tiers:
            run, history = play_tournament(setup, ctx.out_dir, ctx.resume)
            extra = {"tournament": history}
        else:
            run = ICDARTSRun(setup, ctx.out_dir, config.epochs).run(ctx.resume)
            extra = {}
        return finish(setup, run, extra)
