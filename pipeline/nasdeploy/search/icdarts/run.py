"""ICDARTS' run: Algorithm 1 on a search network S and an evaluation network E, checkpointed per epoch, and the
result (discretisation, the budget's last-resort fix-up). The strategy and its settings: ``search.icdarts``."""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from nasdeploy.errors import NasDeployError
from nasdeploy.io import atomic_write_json
from nasdeploy.progress import progress_bar
from nasdeploy.search.shared import budget
from nasdeploy.search.shared.budget import genotype_changes
from nasdeploy.search.shared.darts_supernet import SearchNetwork
from nasdeploy.search.shared.discretize import ZeroConfig, candidate_ops, discretize
from nasdeploy.spaces.darts import node_edge_ranges
from nasdeploy.search.context import SearchContext, SearchOutcome, mix_seed, seed_everything
from nasdeploy.search.icdarts.config import ICDARTSConfig
from nasdeploy.search.shared.objective import (
    accuracy,
    alpha_objective,
    evaluation_objective,
    pretrain_objective,
    running_means,
    search_weight_objective,
)
from nasdeploy.search.shared.latency_control import ControllerConfig, LatencyController
from nasdeploy.search.shared.supernet import batchnorms, cumulative_statistics

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
    """Search network S and evaluation network E templates from the deployment template (§3.4.2)."""
    template = ctx.template
    op_names, zero = candidate_ops(template, config)
    return SearchSetup(
        ctx=ctx, op_names=op_names, zero=zero, config=config,
        search_template=replace(template, layers=config.search_layers, C=config.search_channels, auxiliary=False, drop_path=0.0),
        eval_template=replace(template, layers=config.eval_layers or template.layers, C=config.eval_channels or template.C,
                              auxiliary=True, drop_path=0.0),
    )


