"""SE-NAS' run (Hu et al. 2021, Algorithm 1): the supernet trained stage by stage, scored, shrunk and expanded, then
the evolutionary search; checkpointed per epoch, stage and generation. The strategy and its settings: ``search.senas``."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nasdeploy.errors import NasDeployError
from nasdeploy.progress import progress_bar
from nasdeploy.search.context import SearchContext, SearchOutcome
from nasdeploy.search.senas.config import SenasConfig
from nasdeploy.search.senas.scores import merge_child_spaces, operator_scores, selection_importance, shrink, space_size
from nasdeploy.search.shared.evolution import EvolutionConfig, EvolutionState, derive_rng, evolutionary_search
from nasdeploy.search.shared.paths import Budget, Path, PathCosts, check_budget, sample_feasible
from nasdeploy.search.shared.space_adapters import SpaceAdapter, make_adapter, search_template_for
from nasdeploy.search.shared.supernet import (SnapshotAverage, Supernet, fixed_batches, follow_params, path_accuracy,
                                              sgd_step)

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


@dataclass
class SearchState:
    """Everything a resumed search needs besides the weights."""

    stage: int = 0
    epochs_done: int = 0  # in the current stage
    phase: str = "train"  # "train" | "evolve" | "done"
    alive: list[list[str]] = dataclasses.field(default_factory=list)
    stages: list[dict] = dataclasses.field(default_factory=list)
    evolution: EvolutionState | None = None
    final_accuracy: float | None = None
    elapsed_s: float = 0.0
    stop_reason: str | None = None  # why Algorithm 1's loop ended


class SenasRun:
    """One SE-NAS search: owns the supernet, its optimiser state, the data and the checkpoint."""

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

    def keep_for_budget(self, current: list[list[str]], operator: tuple[int, str]) -> bool:
        """True when removing ``operator`` would leave no architecture within the budgets."""
        layer, op = operator
        trial = [list(ops) for ops in current]
        trial[layer].remove(op)
        return not self.costs.budget_reachable(trial, self.budget)

    # -------------------------------------------------------------- training
    def stage_epochs(self, stage: int) -> int:
        if stage == 0:
            return self.config.epochs or self.adapter.first_stage_epochs
        return self.config.stage_epochs

    def planned_stages(self) -> int:
        """Shrink stages planned: the setting, or the most Algorithm 1's rule can take (⌈removable operators / k⌉)."""
        if self.config.shrink_stages is not None:
            return self.config.shrink_stages
        removable = sum(len(ops) - 1 for ops in self.adapter.paths.candidates)
        return math.ceil(removable / self.config.shrink_k) if self.config.shrink_k else 0

    def planned_epochs(self) -> int:
        return sum(self.stage_epochs(s) for s in range(self.planned_stages() + 1))

    def learning_rate(self, stage: int, epoch: int, step: int, steps: int) -> float:
        """§4.3: lr_e = lr · (1 − e/T), e the iteration, T the total: of the planned search ('run') or of the stage."""
        if self.config.lr_schedule == "stage":
            return linear_lr(self.config.lr, epoch * steps + step, self.stage_epochs(stage) * steps)
        before = sum(self.stage_epochs(s) for s in range(stage))
        return linear_lr(self.config.lr, (before + epoch) * steps + step, self.planned_epochs() * steps)

    def stop_reason(self, state: SearchState) -> str | None:
        """Algorithm 1's stopping condition, checked at the end of each stage's training (None: shrink again)."""
        if self.config.shrink_stages is not None:
            done = state.stage >= self.config.shrink_stages
            return f"shrink_stages = {self.config.shrink_stages} stages done" if done else None
        return paper_stop_reason(state.alive, self.config.merge_threshold, state.stages, self.config.shrink_k)

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

    # -------------------------------------------------------------- scoring, shrinking, expanding
    def evaluate(self, supernet: Supernet, path: Path) -> float:
        supernet.prepare(path, self.device)
        return path_accuracy(supernet, path, self.data.val_batches, self.data.bn_batches)

    def score_pool(self, supernet: Supernet, state: SearchState) -> tuple[list[Path], list[float]]:
        """Feasible paths until every alive operator is on ``score_samples`` of them (Eq. 5 sample)."""
        rng = derive_rng(self.seed, "score", state.stage)
        pool: list[Path] = []
        accuracies: list[float] = []
        cache: dict[Path, float] = {}
        counts: dict[tuple[int, str], int] = {}
        for layer, ops in enumerate(state.alive):
            if len(ops) < 2:
                continue
            for op in ops:
                while counts.get((layer, op), 0) < self.config.score_samples:
                    path = self.sample(state.alive, rng, forced=(layer, op))
                    if path is None:
                        break  # no feasible path contains this operator: SI = 0
                    if path not in cache:
                        cache[path] = self.evaluate(supernet, path)
                    pool.append(path)
                    accuracies.append(cache[path])
                    for i, c in enumerate(self.adapter.paths.scored(path)):
                        if c is not None:
                            counts[(i, c)] = counts.get((i, c), 0) + 1
        return pool, accuracies

    def shrink_and_expand(self, state: SearchState, snapshots: SnapshotAverage) -> None:
        averaged = snapshots.averaged(self.supernet)  # Eq. 4
        pool, accuracies = self.score_pool(averaged, state)
        del averaged
        si = selection_importance([self.adapter.paths.scored(p) for p in pool], accuracies, state.alive)  # Eq. 5
        scores = operator_scores(si, state.alive)  # Eq. 6-7
        size_before = space_size(state.alive)
        alive, removed = shrink(state.alive, scores.s, self.config.shrink_k, keep=self.keep_for_budget)
        groups = merge_child_spaces([len(ops) for ops in alive], self.config.merge_threshold, self.supernet.child_spaces)
        self.supernet.set_child_spaces(groups)
        self.supernet.drop_removed(alive)
        names = dict(self.supernet.named_parameters())
        self.buffers = {k: v for k, v in self.buffers.items() if k in names}
        state.alive = alive
        entry = {
            "stage": state.stage,
            "supernet_accuracy": sum(accuracies) / max(len(accuracies), 1),
            "paths_evaluated": len(set(pool)),
            "scores": scores.to_json(),
            "removed": [{"layer": layer, "op": op} for layer, op in removed],
            "child_spaces": groups,
            "space_size_before": size_before,
            "space_size_after": space_size(alive),
            "alive": alive,
        }
        state.stages.append(entry)
        log.info("stage %d: supernet accuracy %.3f, removed %s, child spaces %s", state.stage,
                 entry["supernet_accuracy"], [f"{l}:{o}" for l, o in removed], groups)

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
    def steps_per_epoch(self) -> int:
        steps = len(self.data.train) // self.config.batch_size
        return steps if self.config.steps_per_epoch is None else min(steps, self.config.steps_per_epoch)

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

    def final_accuracy(self, state: SearchState) -> float:
        rng = derive_rng(self.seed, "final")
        paths = [p for p in (self.sample(state.alive, rng) for _ in range(self.config.final_samples)) if p is not None]
        return sum(self.evaluate(self.supernet, p) for p in paths) / max(len(paths), 1)

    def run_evolution(self, state: SearchState) -> tuple[Path, float]:
        if state.final_accuracy is None:
            state.final_accuracy = self.final_accuracy(state)
            self.save(state)
        config = EvolutionConfig(self.config.population, self.config.generations, self.config.mutation_prob, self.config.max_tries)
        operators = AliveOperators(self, state.alive)
        with progress_bar() as bar:
            task = bar.add_task("evolution", total=config.generations + 1, completed=(state.evolution or EvolutionState()).generation, info="")

            def on_generation(evo: EvolutionState) -> None:
                state.evolution = evo
                self.save(state)
                bar.update(task, advance=1, info=f"best {evo.history[-1]['best_fitness']:.3f}")

            best, fitness, evo = evolutionary_search(
                operators, lambda p: self.evaluate(self.supernet, p), lambda p: self.costs.feasible(p, self.budget),
                config, self.seed, state.evolution, on_generation,
            )
        state.evolution = evo
        return best, fitness

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


