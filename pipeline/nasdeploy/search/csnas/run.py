"""CSNAS' run (Algorithm 1 on Optuna's ask-and-tell): one worker on one study, budgets checked before training;
the strategy and its settings: ``search.csnas``."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from nasdeploy.errors import NasDeployError
from nasdeploy.progress import progress_bar
from nasdeploy.search.context import SearchContext, SearchOutcome
from nasdeploy.search.csnas.candidate import SearchImages, search_template_for, train_and_score
from nasdeploy.search.csnas.config import CSNASConfig
from nasdeploy.search.csnas.encoding import all_zero_theta, decode, suggest_theta
from nasdeploy.search.csnas.outcome import StudyOutcome
from nasdeploy.search.csnas.study import make_sampler, open_storage, open_study, study_fingerprint, study_name, worker_id

log = logging.getLogger(__name__)

STALE_FACTOR, STALE_MIN_S, POLL_S = 3.0, 60.0, 1.0


def op_names_of(template) -> list[str]:
    from nasdeploy.spaces.ops import op_space_names

    return op_space_names(template.op_space)


def flops_of(ctx: SearchContext, genotype) -> int:
    from nasdeploy.spaces.flops import count_flops

    size = ctx.template.input_size
    return int(count_flops(ctx.space.build(genotype, ctx.template), (1, ctx.template.in_channels, size, size)))


class CSNASRun(StudyOutcome):
    """One worker on one study: ask, check the budgets, train and tell, until the study has ``n_trials``; the study's result
    (its best completed trial, counts, the log) is ``StudyOutcome`` (``csnas.outcome``)."""

    def __init__(self, ctx: SearchContext, config: CSNASConfig):
        self.ctx, self.config = ctx, config
        self.nodes = ctx.template.nodes
        self.op_names = op_names_of(ctx.template)
        self.search_template = search_template_for(ctx.template, config)
        self.worker = worker_id()
        self.here = {"trained": [], "rejected": [], "duplicates": [], "failed": []}

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
