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
Several processes with the same ``--set storage=... --set study=...`` share one study; each trial is trained by
the one process that asked for it.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from nasdeploy.errors import NasDeployError
from nasdeploy.progress import progress_bar
from nasdeploy.search.base import STRATEGIES, SearchStrategy
from nasdeploy.search.context import SearchContext, SearchOutcome
from nasdeploy.search.csnas.candidate import SearchImages, search_template_for, train_and_score
from nasdeploy.search.csnas.config import ALIASES, PRESETS, CSNASConfig, validate
from nasdeploy.search.csnas.encoding import all_zero_theta, decode, suggest_theta
from nasdeploy.search.csnas.study import make_sampler, open_storage, open_study, study_fingerprint, study_name, worker_id

log = logging.getLogger(__name__)

OBJECTIVE = ("mean over every search image of L_θ (Eq. 3: λ·L_NCE(r_x, z^t) + (1-λ)·L_NCE(r_x, z)) after the "
             "candidate's training, one pass without updates, fixed-seed views, memory-bank anchors; minimised")
STALE_FACTOR, STALE_MIN_S, POLL_S = 3.0, 60.0, 1.0


def op_names_of(template) -> list[str]:
    from nasdeploy.spaces.ops import op_space_names

    return op_space_names(template.op_space)


def flops_of(ctx: SearchContext, genotype) -> int:
    from nasdeploy.spaces.flops import count_flops

    size = ctx.template.input_size
    return int(count_flops(ctx.space.build(genotype, ctx.template), (1, ctx.template.in_channels, size, size)))


