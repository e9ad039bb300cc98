"""The CTNAS controller: an LSTM policy π(α; θ) over a space's decisions, trained by REINFORCE (§3.2, Eq. 4).

ENAS-style ([37], which the paper follows): at each step the LSTM reads the embedding of the previous decision
and a per-step linear head gives logits over that step's options; options the budget mask forbids get -inf
before the softmax, so the policy only ever proposes architectures within the budgets (``choices``). The
update of Algorithm 1 step 10 is θ ← θ + η/N Σ_j ∇ log π(α_j) (R_j − b), with R_j = NAC(α_j, β) plus
``entropy_weight`` × the sample's entropy (appendix C) and b a moving average of past rewards (ENAS's variance
reduction; ``reward_decay`` 0 turns it off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

MaskFn = Callable[[int, Sequence[int]], Sequence[bool]]


@dataclass
class Sample:
    decisions: list[int]
    log_prob: torch.Tensor  # 0-d, differentiable
    entropy: torch.Tensor  # 0-d, Σ over steps of the (masked) policy's entropy
    masked_options: int  # options the budget removed along the way


class Controller(nn.Module):
    def __init__(self, step_sizes: Sequence[int], hidden: int = 64):
        super().__init__()
        self.step_sizes = list(step_sizes)
        self.offsets = [0]
        for size in self.step_sizes[:-1]:
            self.offsets.append(self.offsets[-1] + size)
        self.embedding = nn.Embedding(sum(self.step_sizes) + 1, hidden)  # + a start token
        self.lstm = nn.LSTMCell(hidden, hidden)
        self.heads = nn.ModuleList([nn.Linear(hidden, size) for size in self.step_sizes])
        self.start = sum(self.step_sizes)
        for head in self.heads:  # start near uniform, as ENAS does
            nn.init.uniform_(head.weight, -0.1, 0.1)
            nn.init.zeros_(head.bias)

    def sample(self, mask: MaskFn, generator: torch.Generator | None = None) -> Sample:
        decisions: list[int] = []
        log_prob = torch.zeros(())
        entropy = torch.zeros(())
        masked = 0
        h = c = torch.zeros(1, self.lstm.hidden_size)
        token = torch.tensor([self.start])
        for t, size in enumerate(self.step_sizes):
            h, c = self.lstm(self.embedding(token), (h, c))
            logits = self.heads[t](h).squeeze(0)
            allowed = torch.tensor(list(mask(t, decisions)), dtype=torch.bool)
            masked += int((~allowed).sum())
            logits = logits.masked_fill(~allowed, float("-inf"))
            log_p = torch.log_softmax(logits, dim=0)
            p = log_p.exp()
            choice = int(torch.multinomial(p.detach(), 1, generator=generator))
            log_prob = log_prob + log_p[choice]
            entropy = entropy - (p[allowed] * log_p[allowed]).sum()
            decisions.append(choice)
            token = torch.tensor([self.offsets[t] + choice])
        return Sample(decisions, log_prob, entropy, masked)


class Reinforce:
    """Policy-gradient steps on a ``Controller`` (Algorithm 1 step 10) with a moving-average reward baseline."""

    def __init__(self, controller: Controller, lr: float, entropy_weight: float = 5e-4, reward_decay: float = 0.95):
        self.controller = controller
        self.optimizer = torch.optim.Adam(controller.parameters(), lr=lr)
        self.entropy_weight = entropy_weight
        self.reward_decay = reward_decay
        self.baseline: float | None = None

    def step(self, samples: Sequence[Sample], scores: Sequence[float]) -> dict[str, float]:
        """``scores`` = NAC(α_j, β) per sample; returns the mean reward (with entropy) and the loss."""
        rewards = [float(s) + self.entropy_weight * float(sample.entropy.detach()) for s, sample in zip(scores, samples)]
        mean = sum(rewards) / len(rewards)
        b = self.baseline if (self.baseline is not None and self.reward_decay > 0) else 0.0
        loss = -sum((r - b) * sample.log_prob for r, sample in zip(rewards, samples)) / len(samples)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if self.reward_decay > 0:
            self.baseline = mean if self.baseline is None else self.reward_decay * self.baseline + (1 - self.reward_decay) * mean
        return {"reward": mean, "loss": float(loss.detach()), "reward_baseline": b}

    def state_dict(self) -> dict:
        return {"controller": self.controller.state_dict(), "optimizer": self.optimizer.state_dict(), "baseline": self.baseline}

    def load_state_dict(self, state: dict) -> None:
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = state["baseline"]
