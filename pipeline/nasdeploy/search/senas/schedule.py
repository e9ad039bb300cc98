"""SE-NAS' stages (Algorithm 1, §4.3): epochs per stage, the learning rate lr·(1 − e/T) and the stopping rule,
mixed into ``SenasRun`` (``senas.run``); the snapshot steps of Eq. 4."""

from __future__ import annotations

import math

from nasdeploy.search.senas.scores import space_size
from nasdeploy.search.senas.state import SearchState


class StageSchedule:
    """Stage lengths, the planned search, the learning rate and Algorithm 1's stopping condition of a ``SenasRun``."""

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

    def steps_per_epoch(self) -> int:
        steps = len(self.data.train) // self.config.batch_size
        return steps if self.config.steps_per_epoch is None else min(steps, self.config.steps_per_epoch)

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