class CSNASRun:
    """One worker on one study: ask, check the budgets, train and tell, until the study has ``n_trials``."""

    def __init__(self, ctx: SearchContext, config: CSNASConfig):
        self.ctx, self.config = ctx, config
        self.nodes = ctx.template.nodes
        self.op_names = op_names_of(ctx.template)
        self.search_template = search_template_for(ctx.template, config)
        self.worker = worker_id()
        self.here = {"trained": [], "rejected": [], "duplicates": [], "failed": []}

    # -------------------------------------------------------------- budgets
    def constraints(self, genotype) -> dict[str, float]:
        """predicted - budget per budget (Optuna's convention: feasible when <= 0), with the predictions."""
        ctx, out = self.ctx, {}
        if ctx.latency_budget_ms is not None:
            out["latency_ms"] = ctx.predict_latency_ms(genotype) - ctx.latency_budget_ms
        if ctx.flops_budget is not None:
            out["flops"] = flops_of(ctx, genotype) - ctx.flops_budget
        return out

    def check_flops_budget(self) -> None:
        if self.ctx.flops_budget is None:
            return
        cheapest = flops_of(self.ctx, decode(all_zero_theta(self.nodes), self.nodes))
        if self.ctx.flops_budget < cheapest:
            raise NasDeployError(f"FLOPs budget {self.ctx.flops_budget:,.0f} is below the cheapest csnas network "
                                 f"({cheapest:,} multiply-adds: stem, pre-processing and classifier); raise --flops-budget")

    # -------------------------------------------------------------- one trial
    def run_trial(self, study, images) -> str:
        from optuna.trial import TrialState

        trial = study.ask()
        theta = suggest_theta(trial, self.nodes, self.op_names)
        genotype = decode(theta, self.nodes)
        trial.set_user_attr("worker", self.worker)
        predicted = self.ctx.predict_latency_ms(genotype)
        if predicted is not None:
            trial.set_user_attr("predicted_latency_ms", predicted)
        constraints = self.constraints(genotype)
        for key, value in constraints.items():
            trial.set_constraint(key, value)
        if any(value > 0 for value in constraints.values()):
            trial.set_user_attr("rejected", "over budget: " + ", ".join(k for k, v in constraints.items() if v > 0))
            study.tell(trial, state=TrialState.PRUNED)  # never trained
            self.here["rejected"].append(trial.number)
            return "rejected"
        twin = next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.params == theta), None)
        if twin is not None:
            trial.set_user_attr("duplicate_of", twin.number)
            study.tell(trial, twin.value)
            self.here["duplicates"].append(trial.number)
            return "duplicate"
        try:
            result = train_and_score(self.ctx, genotype, self.search_template, images, self.config)
        except BaseException as exc:
            trial.set_user_attr("failed", f"{exc.__class__.__name__}: {exc}"[:200])
            study.tell(trial, state=TrialState.FAIL)
            raise
        trial.set_user_attr("trained", True)
        trial.set_user_attr("train_losses", result.train_losses)
        trial.set_user_attr("train_seconds", round(result.seconds, 2))
        trial.set_user_attr("search_params", result.params)
        if result.contrastive_loss != result.contrastive_loss:  # NaN: the candidate diverged
            trial.set_user_attr("failed", "contrastive loss is NaN")
            study.tell(trial, state=TrialState.FAIL)
            self.here["failed"].append(trial.number)
            return "failed"
        study.tell(trial, result.contrastive_loss)
        self.here["trained"].append(trial.number)
        log.info("trial %d: contrastive loss %.4f (%.1f s)%s", trial.number, result.contrastive_loss, result.seconds,
                 f", predicted {predicted:.3f} ms" if predicted is not None else "")
        return "trained"

    # -------------------------------------------------------------- the loop
    def trained(self, study) -> int:
        """Trials of the study (all workers) that trained a candidate: what ``n_trials`` counts."""
        from optuna.trial import TrialState

        return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.user_attrs.get("trained"))

    def wait_for_others(self, study) -> None:
        """Let other workers' running trials finish, so the best written here is the study's best."""
        from optuna.trial import TrialState

        while True:
            trials = study.get_trials(deepcopy=False)
            longest = max((t.duration.total_seconds() for t in trials if t.duration is not None), default=0.0)
            horizon = datetime.now() - timedelta(seconds=max(STALE_FACTOR * longest, STALE_MIN_S))
            running = [t.number for t in trials if t.state == TrialState.RUNNING and t.datetime_start
                       and t.datetime_start > horizon]
            if not running:
                return
            log.info("waiting for trial(s) %s of other workers", running)
            time.sleep(POLL_S)

    def run(self) -> SearchOutcome:
        started = time.perf_counter()
        config, ctx = self.config, self.ctx
        self.check_flops_budget()
        storage, where = open_storage(config.storage, ctx.out_dir)
        fingerprint = study_fingerprint(ctx)
        name = study_name(config.study, fingerprint)
        study = open_study(storage, where, name, fingerprint, ctx.resume, make_sampler(config, ctx.seed))
        images = SearchImages(ctx, config.data_fraction)
        log.info("CSNAS: %d unlabelled search images (%.0f %% of %d), candidates %d layers x %d channels, N = %d, "
                 "%d ops + none, %s", len(images), 100 * config.data_fraction, images.total, config.search_layers,
                 config.search_channels, self.nodes, len(self.op_names),
                 f"budget {ctx.latency_budget_ms:.3f} ms" if ctx.latency_budget_ms is not None else "no latency budget")
        in_a_row = 0
        with progress_bar() as bar:
            task = bar.add_task("csnas trials", total=config.n_trials, completed=min(self.trained(study), config.n_trials), info="")
            while self.trained(study) < config.n_trials:
                outcome = self.run_trial(study, images)
                in_a_row = in_a_row + 1 if outcome in ("rejected", "duplicate") else 0
                if in_a_row >= config.max_rejections:
                    if self.best_value(study) is None:
                        raise NasDeployError(
                            f"{in_a_row} proposals in a row were over the budget (latency {ctx.latency_budget_ms} ms, "
                            f"FLOPs {ctx.flops_budget}) and none was trained; raise the budget or --set max_rejections=N")
                    log.warning("stopping: %d proposals in a row were over budget or repeated a trained cell (%d trained)",
                                in_a_row, self.trained(study))
                    self.here["stopped"] = f"{in_a_row} proposals in a row trained nothing new"
                    break
                best = self.best_value(study)
                bar.update(task, completed=min(self.trained(study), config.n_trials),
                           info=f"best {best:.4f}" if best is not None else "")
        self.wait_for_others(study)
        return self.outcome(study, where, time.perf_counter() - started, images)

    @staticmethod
    def best_value(study) -> float | None:
        from optuna.trial import TrialState

        values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        return min(values) if values else None

    # -------------------------------------------------------------- outputs
    def outcome(self, study, where: str, seconds: float, images: SearchImages) -> SearchOutcome:
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            raise NasDeployError(f"study {study.study_name!r} has no completed trial (all failed or were rejected); "
                                 "see search_log.json and raise the budget or lower lr")
        best = min(complete, key=lambda t: (t.value, t.number))
        genotype = decode(best.params, self.nodes)
        rows = [trial_row(t) for t in trials]
        counts = {
            "trials_complete": len(complete),
            "trials_trained": sum(1 for t in complete if t.user_attrs.get("trained")),
            "trials_duplicate": sum(1 for t in complete if "duplicate_of" in t.user_attrs),
            "trials_rejected": sum(1 for t in trials if t.state == TrialState.PRUNED and "rejected" in t.user_attrs),
            "trials_failed": sum(1 for t in trials if t.state == TrialState.FAIL),
            "trials_running": sum(1 for t in trials if t.state == TrialState.RUNNING),
        }
        metrics: dict[str, Any] = {
            "contrastive_loss": best.value, "best_trial": best.number, **counts,
            "trained_here": len(self.here["trained"]), "rejected_here": len(self.here["rejected"]),
            "workers": len({t.user_attrs.get("worker") for t in trials if t.user_attrs.get("worker")}),
            "study": study.study_name, "storage": where, "retrain_epochs": self.config.retrain_epochs,
            "op_space": str(self.ctx.template.op_space), "nodes": self.nodes,
        }
        log_extra = {
            "objective": OBJECTIVE, "worker": self.worker, "here": self.here,
            "search_images": {"count": len(images), "of": images.total, "fraction": self.config.data_fraction},
            "search_template": self.search_template.to_dict(), "best": trial_row(best), "trials": rows,
        }
        extra = [p for p in [self.ctx.out_dir / "csnas_study.journal"] if p.is_file()]
        return SearchOutcome(arch=genotype, search_seconds=seconds, metrics=metrics, log=log_extra, extra_files=extra,
                             title=f"CSNAS trial {best.number} (contrastive loss {best.value:.3f})")


