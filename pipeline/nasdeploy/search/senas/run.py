"""SE-NAS' run (Hu et al. 2021, Algorithm 1): the supernet trained stage by stage, scored, shrunk and expanded, then
the evolutionary search; checkpointed per epoch, stage and generation. The strategy and its settings: ``search.senas``."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nasdeploy.errors import NasDeployError
from nasdeploy.progress import progress_bar
from nasdeploy.search.context import SearchContext, SearchOutcome
from nasdeploy.search.senas.config import SenasConfig
from nasdeploy.search.senas.evolve import EvolutionPhase
from nasdeploy.search.senas.schedule import StageSchedule, snapshot_steps
from nasdeploy.search.senas.shrinking import ShrinkAndExpand
from nasdeploy.search.senas.state import SearchState
from nasdeploy.search.shared.evolution import derive_rng
from nasdeploy.search.shared.paths import Budget, Path, PathCosts, check_budget, sample_feasible
from nasdeploy.search.shared.space_adapters import SpaceAdapter, make_adapter, search_template_for
from nasdeploy.search.shared.supernet import SnapshotAverage, fixed_batches, follow_params, sgd_step

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- data


@dataclass
class SearchData:
    train: Any  # Dataset (half of the training split)
    val_batches: list[tuple[torch.Tensor, torch.Tensor]]
    bn_batches: list[tuple[torch.Tensor, torch.Tensor]]
    info: Any


def search_data(ctx: SearchContext, config: SenasConfig) -> SearchData:
    """The context's split (``val_fraction`` held out, §4.1): the supernet trains on the rest; Eq. 4/5, shrinking
    and the evolutionary fitness read the held-out images."""
    data = ctx.data
    val = fixed_batches(data.val, 256, config.val_samples, ctx.seed, ctx.device)
    bn = fixed_batches(data.train, config.batch_size, config.bn_batches * config.batch_size, ctx.seed + 1, ctx.device)
    return SearchData(data.train, val, bn, data.info)


# ---------------------------------------------------------------------------------------- state


class SenasRun(StageSchedule, ShrinkAndExpand, EvolutionPhase):
    """One SE-NAS search: owns the supernet, its optimiser state, the data and the checkpoint.

    Algorithm 1's loop is ``run`` / ``run_training``; the stages' epochs, learning rate and stopping rule are
    ``StageSchedule`` (``senas.schedule``), the scoring, shrinking and expanding ``ShrinkAndExpand``
    (``senas.shrinking``), the final evolutionary search ``EvolutionPhase`` (``senas.evolve``).
    """

    def __init__(self, ctx: SearchContext, config: SenasConfig):
        self.ctx, self.config = ctx, config
        self.seed = ctx.seed
        self.out_dir = ctx.out_dir
        self.device = ctx.device
        self.budget = Budget(ctx.flops_budget, ctx.latency_budget_ms)
        self.table = ctx.table
        self.space, self.deploy_template = ctx.space, ctx.template
        self.adapter: SpaceAdapter | None = None
        self.buffers: dict[str, torch.Tensor] = {}
        self.started = time.monotonic()

    # -------------------------------------------------------------- setup
    def setup(self) -> None:
        self.data = search_data(self.ctx, self.config)
        search_template = search_template_for(self.space, self.deploy_template, self.data.info.num_classes, self.data.info.channels)
        self.adapter = make_adapter(self.space.name, search_template, self.deploy_template, self.table, self.config)
        self.costs = PathCosts(self.adapter.paths, self.adapter.flops, self.adapter.latency, self.adapter.predict_latency)
        # the latency budget was pre-checked by the context (the space's cheapest network); FLOPs here
        check_budget(self.costs, self.adapter.paths.candidates, Budget(self.budget.flops, None), self.space.name)
        torch.manual_seed(self.seed)
        self.supernet = self.adapter.build_supernet().to(self.device)

    # -------------------------------------------------------------- sampling
    def sample(self, alive, rng, forced=None) -> Path | None:
        return sample_feasible(self.adapter.paths, alive, self.costs, self.budget, rng, forced, self.config.max_tries)

    # -------------------------------------------------------------- training
    def train_epoch(self, state: SearchState, snapshots: SnapshotAverage | None, bar, task) -> float:
        from nasdeploy.train.data import set_epoch

        stage, epoch = state.stage, state.epochs_done
        rng = derive_rng(self.seed, "train", stage, epoch)
        loader_seed = int(derive_rng(self.seed, "loader", stage, epoch).getrandbits(62))
        set_epoch(self.data.train, epoch)
        loader = self.ctx.loader(self.data.train, self.config.batch_size, shuffle=True, seed=loader_seed, drop_last=True)
        steps = len(loader) if self.config.steps_per_epoch is None else min(len(loader), self.config.steps_per_epoch)
        marks = snapshot_steps(steps, self.config.snapshots) if snapshots is not None else set()
        self.supernet.train()
        losses = []
        for step, (x, y) in enumerate(loader):
            if step >= steps:
                break
            path = self.sample(state.alive, rng)
            if path is None:
                raise NasDeployError("no architecture meets the FLOPs and latency budgets together; loosen one of them")
            self.supernet.prepare(path, self.device)
            named = dict(self.supernet.named_parameters())
            if self.device.type != "cpu":
                follow_params(self.buffers, named)  # §3.4: only the sampled path in device memory
            loss = F.cross_entropy(self.supernet(x.to(self.device), path), y.to(self.device))
            loss.backward()
            self.ctx.average_gradients(self.supernet.parameters())  # torchrun: the mean over the ranks
            if self.config.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for p in self.supernet.parameters() if p.grad is not None], self.config.grad_clip)
            lr = self.learning_rate(stage, epoch, step, steps)
            sgd_step(named, self.buffers, lr, self.config.momentum, self.config.weight_decay)
            losses.append(loss.item())
            if step in marks:
                snapshots.add(self.supernet)
            bar.update(task, advance=1, info=f"stage {stage} epoch {epoch + 1} loss {loss.item():.3f}")
        return sum(losses) / max(len(losses), 1)

    # -------------------------------------------------------------- checkpoint
    def checkpoint(self):
        return self.ctx.checkpoint(self.out_dir / "checkpoint.pt")

    def save(self, state: SearchState) -> None:
        state.elapsed_s += time.monotonic() - self.started
        self.started = time.monotonic()
        self.checkpoint().save({
            "search": state, "child_spaces": self.supernet.child_spaces, "materialised": self.supernet.materialised_keys(),
            "supernet": self.supernet.state_dict(), "buffers": self.buffers,
        })

    def restore(self) -> SearchState:
        saved = self.checkpoint().load()
        self.supernet.set_child_spaces(saved["child_spaces"])
        for group, key in saved["materialised"]:
            self.supernet.materialise(group, key)
        self.supernet.load_state_dict(saved["supernet"])
        self.supernet.to(self.device)
        self.buffers = {k: v.to(self.device) for k, v in saved["buffers"].items()}
        return saved["search"]

    # -------------------------------------------------------------- phases
    def run_training(self, state: SearchState) -> None:
        """Algorithm 1: train; at the end of each stage score, shrink and expand, until the stopping condition holds
        (then the last stage's training ends the loop). Checkpoint per epoch."""
        done = sum(self.stage_epochs(s) for s in range(state.stage)) + state.epochs_done
        with progress_bar() as bar:
            task = bar.add_task("supernet", total=self.planned_epochs() * self.steps_per_epoch(),
                                completed=done * self.steps_per_epoch(), info="")
            while state.phase == "train":
                n_epochs = self.stage_epochs(state.stage)
                last_epoch = state.epochs_done == n_epochs - 1
                reason = self.stop_reason(state) if last_epoch else None
                scoring = last_epoch and reason is None
                snapshots = SnapshotAverage() if scoring else None
                loss = self.train_epoch(state, snapshots, bar, task)
                log.info("stage %d epoch %d/%d: train loss %.4f", state.stage, state.epochs_done + 1, n_epochs, loss)
                if scoring:
                    self.shrink_and_expand(state, snapshots)
                state.epochs_done += 1
                if reason is not None:
                    state.phase, state.stop_reason = "evolve", reason
                    log.info("Algorithm 1 stops after stage %d: %s", state.stage, reason)
                elif state.epochs_done == n_epochs:
                    state.stage, state.epochs_done = state.stage + 1, 0
                self.save(state)

    # -------------------------------------------------------------- outputs
    def outcome(self, state: SearchState, best: Path, fitness: float) -> SearchOutcome:
        metrics = {
            "supernet_accuracy": fitness,
            "supernet_accuracy_first_stage": state.stages[0]["supernet_accuracy"] if state.stages else None,
            "supernet_accuracy_final": state.final_accuracy,
        }
        log_extra = {
            "stages": state.stages, "final_alive": state.alive, "final_child_spaces": self.supernet.child_spaces,
            "final_supernet_accuracy": state.final_accuracy,
            "evolution": state.evolution.history if state.evolution else [],
            "best": {"path": best.to_json(), "fitness": fitness},
            "stop_reason": state.stop_reason, "stages_run": state.stage + 1, "planned_stages": self.planned_stages() + 1,
            "epochs": [self.stage_epochs(s) for s in range(state.stage + 1)], "lr_schedule": self.config.lr_schedule,
            "split": {"train_images": len(self.data.train), "held_out_images": len(self.ctx.data.val),
                      "val_images_used": sum(len(y) for _, y in self.data.val_batches)},
        }
        return SearchOutcome(arch=self.adapter.to_arch(best), search_seconds=state.elapsed_s, metrics=metrics,
                             log=log_extra, extra_files=[self.checkpoint().path], title="SE-NAS searched architecture")

    def run(self) -> SearchOutcome:
        self.setup()
        fresh = SearchState(alive=[list(c) for c in self.adapter.paths.candidates])
        state = self.restore() if self.ctx.resume else fresh
        if state.phase == "train":
            self.run_training(state)
        best, fitness = self.run_evolution(state)
        state.phase = "done"
        self.save(state)
        return self.outcome(state, best, fitness)
