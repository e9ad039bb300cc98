"""One PCP-DARTS search: progressive phases of a partial-channel, edge-normalised supernet, checkpointed per epoch.

Per phase (``progressive.phase_plan``) a fresh ``SearchNetwork`` (weights, α and β re-initialised, as P-DARTS
builds a new network per stage) with ``partial_channels = K``, random channel sampling and edge normalisation,
its mixed ops restricted to the ops the previous phase kept (``progressive.drop_ops``). Per step, on the two
halves of the training split (first-order DARTS, §IV-A.2):

* α and β (epochs ≥ ``frozen_epochs``), on a *val* batch: L_CE, or ssf·L_BT + (1 − ssf)·L_CE for SS PCP-DARTS
  (§IV-B; ``alpha_objective``), plus the latency controller's λ·P(α, β)/P(α_0, β_0) with a budget (Algorithm 3
  with the edge weights folded in, ``latency.predictor.expected_latency_darts``; the same
  ``search.shared.latency_control.LatencyController`` as ICDARTS, observed after every α step on the genotype the end
  of search would give now);
* the weights w, on a *train* batch: L_CE only (§IV-B.2), skip-connect dropout at the phase's decayed rate.

The Barlow Twins projector is not part of the searched network: the paper does not say how it is trained; here
it learns on the same L_BT α minimises (its own SGD with w's settings), so w never sees L_BT.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nasdeploy.errors import NasDeployError
from nasdeploy.io import atomic_write_json
from nasdeploy.progress import progress_bar
from nasdeploy.search.shared.barlow_twins import Projector, barlow_twins_terms
from nasdeploy.search.context import SearchContext, mix_seed
from nasdeploy.search.shared.darts_supernet import SearchNetwork
from nasdeploy.search.shared.objective import accuracy, running_means
from nasdeploy.search.shared.objective import Objective
from nasdeploy.search.shared.latency_control import ControllerConfig, LatencyController
from nasdeploy.search.pcpdarts.config import PCPDARTSConfig
from nasdeploy.search.pcpdarts.progressive import Phase, drop_ops, end_of_search, phase_plan, skip_dropout_rate

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ the α objective
def alpha_objective(net: SearchNetwork, x: torch.Tensor, y: torch.Tensor, ssf: float, projector=None,
                    views: tuple[torch.Tensor, torch.Tensor] | None = None, bt_lambda: float = 5e-3) -> Objective:
    """§IV-B.1: L_CE (vanilla), or ssf·L_BT + (1 − ssf)·L_CE on the two views (SS PCP-DARTS).

    The cross-entropy forward runs first, so the random channel choices it draws are the same as a plain
    cross-entropy step's; at ssf = 0 the Barlow Twins forward is skipped and α's gradient is exactly L_CE's.
    The two views go through the network in one batch: both twins see the same random channel choice, i.e. they
    are one network, as Barlow Twins' "two identical networks" (§III-D); it also saves a forward pass.
    """
    logits = net(x)
    ce = F.cross_entropy(logits, y)
    parts = {"loss_CE_val": float(ce.detach())}
    if ssf == 0.0:
        return Objective(ce, parts, logits)
    z_a, z_b = projector(net.features(torch.cat(views))).chunk(2)
    bt = barlow_twins_terms(z_a, z_b, bt_lambda)
    parts.update({"loss_BT_val": float(bt.loss.detach()), "bt_invariance": float(bt.invariance.detach()),
                  "bt_redundancy": float(bt.redundancy.detach())})
    return Objective(ssf * bt.loss + (1.0 - ssf) * ce, parts, logits)


# ------------------------------------------------------------------------------------------ setup
@dataclass
class PCPSetup:
    ctx: SearchContext
    config: PCPDARTSConfig
    op_names: list[str]
    zero: Any  # discretize.ZeroConfig
    phases: list[Phase]

    def search_template(self, phase: Phase):
        return replace(self.ctx.template, layers=phase.layers, C=self.config.search_channels, auxiliary=False, drop_path=0.0)


def pcp_setup(ctx: SearchContext, config: PCPDARTSConfig) -> PCPSetup:
    from nasdeploy.search.shared.discretize import candidate_ops

    op_names, zero = candidate_ops(ctx.template, config)
    keep = [n for n in config.keep_ops if n > len(op_names)]
    if keep:
        raise NasDeployError(f"keep_ops {config.keep_ops} keeps more ops than the {len(op_names)} candidates "
                             f"({', '.join(op_names)}); pass smaller --set keep_ops=[...]")
    return PCPSetup(ctx, config, op_names, zero, phase_plan(config.phase_layers, config.keep_ops, config.skip_dropout))


# ------------------------------------------------------------------------------------------ the search
class PCPSearch:
    """All phases; ``phase``/``epoch`` say where it stands (a checkpoint at every epoch boundary)."""

    def __init__(self, setup: PCPSetup):
        self.setup, self.cfg, self.ctx = setup, setup.config, setup.ctx
        self.ssf = float(self.cfg.self_supervised_factor)
        full = torch.ones(len(self.nodes_rows()), len(setup.op_names), dtype=torch.bool)
        self.masks = (full.clone(), full.clone())
        self.phase, self.epoch, self.step, self.seconds = 0, 0, 0, 0.0
        self.log: list[dict[str, Any]] = []
        self.phase_history: list[dict[str, Any]] = []
        self.views = self.ctx.data.two_views("val") if self.ssf > 0 else None
        self.build_phase()
        control = ControllerConfig.from_settings(self.cfg)
        p0 = 1.0
        if self.ctx.table is not None:
            with torch.no_grad():
                p0 = float(self.penalty())  # P(α_0, β_0): the Lagrangian surrogate's normaliser
        budget = self.ctx.latency_budget_ms if self.ctx.table is not None else None
        self.latency_control = LatencyController(budget, None, p0, control)

    def nodes_rows(self) -> range:
        from nasdeploy.spaces.darts import num_edges

        return range(num_edges(self.ctx.template.nodes))

    # ---------------------------------------------------------------- one phase's networks
    def build_phase(self) -> None:
        """A fresh supernet for ``self.phase`` (weights, α, β, projector and optimisers re-initialised)."""
        cfg, phase = self.cfg, self.setup.phases[self.phase]
        self.ctx.seed_everything(0x9C9, self.phase)
        self.S = SearchNetwork(self.setup.search_template(phase), self.setup.op_names, "darts", self.masks,
                               partial_channels=cfg.partial_channels, edge_normalisation=True,
                               random_channels=True).to(self.ctx.device)
        self.opt_w = torch.optim.SGD(self.S.weight_parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum,
                                     weight_decay=cfg.w_weight_decay)
        self.opt_a = torch.optim.Adam(self.S.arch_parameters(), lr=cfg.alpha_lr, betas=(cfg.alpha_beta1, cfg.alpha_beta2),
                                      weight_decay=cfg.alpha_weight_decay)
        self.projector = self.opt_p = None
        if self.ssf > 0:
            c_last = self.S.classifier.linear.in_features
            self.projector = Projector(c_last, cfg.projector_dim, cfg.projector_layers).to(self.ctx.device)
            self.opt_p = torch.optim.SGD(self.projector.parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum,
                                         weight_decay=cfg.w_weight_decay)

    @property
    def last_phase(self) -> bool:
        return self.phase == len(self.setup.phases) - 1

    # ---------------------------------------------------------------- latency and the genotype
    def edge_weights(self):
        return self.S.edge_weights()

    def penalty(self) -> torch.Tensor:
        """P(α, β): Algorithm 3 on the deployment template, edge weights folded into its w (``node_pair_weights``)."""
        from nasdeploy.latency.predictor import expected_latency_darts

        alpha_n, alpha_r = self.S.masked_alphas()
        return expected_latency_darts(alpha_n, alpha_r, self.setup.op_names, self.ctx.template, self.ctx.table,
                                      rule="darts", edge_weights=self.edge_weights())

    def end_of_search(self, stage: str = "retraining"):
        return end_of_search((self.S.alpha_normal, self.S.alpha_reduce), self.edge_weights(), self.masks,
                             self.setup.op_names, self.ctx.template.nodes, self.setup.zero, self.cfg.max_skips, stage)

    def genotype(self):
        return self.end_of_search().genotype

    # ---------------------------------------------------------------- steps
    def lr_at(self, epoch: int) -> float:
        """Cosine annealing of the weights' rate over each phase (§IV-A, P-DARTS per stage)."""
        cfg = self.cfg
        return cfg.w_lr_min + 0.5 * (cfg.w_lr - cfg.w_lr_min) * (1 + math.cos(math.pi * epoch / cfg.epochs_per_phase))

    def loaders(self):
        from nasdeploy.train.data import make_loader

        bs, data = self.cfg.batch_size, self.ctx.data
        train = make_loader(data.train, bs, shuffle=True, seed=mix_seed(self.ctx.seed, self.phase, self.epoch, 1), drop_last=True)
        val = make_loader(data.val, bs, shuffle=True, seed=mix_seed(self.ctx.seed, self.phase, self.epoch, 2), drop_last=True)
        if len(train) == 0 or len(val) == 0:
            raise NasDeployError(f"batch size {bs} is larger than half the training set ({len(data.train)}); "
                                 "pass a smaller --set batch_size=")
        return train, val

    def two_views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two distorted views of each image of the batch (the shared context's crop/flip/jitter/grayscale)."""
        a = torch.stack([self.views.view(image) for image in x.cpu()])
        b = torch.stack([self.views.view(image) for image in x.cpu()])
        return a.to(self.ctx.device), b.to(self.ctx.device)

    def alpha_step(self, xv: torch.Tensor, yv: torch.Tensor) -> dict[str, float]:
        """α, β ← §IV-B.1's loss + the controller's latency term, on a val batch; then the dual update."""
        control, table = self.latency_control, self.ctx.table
        self.opt_a.zero_grad(set_to_none=True)
        if self.opt_p is not None:
            self.opt_p.zero_grad(set_to_none=True)
        views = self.two_views(xv) if self.ssf > 0 else None
        obj = alpha_objective(self.S, xv, yv, self.ssf, self.projector, views, getattr(self.cfg, "bt_lambda", 0.0))
        loss = obj.loss
        if table is not None and control.mode != "off":
            expected = self.penalty()
            loss = loss + control.penalty(expected)
            obj.parts["expected_latency_ms"] = float(expected.detach())
        loss.backward()
        self.opt_a.step()
        if self.opt_p is not None:
            self.opt_p.step()
        self.opt_w.zero_grad(set_to_none=True)  # the α loss's gradient on w is not used (first order, w on L_CE)
        if table is not None:
            control.observe(self.ctx.predict_latency_ms(self.genotype()))
        return {**obj.parts, "acc_S_val": accuracy(obj.logits, yv)}

    def weight_step(self, xt: torch.Tensor, yt: torch.Tensor) -> dict[str, float]:
        """w ← L_CE on a train batch (§IV-B.2)."""
        self.opt_w.zero_grad(set_to_none=True)
        logits = self.S(xt)
        loss = F.cross_entropy(logits, yt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.S.weight_parameters(), self.cfg.w_grad_clip)
        self.opt_w.step()
        self.step += 1
        return {"loss_CE_train": float(loss.detach()), "acc_S_train": accuracy(logits, yt)}

    def run_epoch(self, bar, task) -> dict[str, float]:
        cfg, device = self.cfg, self.ctx.device
        phase = self.setup.phases[self.phase]
        train_arch = self.epoch >= cfg.frozen_epochs
        self.S.set_skip_dropout(skip_dropout_rate(phase.skip_dropout, self.epoch, cfg.epochs_per_phase,
                                                  cfg.frozen_epochs, cfg.skip_dropout_decay))
        for group in self.opt_w.param_groups:
            group["lr"] = self.lr_at(self.epoch)
        train, val = self.loaders()
        steps = min(len(train), len(val), cfg.steps_per_epoch or len(train))
        values: dict[str, list[float]] = {}
        self.S.train()
        for n, ((xt, yt), (xv, yv)) in enumerate(zip(train, val)):
            if n >= steps:
                break
            parts = self.alpha_step(xv.to(device), yv.to(device)) if train_arch else {}
            parts.update(self.weight_step(xt.to(device), yt.to(device)))
            for key, value in parts.items():
                values.setdefault(key, []).append(value)
            info = f"L_CE {parts['loss_CE_train']:.3f}"
            if "loss_BT_val" in parts:
                info += f" L_BT {parts['loss_BT_val']:.2f}"
            if "expected_latency_ms" in parts:
                info += f" E[lat] {parts['expected_latency_ms']:.2f} ms λ {self.latency_control.coefficient:.3g}"
            bar.update(task, advance=1, info=info)
        return running_means(values)

    # ---------------------------------------------------------------- records, phases, checkpoint
    def epoch_record(self, means: dict[str, float], seconds: float) -> dict[str, Any]:
        genotype = self.genotype()
        weights_n, weights_r = self.S.mixing_weights()
        edges_n, edges_r = self.edge_weights()
        phase = self.setup.phases[self.phase]
        record = {"phase": self.phase, "layers": phase.layers, "epoch": self.epoch, "lr": self.lr_at(self.epoch),
                  "alpha_trained": self.epoch >= self.cfg.frozen_epochs, "skip_dropout": self.current_skip_dropout(),
                  "lambda": self.latency_control.coefficient, **means,
                  "genotype": self.ctx.space.arch_to_json(genotype), "seconds": seconds}
        if self.ctx.table is not None:
            with torch.no_grad():
                record["expected_latency_ms"] = float(self.penalty())
            record["predicted_latency_ms"] = self.ctx.predict_latency_ms(genotype)
        record["alpha_normal"] = [[round(float(v), 5) for v in row] for row in weights_n.detach().cpu()]
        record["alpha_reduce"] = [[round(float(v), 5) for v in row] for row in weights_r.detach().cpu()]
        record["beta_normal"] = [round(float(v), 5) for v in edges_n.detach().cpu()]
        record["beta_reduce"] = [round(float(v), 5) for v in edges_r.detach().cpu()]
        return record

    def current_skip_dropout(self) -> float:
        """The skip-connect dropout rate the phase's mixed ops use now."""
        from nasdeploy.search.shared.darts_supernet import MixedOp

        return next((m.skip_dropout for m in self.S.modules() if isinstance(m, MixedOp)), 0.0)

    def end_phase(self) -> None:
        """P-DARTS §3.2.2: keep each edge's strongest ops for the next, deeper phase; build it afresh."""
        phase = self.setup.phases[self.phase]
        with torch.no_grad():
            weights = self.S.mixing_weights()
        self.masks = tuple(drop_ops(w, m, phase.keep_after) for w, m in zip(weights, self.masks))
        kept = [[[op for o, op in enumerate(self.setup.op_names) if mask[row, o]] for row in range(mask.shape[0])]
                for mask in self.masks]
        self.phase_history.append({"phase": self.phase, "layers": phase.layers, "kept_normal": kept[0], "kept_reduce": kept[1]})
        log.info("phase %d done: %d ops kept per edge for phase %d", self.phase + 1, phase.keep_after, self.phase + 2)
        self.phase, self.epoch = self.phase + 1, 0
        self.build_phase()

    def checkpoint(self):
        return self.ctx.checkpoint(self.checkpoint_path)

    @property
    def checkpoint_path(self) -> Path:
        return self.ctx.out_dir / "checkpoint.pt"

    def state_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "epoch": self.epoch, "step": self.step, "seconds": self.seconds,
                "masks": [m.int().tolist() for m in self.masks], "S": self.S.state_dict(),
                "opt_w": self.opt_w.state_dict(), "opt_a": self.opt_a.state_dict(),
                "projector": self.projector.state_dict() if self.projector is not None else None,
                "opt_p": self.opt_p.state_dict() if self.opt_p is not None else None,
                "latency_control": self.latency_control.state_dict(), "log": self.log,
                "phase_history": self.phase_history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.phase, self.epoch, self.step, self.seconds = state["phase"], state["epoch"], state["step"], state["seconds"]
        self.masks = tuple(torch.tensor(m, dtype=torch.bool) for m in state["masks"])
        self.build_phase()
        self.S.load_state_dict(state["S"])
        self.opt_w.load_state_dict(state["opt_w"])
        self.opt_a.load_state_dict(state["opt_a"])
        if self.projector is not None:
            self.projector.load_state_dict(state["projector"])
            self.opt_p.load_state_dict(state["opt_p"])
        self.latency_control.load_state_dict(state["latency_control"])
        self.log, self.phase_history = state["log"], state["phase_history"]

    def total_epochs(self) -> int:
        return len(self.setup.phases) * self.cfg.epochs_per_phase

    def done(self) -> bool:
        return self.last_phase and self.epoch >= self.cfg.epochs_per_phase

    def run(self, resume: bool) -> "PCPSearch":
        if resume:
            self.load_state_dict(self.checkpoint().load())
            log.info("pcp-darts: resuming at phase %d epoch %d", self.phase + 1, self.epoch)
        per_phase = self.cfg.epochs_per_phase
        with progress_bar() as bar:
            done = self.phase * per_phase + self.epoch
            epochs_task = bar.add_task("pcp-darts epochs", total=self.total_epochs(), completed=done, info="")
            while not self.done():
                if self.epoch >= per_phase:
                    self.end_phase()
                started = time.perf_counter()
                self.ctx.seed_everything(self.phase, self.epoch)
                task = bar.add_task(f"  phase {self.phase + 1} epoch {self.epoch + 1}", total=None, info="")
                means = self.run_epoch(bar, task)
                bar.remove_task(task)
                seconds = time.perf_counter() - started
                self.seconds += seconds
                record = self.epoch_record(means, seconds)
                self.log.append(record)
                self.epoch += 1
                self.checkpoint().save(self.state_dict())
                atomic_write_json(self.ctx.out_dir / "search_log.json", {"label": "pcp-darts", "epochs": self.log})
                summary = f"L_CE {record.get('loss_CE_train', float('nan')):.3f}"
                if "predicted_latency_ms" in record:
                    summary += f" pred {record['predicted_latency_ms']:.2f} ms λ {self.latency_control.coefficient:.3g}"
                bar.update(epochs_task, advance=1, info=summary)
                log.info("phase %d/%d epoch %d/%d: %s", self.phase + 1, len(self.setup.phases), self.epoch, per_phase, summary)
        return self
