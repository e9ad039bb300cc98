"""One PCP-DARTS search: progressive phases of a partial-channel, edge-normalised supernet, checkpointed per epoch.

Per phase (``progressive.phase_plan``) a fresh ``SearchNetwork`` (weights, α and β re-initialised, as P-DARTS
builds a new network per stage) with ``partial_channels = K``, random channel sampling and edge normalisation,
its mixed ops restricted to the ops the previous phase kept (``progressive.drop_ops``). Per step, first-order
(§IV-A.2), on the context's *train* and *val* sets (``val_split``: §III-B's training / test split, or the training
split's two halves):

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
import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from nasdeploy.errors import NasDeployError
from nasdeploy.io import atomic_write_json
from nasdeploy.progress import progress_bar
from nasdeploy.search.context import SearchContext
from nasdeploy.search.pcpdarts.config import PCPDARTSConfig
from nasdeploy.search.pcpdarts.progressive import Phase, drop_ops, end_of_search, phase_plan
from nasdeploy.search.pcpdarts.records import PCPRecords
from nasdeploy.search.pcpdarts.steps import PCPSteps
from nasdeploy.search.shared.barlow_twins import Projector
from nasdeploy.search.shared.darts_supernet import SearchNetwork
from nasdeploy.search.shared.latency_control import ControllerConfig, LatencyController

log = logging.getLogger(__name__)


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
class PCPSearch(PCPSteps, PCPRecords):
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