def trial_row(trial) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {
        "number": trial.number, "state": trial.state.name, "value": trial.value, "worker": attrs.get("worker"),
        "trained": bool(attrs.get("trained")), "predicted_latency_ms": attrs.get("predicted_latency_ms"),
        "rejected": attrs.get("rejected"), "duplicate_of": attrs.get("duplicate_of"), "failed": attrs.get("failed"),
        "train_seconds": attrs.get("train_seconds"), "train_losses": attrs.get("train_losses"),
        "constraints": dict(trial.constraints) if trial.constraints else None, "params": trial.params,
    }


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

    def template_overrides(self, config: CSNASConfig, table_template=None) -> dict[str, Any]:
        overrides: dict[str, Any] = {}
        if config.op_space is not None:
            overrides["op_space"] = str(config.op_space)
        if config.nodes is not None:
            overrides["nodes"] = config.nodes
        return overrides

    def cheapest_latency_ms(self, ctx: SearchContext, config: CSNASConfig) -> float:
        """Every edge ``none``: only the fixed parts (stem, cell pre-processing, classifier) cost anything."""
        nodes = ctx.template.nodes
        return ctx.predict_latency_ms(decode(all_zero_theta(nodes), nodes))

    def search(self, ctx: SearchContext, config: CSNASConfig) -> SearchOutcome:
        return CSNASRun(ctx, config).run()
