"""One iteration of CTNAS' Algorithm 1, mixed into ``CTNASRun`` (``ctnas.run``): NAC steps on A ∪ D, the
controller's REINFORCE step against the baseline β, the exploration of Algorithm 3 and the baseline update of
Algorithm 2; the NAC's quality on the held-out labels."""

from __future__ import annotations

from typing import Any

import torch

from nasdeploy.search.context import mix_seed
from nasdeploy.search.ctnas import nac as nac_lib
from nasdeploy.search.ctnas.controller import Reinforce
from nasdeploy.search.ctnas.curriculum import explore, sample_pairs, update_baseline
from nasdeploy.search.ctnas.state import LoopState


class ControllerSteps:
    """NAC and controller steps, exploration and baselines of a ``CTNASRun``."""

    def nac_steps(self, nac, optimizer, bank, pairs, labels, state: LoopState, steps: int, phase: int = 1) -> float | None:
        """NAC steps on C = A ∪ D; once D is not empty, ``explored_share`` of each batch comes from D (§4.2)."""
        rng = torch.Generator().manual_seed(mix_seed(self.ctx.seed, 13, phase, state.iteration))
        loss = None
        if self.explored is None and state.explored_pairs:  # after a resume: D from the state's keys, once
            self.explored = (torch.tensor([(bank.index[a], bank.index[b]) for a, b in state.explored_pairs], dtype=torch.long),
                             torch.tensor(state.explored_labels, dtype=torch.long))
        explored, explored_y = self.explored if self.explored is not None else (None, None)
        batch = self.config.nac_batch_size
        for _ in range(steps):
            n_explored = int(round(self.config.explored_share * batch)) if explored is not None else 0
            a = torch.randint(len(pairs), (batch - n_explored,), generator=rng)
            x, y = pairs[a], labels[a]
            if n_explored:
                e = torch.randint(len(explored), (n_explored,), generator=rng)
                x, y = torch.cat([x, explored[e]]), torch.cat([y, explored_y[e]])
            loss = nac_lib.train_step(nac, optimizer, bank, x, y)
        return loss

    def iteration(self, state: LoopState, nac, nac_opt, bank, pairs, labels, reinforce: Reinforce, generator) -> str:
        config = self.config
        nac_loss = self.nac_steps(nac, nac_opt, bank, pairs, labels, state, config.nac_steps)  # step 7
        # steps 9-10: N samples, reward NAC(α_j, β) (+ entropy inside Reinforce.step)
        samples = [self.propose(reinforce.controller, generator, state, grad=True) for _ in range(config.controller_batch)]
        state.counts["controller_samples"] += len(samples)
        beta = self.register(bank, state.baseline)
        compared = torch.tensor([(self.register(bank, s.decisions), beta) for s in samples], dtype=torch.long)
        scores = nac_lib.compare(nac, bank, compared).tolist()
        step = reinforce.step(samples, scores)
        # steps 12-13: S and data exploration (Algorithm 3)
        explore_samples = [self.propose(reinforce.controller, generator, state, grad=False).decisions
                           for _ in range(config.explore_samples)]
        state.counts["explore_samples"] += len(explore_samples)
        kept = self.explore(state, nac, bank, explore_samples, generator)
        # steps 14-15
        if state.baseline not in state.baselines:
            state.baselines.append(list(state.baseline))
        state.last_samples = explore_samples
        state.iteration += 1
        if state.iteration % config.baseline_every == 0 and state.iteration < config.iterations:
            self.update_baseline(state, nac, bank)
        if state.iteration % max(1, config.iterations // 50) == 0 or state.iteration == 1:
            state.history.append({"iteration": state.iteration, "reward": round(step["reward"], 5),
                                  "nac_score_vs_baseline": round(sum(scores) / len(scores), 5),
                                  "nac_loss": None if nac_loss is None else round(nac_loss, 5), "explored_kept": kept,
                                  "explored_total": len(state.explored_pairs)})
        return f"reward {step['reward']:.3f}, |D| {len(state.explored_pairs)}, baselines {len(state.baselines)}"

    def explore(self, state: LoopState, nac, bank, samples: list[list[int]], generator) -> int:
        """Algorithm 3 on the sampled set: NAC-labelled pairs, the ``explore_keep`` most confident kept in D."""
        if self.config.explore_keep == 0:
            return 0
        indices = [self.register(bank, d) for d in samples]
        pairs = sample_pairs(len(indices), self.config.explore_pairs, generator)
        as_bank = torch.tensor([(indices[i], indices[j]) for i, j in pairs.tolist()], dtype=torch.long).reshape(-1, 2)
        distinct = as_bank[:, 0] != as_bank[:, 1]  # α_k ≠ α'_k (the policy can repeat an architecture)
        as_bank = as_bank[distinct]
        if len(as_bank) == 0:
            return 0
        found = explore(as_bank, nac_lib.compare(nac, bank, as_bank), self.config.explore_keep)
        for (a, b), y in zip(found.pairs.tolist(), found.labels.tolist()):
            state.explored_pairs.append((bank.keys[a], bank.keys[b]))
            state.explored_labels.append(int(y))
        if self.explored is None:
            self.explored = (found.pairs, found.labels)
        else:
            self.explored = (torch.cat([self.explored[0], found.pairs]), torch.cat([self.explored[1], found.labels]))
        overflow = len(state.explored_pairs) - self.config.explored_cap
        if overflow > 0:  # the oldest explored pairs leave C
            del state.explored_pairs[:overflow], state.explored_labels[:overflow]
            self.explored = (self.explored[0][overflow:], self.explored[1][overflow:])
        return len(found.labels)

    def update_baseline(self, state: LoopState, nac, bank, final: bool = False) -> list[int]:
        """Algorithm 2 over H = B ∪ S."""
        candidates: list[list[int]] = []
        for d in [*state.baselines, state.baseline, *state.last_samples]:
            if list(d) not in candidates:
                candidates.append(list(d))
        if len(candidates) == 1:
            return candidates[0]
        matrix = nac_lib.score_matrix(nac, bank, [self.register(bank, d) for d in candidates])
        pick = update_baseline(matrix)
        changed = candidates[pick] != state.baseline
        state.baseline = candidates[pick]
        state.baseline_updates.append({"iteration": state.iteration, "candidates": len(candidates), "changed": changed,
                                       "score": float((matrix[pick].sum() - matrix[pick, pick]) / (len(candidates) - 1)),
                                       "predicted_latency_ms": self.predicted.get(tuple(state.baseline)), "final": final})
        return state.baseline

    def nac_quality(self, nac, bank, items: list[int], values: list[float]) -> dict[str, Any]:
        """Held-out architectures (never in a training pair): pairwise accuracy and Kendall τ (appendix F)."""
        pairwise = nac_lib.pairwise_accuracy(nac, bank, items, values)
        tau = nac_lib.kendall_tau(nac_lib.nac_ranking_scores(nac, bank, items), values)
        return {"architectures": len(items), "pairs": pairwise["pairs"], "pairwise_accuracy": pairwise["accuracy"], "kendall_tau": tau}
