"""ICDARTS' run: Algorithm 1 on a search network S and an evaluation network E, checkpointed per epoch, and the
result (discretisation, the budget's last-resort fix-up). The strategy and its settings: ``search.icdarts``."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from nasdeploy.io import atomic_write_json
from nasdeploy.progress import progress_bar
from nasdeploy.search.context import SearchContext, SearchOutcome, mix_seed, seed_everything
from nasdeploy.search.icdarts.config import ICDARTSConfig
from nasdeploy.search.icdarts.records import RunRecords
from nasdeploy.search.icdarts.steps import Algorithm1Steps
from nasdeploy.search.shared import budget
from nasdeploy.search.shared.budget import genotype_changes
from nasdeploy.search.shared.darts_supernet import SearchNetwork
from nasdeploy.search.shared.discretize import ZeroConfig, candidate_ops, discretize
from nasdeploy.search.shared.latency_control import ControllerConfig, LatencyController

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ setup
@dataclass
class SearchSetup:
    """ICDARTS's view of the shared search context: its templates, candidate ops and zero configuration; the
    rest is read from the context (one source of truth)."""

    ctx: SearchContext
    search_template: Any
    eval_template: Any
    op_names: list[str]  # the search network's candidates: op space (or pool) + zero op
    zero: ZeroConfig
    config: ICDARTSConfig

    space = property(lambda self: self.ctx.space)
    deploy_template = property(lambda self: self.ctx.template)
    table = property(lambda self: self.ctx.table)
    budget_ms = property(lambda self: self.ctx.latency_budget_ms)
    cheapest_ms = property(lambda self: self.ctx.cheapest_latency_ms)
    train_set = property(lambda self: self.ctx.data.train)
    val_set = property(lambda self: self.ctx.data.val)
    device = property(lambda self: self.ctx.device)
    seed = property(lambda self: self.ctx.seed)
    data = property(lambda self: self.ctx.request.data)


def icdarts_setup(ctx: SearchContext, config: ICDARTSConfig) -> SearchSetup:
    """Search network S and evaluation network E templates from the deployment template (§3.4.2); the heads of
    option ``aux_head`` (``spaces.heads``): §3.1.1's in S and E, or DARTS' tower in E only, or none."""
    template = ctx.template
    op_names, zero = candidate_ops(template, config)
    heads = config.aux_head
    return SearchSetup(
        ctx=ctx, op_names=op_names, zero=zero, config=config,
        search_template=replace(template, layers=config.search_layers, C=config.search_channels,
                                auxiliary=heads == "cdarts", aux_head=heads, drop_path=0.0),
        eval_template=replace(template, layers=config.eval_layers or template.layers, C=config.eval_channels or template.C,
                              auxiliary=heads != "none", aux_head=heads, drop_path=0.0),
    )


# ------------------------------------------------------------------------------------------ one run
class ICDARTSRun(Algorithm1Steps, RunRecords):
    """One ICDARTS search phase (Algorithm 1), checkpointed at every epoch boundary.

    The networks and optimisers are here, the loop over epochs too (``run``, ``run_epoch``); an epoch's steps
    (α, w_S, w_E, E's regeneration) are ``Algorithm1Steps`` (``icdarts.steps``), its records and checkpoint state
    ``RunRecords`` (``icdarts.records``).
    A phase on another search network S (hierarchical ICDARTS' macro and typed micro phases) subclasses it and
    overrides ``seed_salt``, ``build_search_network``, ``stem_repeat_source`` and ``penalty``; the loop runs as it is.
    """

    seed_salt = 0xA1FA  # S's initialisation seed is mix_seed(seed, seed_salt)

    def __init__(self, setup: SearchSetup, out_dir: Path, epochs: int, masks=(None, None), label: str = "icdarts"):
        cfg = setup.config
        self.setup, self.cfg, self.out_dir, self.label = setup, cfg, Path(out_dir), label
        self.masks = masks
        self.total_epochs = cfg.pretrain_epochs + epochs
        seed_everything(mix_seed(setup.seed, self.seed_salt))
        self.S = self.build_search_network().to(setup.device)
        self.opt_w = torch.optim.SGD(self.S.weight_parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum,
                                     weight_decay=cfg.w_weight_decay)
        self.opt_a = torch.optim.Adam(self.S.arch_parameters(), lr=cfg.alpha_lr,
                                      betas=(cfg.alpha_beta1, cfg.alpha_beta2), weight_decay=cfg.alpha_weight_decay)
        self.latency_source = self.stem_repeat_source()
        p0 = 1.0
        if setup.table is not None:
            with torch.no_grad():
                p0 = float(self.penalty())  # P(α_0): the Lagrangian surrogate's normaliser
        budget_ms = setup.budget_ms if setup.table is not None else None
        self.latency_control = LatencyController(budget_ms, cfg.delta, p0, ControllerConfig.from_settings(cfg))
        self.E = self.opt_e = self.genotype_E = None
        self.epoch, self.step, self.log, self.seconds = 0, 0, [], 0.0

    def build_search_network(self) -> torch.nn.Module:
        """S: needs ``arch_parameters()`` (Adam with α's settings) and ``weight_parameters()`` (SGD)."""
        setup = self.setup
        return SearchNetwork(setup.search_template, setup.op_names, self.cfg.discretization, self.masks)

    def stem_repeat_source(self):
        """Algorithm 3's costs: None = the table (ms), or Table 4.6-style stem-repeat weights (``latency_weights``)."""
        if self.cfg.latency_weights is None:
            return None
        from nasdeploy.latency.stem_repeat import load_stem_repeat_weights

        return load_stem_repeat_weights(self.cfg.latency_weights)

    # ---------------------------------------------------------------- S, P(α), the genotype
    def penalty(self) -> torch.Tensor:
        """P(α): Algorithm 3, α normalised as the discretisation rule does; in ms from the table, or unitless from
        the stem-repeat weights of option ``latency_weights`` (Table 4.6).

        With a fixed δ (Eq. 4.1, Table 4.7) the cell counts C_i are the search network's, as in Algorithm 3, so δ
        means what it means in the dissertation. Under a budget the Lagrangian controller uses P(α)/P(α_0) as a
        surrogate of the *deployed* network's latency, so there the deployment template's counts are kept.
        """
        from nasdeploy.latency.predictor import cell_type_counts, expected_latency_darts

        alpha_n, alpha_r = self.S.masked_alphas()
        counts = cell_type_counts(self.setup.search_template) if self.cfg.delta is not None else None
        return expected_latency_darts(alpha_n, alpha_r, self.setup.op_names, self.setup.deploy_template, self.setup.table,
                                      rule=self.cfg.discretization, source=self.latency_source, cell_counts=counts)

    def genotype(self, stage: str = "retraining"):
        return discretize(self.S.alpha_normal, self.S.alpha_reduce, self.setup.op_names, self.setup.search_template.nodes,
                          self.cfg.discretization, self.setup.zero, stage, self.cfg.k, self.masks)

    # ---------------------------------------------------------------- Algorithm 1's loop
    def lr_at(self, epoch: int) -> float:
        """Cosine annealing of the weight learning rate over all epochs (§3.4.2)."""
        cfg = self.cfg
        return cfg.w_lr_min + 0.5 * (cfg.w_lr - cfg.w_lr_min) * (1 + math.cos(math.pi * epoch / max(1, self.total_epochs)))

    def run(self, resume: bool) -> "ICDARTSRun":
        """Algorithm 1, epoch by epoch from the checkpoint (if resuming) to the end; checkpoint + log after each."""
        if resume:
            self.load_state_dict(self.checkpoint().load())
            log.info("%s: resuming at epoch %d of %d", self.label, self.epoch, self.total_epochs)
        with progress_bar() as bar:
            epochs_task = bar.add_task(f"{self.label} epochs", total=self.total_epochs, completed=self.epoch, info="")
            while self.epoch < self.total_epochs:
                self.run_epoch(bar, epochs_task)
        return self

    def run_epoch(self, bar, epochs_task) -> None:
        """One epoch: re-seed from (seed, epoch), anneal w_S's rate, pre-train S (Eq. 3.4) or search (α, w_S, w_E
        per step, E regenerated every S_U steps), then record it."""
        epoch, started, coefficient = self.epoch, time.perf_counter(), self.latency_control.coefficient
        seed_everything(mix_seed(self.setup.seed, epoch))
        lr = self.lr_at(epoch)
        for group in self.opt_w.param_groups:
            group["lr"] = lr
        phase = "pretrain" if epoch < self.cfg.pretrain_epochs else "search"
        train, val = self.loaders(epoch)
        steps = self.steps_in(train) if phase == "pretrain" else min(self.steps_in(train), self.steps_in(val))
        task = bar.add_task(f"  {phase} epoch {epoch + 1}", total=steps, info="")
        if phase == "pretrain":
            means = self.pretrain_epoch(epoch, bar, task)
        else:
            means = self.search_epoch(epoch, lr, bar, task)
        bar.remove_task(task)
        seconds = time.perf_counter() - started
        self.seconds += seconds
        record = self.epoch_record(epoch, phase, lr, means, seconds)
        if phase == "search":  # the record has P(α) and the discretised prediction; λ before and after:
            record["delta"], record["delta_next"] = coefficient, self.latency_control.coefficient
            record["latency_steps"] = self.latency_control.history[-steps:] if self.latency_control.history else []
        self.end_epoch(epoch, phase, record, bar, epochs_task)

    def end_epoch(self, epoch: int, phase: str, record: dict[str, Any], bar, epochs_task) -> None:
        """The epoch's record into the log, the checkpoint and ``search_log.json``; a one-line summary."""
        self.log.append(record)
        self.epoch += 1
        self.checkpoint().save(self.state_dict())
        atomic_write_json(self.out_dir / "search_log.json", {"label": self.label, "epochs": self.log})
        summary = f"L_S {record.get('loss_S_train', float('nan')):.3f}"
        if "predicted_latency_ms" in record:
            summary += f" pred {record['predicted_latency_ms']:.2f} ms coef {record.get('delta_next', record['delta']):.3g}"
        bar.update(epochs_task, advance=1, info=summary)
        log.info("%s epoch %d/%d (%s): %s", self.label, epoch + 1, self.total_epochs, phase, summary)


# ------------------------------------------------------------------------------------------ results
def finish(setup: SearchSetup, run: ICDARTSRun, extra_log: dict[str, Any]) -> SearchOutcome:
    """Discretise α; with a budget, the greedy fix-up is the last resort and is counted in the metrics."""
    template, table = setup.deploy_template, setup.table
    genotype = run.genotype("retraining")
    metrics: dict[str, Any] = {"delta_final": run.latency_control.coefficient, "discretization": setup.config.discretization,
                               "zero_config": setup.zero.name, "op_space": str(template.op_space)}
    fallback: list[dict] = []
    if table is not None:
        predict = setup.ctx.predict_latency_ms
        alpha_only = predict(genotype)
        metrics["alpha_only_latency_ms"] = alpha_only  # the α-discretised genotype, before any fix-up
        if setup.budget_ms is not None and alpha_only > setup.budget_ms:
            log.warning("the α-discretised genotype is predicted %.3f ms > budget %.3f ms: greedy fix-up (last resort)",
                        alpha_only, setup.budget_ms)
            genotype, fallback = fit_genotype(setup, run, genotype, predict)
        with torch.no_grad():
            metrics["expected_latency_ms"] = float(run.penalty())
    replacements = genotype_changes(run.genotype("retraining"), genotype)
    if fallback:
        log.warning("budget fallback: %d op replacement(s) brought the genotype under %.3f ms", replacements, setup.budget_ms)
    metrics.update({"budget_fallback": fallback, "fixup_replacements": replacements})
    log_extra = {"op_names": setup.op_names, "search_template": setup.search_template.to_dict(),
                 "eval_template": setup.eval_template.to_dict(), "delta_rule": run.latency_control.describe(),
                 "latency_control": run.latency_control.state_dict(), "epochs": run.log, **extra_log}
    title = f"ICDARTS {setup.config.discretization} {setup.zero.name}"
    return SearchOutcome(arch=genotype, search_seconds=run.seconds, metrics=metrics, log=log_extra,
                         extra_files=[run.checkpoint_path], title=title)


def fit_genotype(setup: SearchSetup, run: ICDARTSRun, genotype, predict):
    """``budget.fit_genotype``: replace the costliest chosen ops (ranked by α) until the prediction fits."""
    cfg = setup.config
    weights = dict(zip(("normal", "reduce"), (w.detach() for w in run.S.mixing_weights())))
    return budget.fit_genotype(genotype, setup.budget_ms, predict, setup.table, setup.deploy_template, setup.op_names,
                               setup.zero, weights, cfg.discretization, cfg.k)
