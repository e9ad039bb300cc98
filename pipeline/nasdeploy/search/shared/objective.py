"""The three ICDARTS objectives (Eq. 3.9, 3.10/4.1, 3.11) and the soft-target distillation term (Eq. 3.7-3.8).

Gradient routing, which the tests check:

* α (Eq. 3.9 + δ·P): ``L_val^S + λ·L_val^{S,E} + δ·P(α)``. E's logits are computed without gradient, so w_E
  gets nothing. Eq. 4.1 writes δ·P(α) into w_S's objective, but ∂P/∂w_S = 0 there: the penalty would never
  act. For it to act it must reach α, so the α objective carries δ·P(α) (its gradient goes to α only).
* w_S (Eq. 3.10 / 4.1): ``L_train^S + λ·L_train^{S,E} + δ·P(α)``, with P detached (its value is logged as
  part of Eq. 4.1; it adds no gradient) and E's logits detached. Only w_S's optimiser steps on it.
* w_E (Eq. 3.11): ``L_train^E`` alone; it never sees S's loss or the distillation term.

The heads (``spaces.heads``): every cross-entropy L^S, L^E is CE(logits) + ``aux_weight``·CE(aux) when the
network has a head (the DARTS tower's logits, or §3.1.1's combined output), the retraining loss too; the
distillation term (Eq. 3.7-3.8) compares the networks' final outputs f^S, f^E (``final_output``: §3.1.1's
combined output with ``aux_head=cdarts``, else the classifier's logits).

How the latency term is weighted (``search.shared.latency_control.LatencyController``; the search log records its rule
as ``delta_rule``, the weight per epoch as ``delta`` / ``delta_next`` and per α step in ``latency_steps``):
``--set delta=X`` fixes Eq. 4.1's δ·P(α); with ``--latency-budget`` and no δ, α's loss gets λ·P(α)/P(α_0)
with λ updated after every α step by dual ascent on the discretised genotype's predicted latency; without a
budget there is no latency term. A final genotype still over the budget is forced under it by
``budget.fit_to_budget`` (last resort, counted in the metrics). ``ICDARTSRun.search_step`` adds the term to ``alpha_objective``'s loss itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nasdeploy.spaces.heads import final_output


def soft_target_loss(search_logits: torch.Tensor, eval_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 3.7-3.8: T²/N Σ p log(p/q), p = softmax(f^E/T) (detached), q = softmax(f^S/T)."""
    p = torch.softmax(eval_logits.detach() / temperature, dim=1)  # Eq. 3.8, p(w_E, ᾱ)
    log_q = torch.log_softmax(search_logits / temperature, dim=1)  # Eq. 3.8, q(w_S, α)
    return temperature**2 * F.kl_div(log_q, p, reduction="batchmean")  # Eq. 3.7


def split_outputs(out) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, auxiliary logits or None) from a network that may return a tuple in train mode."""
    if isinstance(out, (tuple, list)):
        return out[0], (out[1] if len(out) > 1 else None)
    return out, None


def classification_loss(out, y: torch.Tensor, aux_weight: float) -> torch.Tensor:
    """L^S or L^E: CE of the logits + ``aux_weight``·CE of the head's output (tower or §3.1.1's combined output)."""
    logits, aux = split_outputs(out)
    loss = F.cross_entropy(logits, y)
    if aux is not None and aux_weight > 0:
        loss = loss + aux_weight * F.cross_entropy(aux, y)
    return loss


@dataclass
class Objective:
    loss: torch.Tensor
    parts: dict[str, float]
    logits: torch.Tensor
    final: torch.Tensor | None = None  # the network's final output (§3.1.1), what Eq. 3.7-3.8 compares


def alpha_objective(
    search_net: nn.Module,
    eval_net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    distill_lambda: float,
    temperature: float,
    delta: float,
    penalty: Callable[[], torch.Tensor] | None,
    aux_weight: float = 0.0,
) -> Objective:
    """Eq. 3.9 plus δ·P(α): minimised over α on a *val* batch."""
    out_s = search_net(x)
    with torch.no_grad():
        final_e = final_output(eval_net(x))
    loss_s = classification_loss(out_s, y, aux_weight)  # L_val^S
    loss_se = soft_target_loss(final_output(out_s), final_e, temperature)  # L_val^{S,E}
    loss = loss_s + distill_lambda * loss_se  # Eq. 3.9
    parts = {"loss_S_val": float(loss_s.detach()), "loss_SE_val": float(loss_se.detach())}
    if penalty is not None and delta > 0:
        expected = penalty()
        loss = loss + delta * expected  # δ·P(α): the penalty acts through α (module docstring)
        parts["expected_latency_ms"] = float(expected.detach())
    return Objective(loss, parts, split_outputs(out_s)[0])


def search_weight_objective(
    search_net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eval_output: torch.Tensor,
    distill_lambda: float,
    temperature: float,
    delta: float,
    penalty_value: float = 0.0,
    aux_weight: float = 0.0,
) -> Objective:
    """Eq. 3.10 / 4.1: minimised over w_S on a *train* batch; E's final output and P enter as constants."""
    out_s = search_net(x)
    loss_s = classification_loss(out_s, y, aux_weight)  # L_train^S
    loss_se = soft_target_loss(final_output(out_s), eval_output, temperature)  # L_train^{S,E}
    loss = loss_s + distill_lambda * loss_se + delta * float(penalty_value)  # Eq. 4.1 (∂P/∂w_S = 0)
    parts = {"loss_S_train": float(loss_s.detach()), "loss_SE_train": float(loss_se.detach())}
    return Objective(loss, parts, split_outputs(out_s)[0])


def evaluation_objective(eval_net: nn.Module, x: torch.Tensor, y: torch.Tensor, aux_weight: float) -> Objective:
    """Eq. 3.11: L_train^E for w_E only, with E's head weighted as in the retraining loss (``spaces.heads``)."""
    out_e = eval_net(x)
    loss = classification_loss(out_e, y, aux_weight)  # L_train^E
    return Objective(loss, {"loss_E_train": float(loss.detach())}, split_outputs(out_e)[0], final_output(out_e))


def pretrain_objective(search_net: nn.Module, x: torch.Tensor, y: torch.Tensor, aux_weight: float = 0.0) -> Objective:
    """Eq. 3.4: pre-training of w_S with α fixed (with S's heads when it has them)."""
    out_s = search_net(x)
    loss = classification_loss(out_s, y, aux_weight)
    return Objective(loss, {"loss_S_train": float(loss.detach())}, split_outputs(out_s)[0])


# ---------------------------------------------------------------- epoch means (ICDARTS, PCP-DARTS logs)
def running_means(values: dict[str, list[float]]) -> dict[str, float]:
    return {key: float(np.mean(v)) for key, v in values.items() if v}


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == y).float().mean())
