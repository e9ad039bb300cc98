"""PIRL-style contrastive learning with a memory bank, as CSNAS scores architectures (Nguyen & Chang, §III-B).

Pure maths on tensors, so tests can check them on hand-made values:

* ``nce_loss``: Eq. 1 (``ℓ``, cosine similarity over temperature τ, in-batch negatives) and Eq. 2
  (``L_NCE = -log ℓ(a, b) - Σ_{n ∈ X'} log(1 - ℓ(b, n))``), batched with an ownership mask so that an
  item's own views are never its negatives;
* ``csnas_loss``: Eq. 3, ``L_θ = λ L_NCE(r_x, z^t) + (1 - λ) L_NCE(r_x, z)`` with the memory-bank anchor r_x;
* ``MemoryBank``: r_x, the exponential moving average of each sample's (L2-normalised) embedding z;
* ``ProjectionHead``: the MLPs g (one image's features) and l (the M views' features concatenated) to p = 128.

Which representation meets the negatives. Under Eq. 3 the anchor ``a`` is the memory-bank entry r_x and ``b`` the
representation being learned (z^t or z). As in PIRL's L_NCE (its h(m_I, g(v_I^t)) for the positive pair and
h(g(v_I^t), f(v_I')) for each negative), the negatives are compared with ``b``: Eq. 1's denominator sums
``exp(s(b, n)/τ)`` over X', and ``ℓ(b, n)`` is Eq. 1 with ``n`` in the place of the positive and the same X'
(so the sum over X' also contains ``n``; ``ℓ(b, n) < 1`` and ``log(1 - ℓ)`` stay finite). Substituting r_x for
the first argument everywhere instead (negatives compared with the fixed bank entry) made the training loss of
our candidates fall for about 15 steps and then climb back above its start (measured, digits, cpu preset), so
the score depended on where training stopped. Everything is computed in log space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cosine_logits(anchors: torch.Tensor, others: torch.Tensor, tau: float) -> torch.Tensor:
    """s(u, v) / τ for every anchor row against every row of ``others``: [A, O] (Eq. 1's exponent)."""
    return F.normalize(anchors, dim=-1) @ F.normalize(others, dim=-1).T / tau


def nce_loss(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, negative_owner: torch.Tensor,
             tau: float) -> torch.Tensor:
    """Eq. 2 per anchor: ``-log ℓ(a_i, b_i) - Σ_{n ∈ X'_i} log(1 - ℓ(b_i, n))``, shape [B].

    ``anchors``, ``positives``: [B, p]; ``negatives``: [Q, p], the pool of in-batch views; ``negative_owner``: [Q],
    the batch index each negative comes from. X'_i is every row of the pool not owned by item i (§III-B: the other
    M(K - 1) augmented samples of the mini-batch).
    """
    s_pos = (F.normalize(anchors, dim=-1) * F.normalize(positives, dim=-1)).sum(-1) / tau  # [B]
    s_neg = cosine_logits(positives, negatives, tau)  # [B, Q]: the learned representation against X'_i
    own = negative_owner.view(1, -1) == torch.arange(len(anchors), device=anchors.device).view(-1, 1)
    s_neg = s_neg.masked_fill(own, float("-inf"))
    lse_neg = torch.logsumexp(s_neg, dim=-1)  # log Σ_{n ∈ X'} exp(s(b, n)/τ)
    log_l_pos = s_pos - torch.logaddexp(s_pos, lse_neg)  # Eq. 1: log ℓ(a, b)
    # Eq. 1 with n as the "positive": 1 - ℓ(b, n) = Σ / (exp(s(b, n)/τ) + Σ)
    log_one_minus = lse_neg.unsqueeze(1) - torch.logaddexp(s_neg, lse_neg.unsqueeze(1))
    log_one_minus = log_one_minus.masked_fill(own, 0.0)
    return -log_l_pos - log_one_minus.sum(-1)  # Eq. 2


def csnas_loss(bank_anchors: torch.Tensor, z_views: torch.Tensor, z_image: torch.Tensor, negatives: torch.Tensor,
               negative_owner: torch.Tensor, tau: float = 0.07, lam: float = 0.5) -> torch.Tensor:
    """Eq. 3 per item: ``λ L_NCE(r_x, z^t) + (1 - λ) L_NCE(r_x, z)``, shape [B] (mean it for a batch loss)."""
    views_term = nce_loss(bank_anchors, z_views, negatives, negative_owner, tau)
    image_term = nce_loss(bank_anchors, z_image, negatives, negative_owner, tau)
    return lam * views_term + (1.0 - lam) * image_term


class MemoryBank:
    """r_x for every sample of the search set: an exponential moving average of its normalised embedding z.

    ``update``: ``r ← m·r + (1 - m)·ẑ`` (PIRL's memory bank, m = 0.5 there); a sample seen for the first time
    starts at ``ẑ`` (``anchors(..., first=z)``), so the anchor of its first step is its current embedding.
    """

    def __init__(self, size: int, dim: int, momentum: float = 0.5, device: torch.device | str = "cpu"):
        self.momentum = momentum
        self.values = torch.zeros(size, dim, device=device)
        self.filled = torch.zeros(size, dtype=torch.bool, device=device)

    def anchors(self, index: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
        """r_x of ``index`` (no gradient); unseen entries are first set to ``normalise(first)``."""
        if first is not None:
            new = ~self.filled[index]
            if new.any():
                self.values[index[new]] = F.normalize(first.detach()[new], dim=-1)
                self.filled[index[new]] = True
        return self.values[index].clone()

    def update(self, index: torch.Tensor, z: torch.Tensor) -> None:
        z = F.normalize(z.detach(), dim=-1)
        old = torch.where(self.filled[index].unsqueeze(1), self.values[index], z)
        self.values[index] = self.momentum * old + (1.0 - self.momentum) * z
        self.filled[index] = True

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"values": self.values, "filled": self.filled}


class ProjectionHead(nn.Sequential):
    """An MLP projection to p dimensions (§III-B's g and l): Linear - ReLU - Linear."""

    def __init__(self, c_in: int, dim: int = 128, hidden: int | None = None):
        hidden = hidden or c_in
        super().__init__(nn.Linear(c_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
