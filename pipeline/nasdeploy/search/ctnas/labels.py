"""Algorithm 1 step 1: M architectures scored by a uniform-sampling weight-sharing supernet (appendix B).

The supernet is SE-NAS's single-path one-shot supernet (``search.shared.space_adapters.make_adapter`` /
``search.shared.supernet``), never shrunk or expanded: every step trains one path drawn uniformly (SPOS, [17]) on the
context's ``train`` half, SGD with a cosine-annealed rate. The M labelled architectures are drawn uniformly
from the architectures within the budgets (rejection sampling; the CTNAS controller never proposes others,
so comparisons outside the budget teach the NAC nothing it uses) before training, and after each of the last
``label_epochs`` epochs each is evaluated on the ``val`` half (batch-norm statistics re-estimated on a few
training batches first, as SPOS does); its label is the mean of those accuracies (appendix B: last 10 epochs).
Training paths are drawn the same way. ``supernet_input_size`` resizes the images the supernet sees (cpu preset: the
digits at their native 8x8); the deployment template and its costs are unchanged. The phase checkpoints after every epoch.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from nasdeploy.search.ctnas.choices import ChoiceSequence
from nasdeploy.search.shared.evolution import derive_rng
from nasdeploy.search.shared.supernet import path_accuracy, sgd_step

log = logging.getLogger(__name__)

MAX_TRIES = 200  # uniform draws over Ω before one masked draw (counted) stands in


@dataclass
class Draws:
    """How architectures within the budgets were drawn: uniform over Ω and rejected, or masked as a fallback."""

    accepted: int = 0
    rejected: int = 0
    masked_fallbacks: int = 0

    def to_json(self) -> dict[str, int]:
        return {"accepted": self.accepted, "rejected": self.rejected, "masked_fallbacks": self.masked_fallbacks}


def draw_within_budget(seq: ChoiceSequence, rng: random.Random, draws: Draws, max_tries: int = MAX_TRIES) -> list[int]:
    """Uniform over the architectures within the budgets: uniform over Ω, rejected while over a budget."""
    for _ in range(max_tries):
        decisions = seq.sample_uniform(rng, masked=False)
        if seq.within(decisions):
            draws.accepted += 1
            return decisions
        draws.rejected += 1
    draws.masked_fallbacks += 1  # a tight budget: a masked uniform draw (within budget by construction)
    return seq.sample_uniform(rng, masked=True)


@dataclass
class LabelState:
    """The supernet phase's state (checkpointed after every epoch)."""

    archs: list[list[int]]  # decisions of the M labelled architectures
    epochs_done: int = 0
    accuracies: list[list[float]] = field(default_factory=list)  # per labelled epoch, one per architecture
    losses: list[float] = field(default_factory=list)
    labelled_draws: dict[str, int] = field(default_factory=dict)  # how the M architectures were drawn
    training_draws: dict[str, int] = field(default_factory=dict)  # how the supernet's training paths were drawn
    seconds: float = 0.0

    def labels(self) -> list[float]:
        """Appendix B: the mean validation accuracy over the labelled (last) epochs."""
        return [sum(epoch[i] for epoch in self.accuracies) / len(self.accuracies) for i in range(len(self.archs))]


def sample_labelled(seq: ChoiceSequence, count: int, seed: int) -> tuple[list[list[int]], Draws]:
    """``count`` distinct architectures within the budgets (fewer when the space holds fewer)."""
    rng, draws, seen, archs = derive_rng(seed, "ctnas-labelled"), Draws(), set(), []
    for _ in range(count * 20):
        if len(archs) == count:
            break
        decisions = draw_within_budget(seq, rng, draws)
        path = seq.to_path(decisions)
        if path not in seen:
            seen.add(path)
            archs.append(decisions)
    return archs, draws


def resized(dataset: TensorDataset, size: int | None) -> TensorDataset:
    """The images at ``size`` x ``size`` (bilinear, antialiased), labels unchanged; None or the same size: as is."""
    images, targets = dataset.tensors
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return dataset
    return TensorDataset(F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True), targets)


