"""Training one candidate f_θ with the contrastive objective and scoring it (§III-B; the TPE objective).

* ``SearchImages``: the unlabelled search set. ``data_fraction`` of the training split's images (both halves of
  the shared context), drawn **by index** from a seeded RNG, never looking at a label: each item is
  ``(x, x^(1), x^(2))``, the image and the context's two augmented views of it (M = 2, §IV-A).
* ``search_input_size`` (optional): the images are resized to this side before the candidate sees them.
* ``ContrastiveCandidate``: f_θ is the candidate cell network at the search size with its classifier replaced by
  the global average pool; g projects f(x) to z, l projects [f(x^(1)); f(x^(2))] to z^t, and the in-batch
  negatives are z' = g(f(x')) for the views of the other K - 1 images (2(K - 1) per image).
* ``train_and_score``: ``epochs`` of SGD on Eq. 3 with the memory bank, then **the objective**: the mean of Eq. 3
  over every search image in one pass without weight or bank updates, with views drawn from one fixed seed
  (the same views, in the same mini-batches, for every candidate), batch-norm on batch statistics.

Randomness: weight initialisation, the epochs' shuffles and views, and the scoring views come from
``ctx.seed_everything(seed, PURPOSE, ...)`` and do not depend on the trial number, so every candidate sees the
same data (common random numbers) and a θ proposed twice would score the same on a CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from nasdeploy.search.shared.contrastive import MemoryBank, ProjectionHead, csnas_loss

SEED_SUBSET, SEED_INIT, SEED_EPOCH, SEED_SCORE = 11, 12, 13, 14


class SearchImages(Dataset):
    """``data_fraction`` of the images of the context's two halves, by index; items ``(x, x^(1), x^(2))``, no label."""

    def __init__(self, ctx, fraction: float):
        self.parts = [ctx.data.two_views("train"), ctx.data.two_views("val")]
        total = sum(len(part) for part in self.parts)
        count = max(2, min(total, round(fraction * total)))
        self.indices = sorted(ctx.rng(SEED_SUBSET).sample(range(total), count))
        self.total = total

    def __len__(self) -> int:
        return len(self.indices)

    def locate(self, k: int) -> tuple[Any, int]:
        index = self.indices[k]
        for part in self.parts:
            if index < len(part):
                return part, index
            index -= len(part)
        raise IndexError(k)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        part, index = self.locate(k)
        first, second = part[index]
        return part.images[index], first, second

    def batch(self, items: list[int]) -> tuple[torch.Tensor, ...]:
        return tuple(torch.stack(parts) for parts in zip(*(self[k] for k in items)))


class GlobalPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class ContrastiveCandidate(nn.Module):
    """f_θ with the projection heads g (image) and l (the M views concatenated), §III-B."""

    def __init__(self, network: nn.Module, projection_dim: int, views: int = 2):
        super().__init__()
        features = network.classifier.linear.in_features
        network.classifier = GlobalPool()  # f_θ: the candidate without its classifier
        self.f = network
        self.g = ProjectionHead(features, projection_dim)
        self.l = ProjectionHead(views * features, projection_dim)

    def forward(self, image: torch.Tensor, *views: torch.Tensor):
        """``z = g(f(x))``, ``z^t = l([f(x^(1)); ...])``, negatives ``z' = g(f(x^(m)))`` and their owners."""
        features = self.f(torch.cat([image, *views])).split(len(image))
        z = self.g(features[0])
        z_views = self.l(torch.cat(features[1:], dim=1))
        negatives = self.g(torch.cat(features[1:]))
        owner = torch.arange(len(image), device=image.device).repeat(len(views))
        return z, z_views, negatives, owner


@dataclass
class CandidateScore:
    contrastive_loss: float  # the TPE objective
    train_losses: list[float]  # mean Eq. 3 per training epoch
    seconds: float
    params: int


def build_candidate(ctx, genotype, search_template, config) -> ContrastiveCandidate:
    ctx.seed_everything(SEED_INIT)
    network = ctx.space.build(genotype, search_template)
    return ContrastiveCandidate(network, config.projection_dim).to(ctx.device)


def search_template_for(template, config):
    """The candidates' size while searching: the deployment template's cells at ``search_layers`` x ``search_channels``."""
    return replace(template, layers=config.search_layers, C=config.search_channels, auxiliary=False, drop_path=0.0)


def epoch_batches(count: int, batch_size: int, shuffle: bool) -> list[list[int]]:
    order = torch.randperm(count).tolist() if shuffle else list(range(count))
    return [order[i:i + batch_size] for i in range(0, count, batch_size) if len(order[i:i + batch_size]) >= 2]


def resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def batch_loss(model: ContrastiveCandidate, bank: MemoryBank, images: SearchImages, items: list[int], config, device,
               update_bank: bool) -> torch.Tensor:
    """Eq. 3 for each image of a mini-batch, anchored on its memory-bank entry r_x."""
    x, first, second = (resize(t.to(device), config.search_input_size) for t in images.batch(items))
    z, z_views, negatives, owner = model(x, first, second)
    index = torch.tensor(items, device=device)
    anchors = bank.anchors(index, first=z)
    loss = csnas_loss(anchors, z_views, z, negatives, owner, config.tau, config.lam)
    if update_bank:
        bank.update(index, z)
    return loss


def train_and_score(ctx, genotype, search_template, images: SearchImages, config) -> CandidateScore:
    """Train f_θ, g, l on Eq. 3 for ``epochs``, then return the objective (mean Eq. 3 over the search images)."""
    if config.threads is None:
        return _train_and_score(ctx, genotype, search_template, images, config)
    from nasdeploy.hardware.torch_backend import torch_threads

    with torch_threads(config.threads):
        return _train_and_score(ctx, genotype, search_template, images, config)


def _train_and_score(ctx, genotype, search_template, images: SearchImages, config) -> CandidateScore:
    started = time.perf_counter()
    device = ctx.device
    model = build_candidate(ctx, genotype, search_template, config)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    bank = MemoryBank(len(images), config.projection_dim, config.bank_momentum, device)
    model.train()
    train_losses = []
    for epoch in range(config.epochs):
        ctx.seed_everything(SEED_EPOCH, epoch)  # the same shuffle and views for every candidate
        batches = epoch_batches(len(images), config.batch_size, shuffle=True)
        if config.steps_per_epoch is not None:
            batches = batches[: config.steps_per_epoch]
        total, seen = 0.0, 0
        for items in batches:
            loss = batch_loss(model, bank, images, items, config, device, update_bank=True)
            optimizer.zero_grad(set_to_none=True)
            loss.mean().backward()
            optimizer.step()
            total, seen = total + float(loss.detach().sum()), seen + len(items)
        train_losses.append(total / max(seen, 1))
    objective = score(ctx, model, bank, images, config)
    params = sum(p.numel() for p in model.f.parameters())
    return CandidateScore(objective, train_losses, time.perf_counter() - started, params)


def score(ctx, model: ContrastiveCandidate, bank: MemoryBank, images: SearchImages, config) -> float:
    """The TPE objective: mean over all search images of Eq. 3, fixed views, no update of weights or bank."""
    ctx.seed_everything(SEED_SCORE)
    total = 0.0
    count = 0
    with torch.no_grad():
        for items in epoch_batches(len(images), config.batch_size, shuffle=False):
            loss = batch_loss(model, bank, images, items, config, ctx.device, update_bank=False)
            total, count = total + float(loss.sum()), count + len(items)
    value = total / max(count, 1)
    return value if math.isfinite(value) else float("nan")
