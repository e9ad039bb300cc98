"""Seeds derived from a run's seed: one stream per (seed, epoch, purpose), so a resumed run draws what an uninterrupted
one would (search, retraining, under torchrun one stream per rank)."""

from __future__ import annotations

import random

import numpy as np
import torch


def mix_seed(*parts: int) -> int:
    """A deterministic 31-bit seed from integers (seed, epoch, purpose...)."""
    x = 0x9E3779B1
    for p in parts:
        x = (x * 1_000_003 + int(p) + 0x7F4A7C15) & 0xFFFFFFFFFFFF
        x ^= x >> 17
    return x & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