class SupernetLabels:
    """Trains the supernet and labels ``state.archs``; ``run`` resumes from ``state.epochs_done``."""

    def __init__(self, ctx, config, adapter, seq: ChoiceSequence, save: Callable[[LabelState, Any, dict], None]):
        from nasdeploy.search.shared.supernet import fixed_batches

        self.ctx, self.config, self.adapter, self.seq, self.save = ctx, config, adapter, seq, save
        self.device = ctx.device
        torch.manual_seed(ctx.seed)
        self.supernet = adapter.build_supernet().to(self.device)
        self.buffers: dict[str, torch.Tensor] = {}
        self.train = resized(ctx.data.train, config.supernet_input_size)
        self.val_batches = fixed_batches(resized(ctx.data.val, config.supernet_input_size), 256, config.val_samples, ctx.seed, self.device)
        self.bn_batches = fixed_batches(self.train, config.supernet_batch_size,
                                        config.bn_batches * config.supernet_batch_size, ctx.seed + 1, self.device)

    def steps(self) -> int:
        steps = len(self.train) // self.config.supernet_batch_size
        return max(1, steps if self.config.steps_per_epoch is None else min(steps, self.config.steps_per_epoch))

    def train_epoch(self, state: LabelState, bar, task) -> float:
        from nasdeploy.train.data import make_loader

        config, epoch = self.config, state.epochs_done
        rng = derive_rng(self.ctx.seed, "ctnas-supernet", epoch)
        draws = Draws(**state.training_draws)
        loader = make_loader(self.train, config.supernet_batch_size, shuffle=True,
                             seed=int(rng.getrandbits(62)), drop_last=len(self.train) >= config.supernet_batch_size)
        steps, total = self.steps(), self.steps() * config.supernet_epochs
        self.supernet.train()
        losses = []
        for step, (x, y) in enumerate(loader):
            if step >= steps:
                break
            path = self.seq.to_path(draw_within_budget(self.seq, rng, draws))  # SPOS: one uniform path per step
            self.supernet.prepare(path, self.device)
            named = dict(self.supernet.named_parameters())
            loss = F.cross_entropy(self.supernet(x.to(self.device), path), y.to(self.device))
            loss.backward()
            if config.supernet_grad_clip:
                torch.nn.utils.clip_grad_norm_([p for p in named.values() if p.grad is not None], config.supernet_grad_clip)
            lr = 0.5 * config.supernet_lr * (1 + math.cos(math.pi * (epoch * steps + step) / total))  # cosine
            sgd_step(named, self.buffers, lr, config.supernet_momentum, config.supernet_weight_decay)
            losses.append(loss.item())
            bar.update(task, advance=1, info=f"epoch {epoch + 1} loss {loss.item():.3f}")
        state.training_draws = draws.to_json()
        return sum(losses) / max(len(losses), 1)

    def evaluate_all(self, state: LabelState) -> list[float]:
        accuracies = []
        for decisions in state.archs:
            path = self.seq.to_path(decisions)
            self.supernet.prepare(path, self.device)
            accuracies.append(path_accuracy(self.supernet, path, self.val_batches, self.bn_batches))
        return accuracies

    def state_dict(self) -> dict:
        return {"supernet": self.supernet.state_dict(), "buffers": self.buffers}

    def load_state_dict(self, saved: dict) -> None:
        self.supernet.load_state_dict(saved["supernet"])
        self.buffers = {k: v.to(self.device) for k, v in saved["buffers"].items()}

    def run(self, state: LabelState, bar, task) -> LabelState:
        import time

        config = self.config
        first_labelled = config.supernet_epochs - config.label_epochs
        while state.epochs_done < config.supernet_epochs:
            started = time.monotonic()
            loss = self.train_epoch(state, bar, task)
            state.losses.append(loss)
            if state.epochs_done >= first_labelled:
                accuracies = self.evaluate_all(state)
                state.accuracies.append(accuracies)
                log.info("supernet epoch %d/%d: loss %.4f, mean accuracy of the %d labelled architectures %.3f",
                         state.epochs_done + 1, config.supernet_epochs, loss, len(accuracies), sum(accuracies) / len(accuracies))
            state.epochs_done += 1
            state.seconds += time.monotonic() - started
            self.save(state, self, {})
        return state