# ------------------------------------------------------------------------------------------ one run
class ICDARTSRun:
    """One ICDARTS search phase (Algorithm 1), checkpointed at every epoch boundary.

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

    # ---------------------------------------------------------------- pieces of Algorithm 1
    def penalty(self) -> torch.Tensor:
        """P(α): Algorithm 3 on the deployment template, α normalised as the discretisation rule does; in ms from
        the table, or unitless from the stem-repeat weights of option ``latency_weights`` (Table 4.6)."""
        from nasdeploy.latency.predictor import expected_latency_darts

        alpha_n, alpha_r = self.S.masked_alphas()
        return expected_latency_darts(alpha_n, alpha_r, self.setup.op_names, self.setup.deploy_template, self.setup.table,
                                      rule=self.cfg.discretization, source=self.latency_source)

    def genotype(self, stage: str = "retraining"):
        return discretize(self.S.alpha_normal, self.S.alpha_reduce, self.setup.op_names, self.setup.search_template.nodes,
                          self.cfg.discretization, self.setup.zero, stage, self.cfg.k, self.masks)

    def lr_at(self, epoch: int) -> float:
        """Cosine annealing of the weight learning rate over all epochs (§3.4.2)."""
        cfg = self.cfg
        return cfg.w_lr_min + 0.5 * (cfg.w_lr - cfg.w_lr_min) * (1 + math.cos(math.pi * epoch / max(1, self.total_epochs)))

    def loaders(self, epoch: int):
        bs, make_loader = self.cfg.batch_size, self.setup.ctx.loader  # under torchrun: this rank's share (distributed)
        train = make_loader(self.setup.train_set, bs, shuffle=True, seed=mix_seed(self.setup.seed, epoch, 1), drop_last=True)
        val = make_loader(self.setup.val_set, bs, shuffle=True, seed=mix_seed(self.setup.seed, epoch, 2), drop_last=True)
        if len(train) == 0 or len(val) == 0:
            raise NasDeployError(f"batch size {bs} is larger than half the training set ({len(self.setup.train_set)}); pass a smaller --batch-size")
        return train, val

    def steps_in(self, loader) -> int:
        cap = self.cfg.steps_per_epoch
        return len(loader) if cap is None else min(cap, len(loader))

    def regenerate(self, epoch: int, lr: float, bar=None) -> None:
        """Discretise α to ᾱ, build E in the evaluation template and warm it up on *train* (Eq. 3.11)."""
        cfg, make_loader = self.cfg, self.setup.ctx.loader
        self.genotype_E = self.genotype("evaluation")
        self.E = self.setup.space.build(self.genotype_E, self.setup.eval_template).to(self.setup.device)
        # a new E is a fresh network: its warm-up runs at the initial rate (at the annealed rate of late epochs
        # a few warm-up steps leave it at chance), then it follows S's cosine schedule
        warmup_lr = cfg.eval_warmup_lr if cfg.eval_warmup_lr is not None else cfg.w_lr
        self.opt_e = torch.optim.SGD(self.E.parameters(), lr=warmup_lr, momentum=cfg.w_momentum,
                                     weight_decay=cfg.w_weight_decay)
        self.E.train()
        for w in range(cfg.warmup_epochs):
            loader = make_loader(self.setup.train_set, cfg.batch_size, shuffle=True,
                                 seed=mix_seed(self.setup.seed, epoch, self.step, 3 + w), drop_last=True)
            for n, (x, y) in enumerate(loader):
                if n >= self.steps_in(loader):
                    break
                self.update_evaluation(x.to(self.setup.device), y.to(self.setup.device))

    def update_evaluation(self, x, y):
        """w_E ← Eq. 3.11 (its own optimiser, its own loss only)."""
        self.opt_e.zero_grad(set_to_none=True)
        objective = evaluation_objective(self.E, x, y, self.cfg.aux_weight)
        objective.loss.backward()
        self.setup.ctx.average_gradients(self.E.parameters())
        torch.nn.utils.clip_grad_norm_(self.E.parameters(), self.cfg.w_grad_clip)
        self.opt_e.step()
        return objective

    def search_step(self, xt, yt, xv, yv) -> dict[str, float]:
        """One iteration of Algorithm 1 after (possible) regeneration of E."""
        cfg, control = self.cfg, self.latency_control
        self.S.train()
        self.E.train()
        # α ← Eq. 3.9 + the controller's latency term (λ·P(α)/P(α_0), or Eq. 4.1's δ·P(α)), on val
        self.opt_a.zero_grad(set_to_none=True)
        obj_a = alpha_objective(self.S, self.E, xv, yv, cfg.distill_lambda, cfg.temperature, 0.0, None)
        loss_a, p_value = obj_a.loss, 0.0
        if self.setup.table is not None and control.mode != "off":
            expected = self.penalty()
            loss_a = loss_a + control.penalty(expected)
            obj_a.parts["expected_latency_ms"] = p_value = float(expected.detach())
        loss_a.backward()
        self.setup.ctx.average_gradients(self.S.arch_parameters())
        self.opt_a.step()
        if self.setup.table is not None:  # dual update on the genotype α discretises to now
            from nasdeploy.latency.predictor import predict_latency_ms

            control.observe(predict_latency_ms(self.setup.table, self.genotype("retraining"), self.setup.space,
                                               self.setup.deploy_template))
        # w_S ← Eq. 3.10 / 4.1, on train (E's logits are constants here)
        self.opt_w.zero_grad(set_to_none=True)
        self.opt_e.zero_grad(set_to_none=True)
        obj_e = evaluation_objective(self.E, xt, yt, cfg.aux_weight)
        p_scale = control.p0 if control.mode == "lagrangian" else 1.0  # the term α saw: λ·P/P(α_0) or δ·P
        obj_w = search_weight_objective(self.S, xt, yt, obj_e.logits.detach(), cfg.distill_lambda, cfg.temperature,
                                        control.coefficient, p_value / p_scale)
        obj_w.loss.backward()
        self.setup.ctx.average_gradients(self.S.weight_parameters())
        torch.nn.utils.clip_grad_norm_(self.S.weight_parameters(), cfg.w_grad_clip)
        self.opt_w.step()
        # w_E ← Eq. 3.11, on the same train batch
        obj_e.loss.backward()
        self.setup.ctx.average_gradients(self.E.parameters())
        torch.nn.utils.clip_grad_norm_(self.E.parameters(), cfg.w_grad_clip)
        self.opt_e.step()
        self.step += 1
        return {**obj_a.parts, **obj_w.parts, **obj_e.parts, "acc_S_val": accuracy(obj_a.logits, yv),
                "acc_S_train": accuracy(obj_w.logits, yt), "acc_E_train": accuracy(obj_e.logits, yt)}

    def pretrain_epoch(self, epoch: int, bar, task) -> dict[str, float]:
        """Eq. 3.4: w_S only, α fixed, on train."""
        train, _ = self.loaders(epoch)
        steps, values = self.steps_in(train), {}
        self.S.train()
        for n, (x, y) in enumerate(train):
            if n >= steps:
                break
            x, y = x.to(self.setup.device), y.to(self.setup.device)
            self.opt_w.zero_grad(set_to_none=True)
            objective = pretrain_objective(self.S, x, y)
            objective.loss.backward()
            self.setup.ctx.average_gradients(self.S.weight_parameters())
            torch.nn.utils.clip_grad_norm_(self.S.weight_parameters(), self.cfg.w_grad_clip)
            self.opt_w.step()
            for key, value in {**objective.parts, "acc_S_train": accuracy(objective.logits, y)}.items():
                values.setdefault(key, []).append(value)
            bar.update(task, advance=1, info=f"L_S {objective.parts['loss_S_train']:.3f}")
        return running_means(values)

    def search_epoch(self, epoch: int, lr: float, bar, task) -> dict[str, float]:
        train, val = self.loaders(epoch)
        steps = min(self.steps_in(train), self.steps_in(val))
        update_every = self.cfg.update_every or steps
        values: dict[str, list[float]] = {}
        device = self.setup.device
        for n, ((xt, yt), (xv, yv)) in enumerate(zip(train, val)):
            if n >= steps:
                break
            if self.E is None or self.step % update_every == 0:
                self.regenerate(epoch, lr)
            for group in self.opt_e.param_groups:
                group["lr"] = lr
            parts = self.search_step(xt.to(device), yt.to(device), xv.to(device), yv.to(device))
            for key, value in parts.items():
                values.setdefault(key, []).append(value)
            info = f"L_S {parts['loss_S_train']:.3f} L_E {parts['loss_E_train']:.3f}"
            if "expected_latency_ms" in parts:
                info += f" E[lat] {parts['expected_latency_ms']:.2f} ms coef {self.latency_control.coefficient:.3g}"
            bar.update(task, advance=1, info=info)
        return running_means(values)

    # ---------------------------------------------------------------- epochs, log, checkpoint
    def epoch_record(self, epoch: int, phase: str, lr: float, means: dict[str, float], seconds: float) -> dict[str, Any]:
        from nasdeploy.latency.predictor import predict_latency_ms

        space = self.setup.space
        genotype = self.genotype("retraining")
        weights_n, weights_r = self.S.mixing_weights()
        record = {"epoch": epoch, "phase": phase, "lr": lr, "delta": self.latency_control.coefficient, **means,
                  "genotype": space.arch_to_json(genotype),
                  "genotype_E": space.arch_to_json(self.genotype_E) if self.genotype_E is not None else None}
        if self.setup.table is not None:
            with torch.no_grad():
                record["expected_latency_ms"] = float(self.penalty())
            record["predicted_latency_ms"] = predict_latency_ms(self.setup.table, genotype, space, self.setup.deploy_template)
        if phase == "search" and self.E is not None:
            record["acc_E_val"] = self.evaluation_accuracy()
        record["alpha_normal"] = [[round(float(v), 5) for v in row] for row in weights_n.detach().cpu()]
        record["alpha_reduce"] = [[round(float(v), 5) for v in row] for row in weights_r.detach().cpu()]
        record["seconds"] = seconds
        return record

    @torch.no_grad()
    def evaluation_accuracy(self, limit: int = 256) -> float:
        """E's accuracy (eval mode) on the first ``limit`` images of the val half.

        E has trained for a few dozen steps only, so its running batch-norm statistics are still far from the
        data's; a copy of E gets them re-estimated (cumulative average) on the first ``limit`` *train* images
        first. No randomness and E itself is untouched, so a resumed search logs the same value.
        """
        net = copy.deepcopy(self.E)
        with cumulative_statistics([bn for bn in batchnorms([net]) if bn.track_running_stats]):
            net.train()
            xt = self.setup.train_set.tensors[0][:limit].to(self.setup.device)
            for i in range(0, len(xt), 128):
                net(xt[i : i + 128])
        net.eval()
        x, y = (t[:limit].to(self.setup.device) for t in self.setup.val_set.tensors)
        correct = sum(int((net(x[i : i + 128]).argmax(dim=1) == y[i : i + 128]).sum()) for i in range(0, len(y), 128))
        return correct / max(len(y), 1)

    def checkpoint(self):
        """This run's checkpoint: the shared helper, bound to the context's settings plus this phase's masks."""
        masks = [None if m is None else m.int().tolist() for m in self.masks]
        return self.setup.ctx.checkpoint(self.checkpoint_path, masks=masks, total_epochs=self.total_epochs)

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "step": self.step,
            "S": self.S.state_dict(), "opt_w": self.opt_w.state_dict(), "opt_a": self.opt_a.state_dict(),
            "E": self.E.state_dict() if self.E is not None else None,
            "opt_e": self.opt_e.state_dict() if self.opt_e is not None else None,
            "genotype_E": self.setup.space.arch_to_json(self.genotype_E) if self.genotype_E is not None else None,
            "latency_control": self.latency_control.state_dict(), "log": self.log, "seconds": self.seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        space = self.setup.space
        self.epoch, self.step, self.log, self.seconds = state["epoch"], state["step"], state["log"], state["seconds"]
        self.S.load_state_dict(state["S"])
        self.opt_w.load_state_dict(state["opt_w"])
        self.opt_a.load_state_dict(state["opt_a"])
        self.latency_control.load_state_dict(state["latency_control"])
        if state["genotype_E"] is not None:
            self.genotype_E = space.arch_from_json(state["genotype_E"])
            self.E = space.build(self.genotype_E, self.setup.eval_template).to(self.setup.device)
            self.E.load_state_dict(state["E"])
            self.opt_e = torch.optim.SGD(self.E.parameters(), lr=self.cfg.w_lr, momentum=self.cfg.w_momentum,
                                         weight_decay=self.cfg.w_weight_decay)
            self.opt_e.load_state_dict(state["opt_e"])

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def run(self, resume: bool) -> "ICDARTSRun":
        """Epochs from the checkpoint (if resuming) to the end; checkpoint + log after each."""
        if resume:
            self.load_state_dict(self.checkpoint().load())
            log.info("%s: resuming at epoch %d of %d", self.label, self.epoch, self.total_epochs)
        pretrain = self.cfg.pretrain_epochs
        with progress_bar() as bar:
            epochs_task = bar.add_task(f"{self.label} epochs", total=self.total_epochs, completed=self.epoch, info="")
            while self.epoch < self.total_epochs:
                epoch, started, coefficient = self.epoch, time.perf_counter(), self.latency_control.coefficient
                seed_everything(mix_seed(self.setup.seed, epoch))
                lr = self.lr_at(epoch)
                for group in self.opt_w.param_groups:
                    group["lr"] = lr
                phase = "pretrain" if epoch < pretrain else "search"
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
                self.log.append(record)
                self.epoch += 1
                self.checkpoint().save(self.state_dict())
                atomic_write_json(self.out_dir / "search_log.json", {"label": self.label, "epochs": self.log})
                summary = f"L_S {record.get('loss_S_train', float('nan')):.3f}"
                if "predicted_latency_ms" in record:
                    summary += f" pred {record['predicted_latency_ms']:.2f} ms coef {record.get('delta_next', record['delta']):.3g}"
                bar.update(epochs_task, advance=1, info=summary)
                log.info("%s epoch %d/%d (%s): %s", self.label, epoch + 1, self.total_epochs, phase, summary)
        return self

    def edge_set_scores(self) -> list[dict[str, float]]:
        """Algorithm 2's α score of each op in each edge set (node): its largest mixing weight on the node's edges."""
        scores = []
        for weights in self.S.mixing_weights():
            for edges in node_edge_ranges(self.setup.search_template.nodes):
                block = weights[edges.start : edges.stop].detach().max(dim=0).values
                scores.append({op: float(block[o]) for o, op in enumerate(self.setup.op_names)})
        return scores


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