def linear_lr(lr: float, iteration: int, total: int) -> float:
    """§4.3: lr · (1 − e/T) for iteration e of T (never below 0)."""
    return lr * max(0.0, 1.0 - iteration / total)


def paper_stop_reason(alive: list[list[str]], threshold: int, stages: list[dict], k: int) -> str | None:
    """Algorithm 1's "stopping conditions": shrinking ends when the whole space has at most T architectures (one
    merged child space: no weight sharing is left, §3.4), when every layer is down to one operator (§3.3 keeps
    one per layer), when k = 0, or when the last stage could remove nothing (every candidate protected by the
    budget). None: shrink again."""
    if space_size(alive) <= threshold:
        return f"the whole space has {space_size(alive)} <= T = {threshold} architectures (one partial-model space, §3.4)"
    if all(len(ops) == 1 for ops in alive):
        return "every layer has one operator left"
    if k == 0:
        return "shrink_k = 0: nothing to remove"
    if stages and not stages[-1]["removed"]:
        return "the last stage could remove no operator (the others are needed to meet the budget)"
    return None


def snapshot_steps(steps: int, k: int) -> set[int]:
    """K evenly spaced mini-batch indices of an epoch of ``steps`` batches, the last one included."""
    k = min(k, steps)
    return {steps - 1 - (i * steps) // k for i in range(k)}


class AliveOperators:
    """Evolution operators over the current (shrunk) space, with budget-respecting random samples."""

    def __init__(self, run: SenasRun, alive: list[list[str]]):
        self.run, self.alive, self.paths = run, alive, run.adapter.paths

    def sample(self, rng):
        return self.run.sample(self.alive, rng)

    def mutate(self, path, rng, prob):
        return self.paths.mutate(path, self.alive, rng, prob)

    def crossover(self, a, b, rng):
        return self.paths.crossover(a, b, rng)
