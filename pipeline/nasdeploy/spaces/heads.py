"""The training-only heads of DARTS-space networks, chosen by the template's ``aux_head``.

* ``cdarts`` — Herron 2023 §3.1.1: "both networks include an auxiliary head structure, which combines the output
  of the final normal cell with that of both reduction cells to get the network's final output (Yu and Peng,
  2020)". As in CDARTS (Yu et al. 2020, whose code ICDARTS builds on): a distillation head (ReLU, 6x6 average pool
  of stride 2, 1x1 conv to 128, BN, ReLU, 2x2 conv to 768, BN, ReLU, global pool, linear) on the output of each
  reduction cell, and the final output is the equal-weight mean of the two heads' logits and the classifier's
  (CDARTS' fixed ensemble weights, softmax(0.333·1) = 1/3 each). ``ReductionHeads``.
* ``darts`` — DARTS' auxiliary tower on the second reduction cell (``spaces.darts.AuxiliaryHead``).
* ``none`` — no head.

How the losses read them (one rule for S, E and retraining, so E's loss in the search is the retraining loss,
§3.2): a network with heads returns, in training mode only, ``(logits, aux)`` — the tower's logits, or for
``cdarts`` a ``CombinedOutput(logits, combined)``. Cross-entropy losses are CE(logits) + aux_weight·CE(aux)
(``search.shared.objective``, ``train.trainer.training_loss``); the distillation term of Eq. 3.7-3.8 compares the
networks' final outputs, ``final_output``: the combined output with ``cdarts``, the logits otherwise (the DARTS
tower is not part of the output). In eval mode every network returns the main path's logits only, so an export
holds no head.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn

AUX_HEADS = ("cdarts", "darts", "none")


class CombinedOutput(NamedTuple):
    """Training-mode output of a network with §3.1.1's heads: the classifier's logits and the combined output."""

    logits: torch.Tensor
    combined: torch.Tensor


def final_output(out) -> torch.Tensor:
    """The network's final output (§3.1.1): the combined heads' with ``cdarts``, else the logits (tower ignored)."""
    if isinstance(out, CombinedOutput):
        return out.combined
    return out[0] if isinstance(out, (tuple, list)) else out


class DistillHead(nn.Module):
    """CDARTS' distillation head on a reduction cell's output; below 8x8 the first pool adapts to 2x2."""

    def __init__(self, c_in: int, num_classes: int, size: int):
        super().__init__()
        pool = nn.AvgPool2d(6, stride=2, padding=0, count_include_pad=False) if size >= 8 else nn.AdaptiveAvgPool2d(2)
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            pool,
            nn.Conv2d(c_in, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=False),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class ReductionHeads(nn.Module):
    """§3.1.1: one ``DistillHead`` per reduction cell; the final output is the mean of their logits and the classifier's.

    ``layouts``: every cell's ``CellLayout``; ``indices``: the reduction cells (``template.reduction_indices``).
    """

    def __init__(self, layouts: Sequence, indices: Sequence[int], num_classes: int):
        super().__init__()
        self.indices = sorted({i for i in indices if i < len(layouts)})
        self.heads = nn.ModuleList(DistillHead(layouts[i].c_out, num_classes, layouts[i].out_h) for i in self.indices)

    def forward(self, logits: torch.Tensor, taps: dict[int, torch.Tensor]) -> CombinedOutput:
        """``taps[i]``: the output of reduction cell i; the mean of every head's logits and ``logits`` (§3.1.1)."""
        outputs = [head(taps[i]) for i, head in zip(self.indices, self.heads)] + [logits]
        return CombinedOutput(logits, torch.stack(outputs).mean(dim=0))


def reduction_heads(template, layouts: Sequence) -> ReductionHeads | None:
    """The ``cdarts`` heads when the template asks for them (``auxiliary`` on and ``aux_head == "cdarts"``)."""
    if getattr(template, "auxiliary", False) and getattr(template, "aux_head", "darts") == "cdarts":
        return ReductionHeads(layouts, template.reduction_indices, template.num_classes)
    return None


def wants_darts_tower(template) -> bool:
    return bool(getattr(template, "auxiliary", False)) and getattr(template, "aux_head", "darts") == "darts"
