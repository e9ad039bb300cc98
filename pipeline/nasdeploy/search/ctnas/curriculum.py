"""Baseline updating (CTNAS Algorithm 2, Eq. 5) and data exploration (Algorithm 3, Eqs. 8-9): pure functions on
NAC outputs, so the tests can call them on hand-made matrices."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def comparison_scores(matrix: torch.Tensor) -> torch.Tensor:
    """Eq. 5: s_i = 1/(|H| - 1) Σ_{j ≠ i} NAC(α_i, α_j), from P[i, j] = NAC(α_i, α_j)."""
    n = matrix.shape[0]
    return (matrix.sum(1) - matrix.diagonal()) / max(n - 1, 1)


def update_baseline(matrix: torch.Tensor) -> int:
    """Algorithm 2: the index in H = B ∪ S of the highest s_i (steps 3-6: ``s_i ≥ ŝ`` replaces, so the last of
    equal maxima wins)."""
    scores = comparison_scores(matrix).tolist()
    best, best_score = 0, 0.0
    for i, s in enumerate(scores):
        if s >= best_score:
            best, best_score = i, s
    return best


@dataclass
class Explored:
    pairs: torch.Tensor  # [K, 2] indices into the sampled set S (or whatever indexed the probabilities)
    labels: torch.Tensor  # [K], y' = 1{p ≥ 0.5} (Eq. 8)
    confidence: torch.Tensor  # [K], f = |p - 0.5| (Eq. 9)


def explore(pairs: torch.Tensor, probabilities: torch.Tensor, k: int) -> Explored:
    """Algorithm 3: label each pair by the NAC (Eq. 8), score its confidence (Eq. 9), keep the top-K."""
    labels = (probabilities >= 0.5).long()
    confidence = (probabilities - 0.5).abs()
    k = min(k, len(confidence))
    order = torch.argsort(confidence, descending=True, stable=True)[:k]
    return Explored(pairs[order], labels[order], confidence[order])


def sample_pairs(count: int, pairs_wanted: int, generator: torch.Generator) -> torch.Tensor:
    """``pairs_wanted`` distinct ordered pairs (i, j), i ≠ j, of ``count`` items (all of them when fewer exist)."""
    total = count * (count - 1)
    chosen = torch.randperm(total, generator=generator)[: min(pairs_wanted, total)]
    first = chosen // (count - 1)
    second = chosen % (count - 1)
    second = second + (second >= first).long()  # skip the diagonal
    return torch.stack([first, second], dim=1)
