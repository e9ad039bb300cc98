"""Barlow Twins (Zbontar et al. 2021), the self-supervised loss of SS PCP-DARTS (Deevi et al. 2024, §III-D).

Two distorted views of each image go through the same network and a projector; their outputs z^A, z^B
([batch, n]) are normalised along the batch (zero mean, unit variance per dimension, as Zbontar et al.'s
``BatchNorm1d(affine=False)``), and the cross-correlation matrix is

    C_ij = Σ_b z^A_{b,i} z^B_{b,j} / (sqrt(Σ_b (z^A_{b,i})²) · sqrt(Σ_b (z^B_{b,j})²))      (§III-D)

which, for batch-normalised outputs (Σ_b z² = N), is z^Aᵀ z^B / N. The loss is

    L_BT = Σ_i (1 − C_ii)²  +  λ · Σ_i Σ_{j≠i} C_ij²                                        (§III-D)

(invariance term + redundancy-reduction term), λ = 5·10⁻³ in Zbontar et al. (§2, "trade-off parameter").
Pure functions, so tests can call them on hand-made tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

LAMBDA_ZBONTAR = 5e-3  # Zbontar et al. 2021, §2 / Appendix: λ = 5·10⁻³
NORM_EPS = 1e-5  # BatchNorm1d's default eps


def batch_normalise(z: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """Each dimension of ``z`` ([batch, n]) to zero mean and unit (biased) variance over the batch."""
    centred = z - z.mean(dim=0, keepdim=True)
    return centred / torch.sqrt(centred.pow(2).mean(dim=0, keepdim=True) + eps)


def cross_correlation(z_a: torch.Tensor, z_b: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """C ([n, n]) of §III-D between two batches of outputs, each batch-normalised first."""
    n = z_a.shape[0]
    return batch_normalise(z_a, eps).T @ batch_normalise(z_b, eps) / n


@dataclass
class BarlowTwinsTerms:
    loss: torch.Tensor
    invariance: torch.Tensor  # Σ_i (1 − C_ii)²
    redundancy: torch.Tensor  # Σ_i Σ_{j≠i} C_ij² (before λ)


def barlow_twins_terms(z_a: torch.Tensor, z_b: torch.Tensor, lam: float = LAMBDA_ZBONTAR,
                       eps: float = NORM_EPS) -> BarlowTwinsTerms:
    """L_BT of §III-D and its two terms."""
    c = cross_correlation(z_a, z_b, eps)
    diagonal = torch.diagonal(c)
    invariance = (1.0 - diagonal).pow(2).sum()  # invariance term
    redundancy = c.pow(2).sum() - diagonal.pow(2).sum()  # Σ_{i≠j} C_ij²
    return BarlowTwinsTerms(invariance + lam * redundancy, invariance, redundancy)


def barlow_twins_loss(z_a: torch.Tensor, z_b: torch.Tensor, lam: float = LAMBDA_ZBONTAR, eps: float = NORM_EPS) -> torch.Tensor:
    return barlow_twins_terms(z_a, z_b, lam, eps).loss


class Projector(nn.Sequential):
    """Zbontar et al.'s projector at any width: (Linear → BN → ReLU) × (layers − 1), then a Linear."""

    def __init__(self, c_in: int, dim: int, layers: int = 3):
        blocks: list[nn.Module] = []
        width = c_in
        for _ in range(max(layers - 1, 0)):
            blocks += [nn.Linear(width, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True)]
            width = dim
        blocks.append(nn.Linear(width, dim, bias=False))
        super().__init__(*blocks)


__all__ = ["LAMBDA_ZBONTAR", "Projector", "barlow_twins_loss", "barlow_twins_terms", "batch_normalise", "cross_correlation"]
