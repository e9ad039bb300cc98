"""How the CTNAS controller sees a space: a sequence of decisions, and the budget mask over each decision.

A space registers a ``ChoiceSequence`` factory in ``CHOICES`` (keyed by space name, like SE-NAS's adapters):

* ``mobilenet`` (``LayerChoices``): one decision per searchable layer, over the layer's choices.
* ``darts`` (``CellChoices``): per cell (normal, then reduction) and per intermediate node, ENAS-style, the
  pair of inputs, then the op on the first input edge, then the op on the second.

Decisions map onto the SE-NAS supernet's ``Path`` (``to_path``), so labels, costs and the final genotype all go
through the one supernet adapter (``search.shared.space_adapters``).

**Budgets by masking.** Costs are the adapter's additive per-(layer, choice) tables (latency: the LUT
predictor's own additive model, so a path's sum equals ``predict_latency_ms``; FLOPs: exact per-module counts).
Before each decision every option is masked whose cost, plus everything already decided, plus the *cheapest
completion* of the remaining decisions exceeds a budget. The cheapest completion is always available, so a
masked sample never runs out of options and every sampled architecture is within every budget. (The caller
still checks each sample with the predictor and would redraw one over the budget, counting it.)
"""

from __future__ import annotations

import itertools
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Sequence

from nasdeploy.registry import Registry
from nasdeploy.search.shared.paths import LayerCosts, Path

EPS = 1e-9


@dataclass
class Limit:
    """One budget over an additive cost table (``fixed + Σ per_layer[layer][choice]``)."""

    name: str  # "latency_ms" | "flops"
    costs: LayerCosts
    budget: float


class ChoiceSequence(ABC):
    """Decisions ``0..num_steps-1``; ``options(t, decisions)`` are the labels of step ``t`` given earlier decisions."""

    limits: list[Limit]

    @property
    @abstractmethod
    def step_sizes(self) -> list[int]: ...

    @abstractmethod
    def option_layers(self, t: int, decisions: Sequence[int], option: int) -> list[tuple[int, str]]:
        """The (layer, choice) pairs option ``option`` of step ``t`` puts on the path (costs are read off them)."""

    @abstractmethod
    def floor_after(self, limit: Limit, t: int, decisions: Sequence[int], option: int) -> float:
        """The cheapest cost of every decision after step ``t`` when step ``t`` takes ``option``."""

    @abstractmethod
    def to_path(self, decisions: Sequence[int]) -> Path: ...

    @abstractmethod
    def _suffix_minima(self, limit: Limit) -> list[float]:
        """Entry k: the cheapest cost of the decisions from the k-th independent block on."""

    @property
    def num_steps(self) -> int:
        return len(self.step_sizes)

    # ------------------------------------------------------------------ costs and masks
    def option_cost(self, limit: Limit, t: int, decisions: Sequence[int], option: int) -> float:
        return sum(limit.costs.per_layer[layer][choice] for layer, choice in self.option_layers(t, decisions, option))

    def committed(self, limit: Limit, decisions: Sequence[int]) -> float:
        return limit.costs.fixed + sum(self.option_cost(limit, t, decisions[:t], d) for t, d in enumerate(decisions))

    def mask(self, t: int, decisions: Sequence[int], committed: Sequence[float] | None = None) -> list[bool]:
        """Options of step ``t`` that leave a completion within every budget (True = allowed)."""
        if committed is None:
            committed = [self.committed(limit, decisions) for limit in self.limits]
        allowed = []
        for option in range(self.step_sizes[t]):
            ok = all(spent + self.option_cost(limit, t, decisions, option) + self.floor_after(limit, t, decisions, option)
                     <= limit.budget + EPS * max(1.0, abs(limit.budget)) for limit, spent in zip(self.limits, committed))
            allowed.append(ok)
        return allowed

    def cheapest(self, limit: Limit) -> float:
        """The smallest cost any architecture of the sequence has (fixed parts + the cheapest completion)."""
        suffix = self.suffix[limit.name] if limit in self.limits else self._suffix_minima(limit)
        return limit.costs.fixed + suffix[0]

    def cost(self, limit: Limit, decisions: Sequence[int]) -> float:
        return self.committed(limit, decisions)

    def within(self, decisions: Sequence[int]) -> bool:
        return all(self.committed(limit, decisions) <= limit.budget + EPS * max(1.0, abs(limit.budget)) for limit in self.limits)

    def sample_uniform(self, rng: random.Random, masked: bool) -> list[int]:
        """A uniform draw per decision (unmasked: uniform over the whole space Ω), masked by the budgets or not."""
        decisions: list[int] = []
        for t in range(self.num_steps):
            allowed = self.mask(t, decisions) if masked else [True] * self.step_sizes[t]
            decisions.append(rng.choice([o for o, ok in enumerate(allowed) if ok]))
        return decisions


# ---------------------------------------------------------------------------------- MobileNet: one decision per layer
class LayerChoices(ChoiceSequence):
    def __init__(self, candidates: Sequence[Sequence[str]], limits: list[Limit]):
        self.candidates = [list(c) for c in candidates]
        self.limits = limits
        self.suffix = {limit.name: self._suffix_minima(limit) for limit in limits}

    def _suffix_minima(self, limit: Limit) -> list[float]:
        out = [0.0] * (len(self.candidates) + 1)
        for layer in reversed(range(len(self.candidates))):
            out[layer] = out[layer + 1] + min(limit.costs.per_layer[layer][c] for c in self.candidates[layer])
        return out

    @property
    def step_sizes(self) -> list[int]:
        return [len(c) for c in self.candidates]

    def option_layers(self, t, decisions, option):
        return [(t, self.candidates[t][option])]

    def floor_after(self, limit, t, decisions, option):
        return self.suffix[limit.name][t + 1]

    def to_path(self, decisions):
        return Path(tuple(self.candidates[t][d] for t, d in enumerate(decisions)))


# ---------------------------------------------------------------------------------- DARTS: inputs, op, op per node
class CellChoices(ChoiceSequence):
    """Per (cell, node): step 0 picks the input pair, step 1 the op of the lower input, step 2 of the higher."""

    def __init__(self, paths, limits: list[Limit]):
        from nasdeploy.spaces.darts import candidate_inputs

        self.paths = paths  # shared.paths.EdgewisePaths
        self.nodes = paths.nodes
        self.ops = list(paths.candidates[0])
        self.limits = limits
        self.pairs = [list(itertools.combinations(candidate_inputs(j), 2)) for j in range(self.nodes)]
        self.slots = [(cell, node) for cell in range(2) for node in range(self.nodes)]
        self.suffix = {limit.name: self._suffix_minima(limit) for limit in limits}

    def edge_min(self, limit: Limit, cell: int, node: int, i: int) -> float:
        layer = self.paths.edge(cell, node, i)
        return min(limit.costs.per_layer[layer][op] for op in self.paths.candidates[layer])

    def _suffix_minima(self, limit: Limit) -> list[float]:
        out = [0.0] * (len(self.slots) + 1)
        for s in reversed(range(len(self.slots))):
            cell, node = self.slots[s]
            out[s] = out[s + 1] + min(self.edge_min(limit, cell, node, a) + self.edge_min(limit, cell, node, b)
                                      for a, b in self.pairs[node])
        return out

    @property
    def step_sizes(self) -> list[int]:
        return [size for _, node in self.slots for size in (len(self.pairs[node]), len(self.ops), len(self.ops))]

    def _pair(self, t: int, decisions: Sequence[int]) -> tuple[int, int]:
        s = t // 3
        return self.pairs[self.slots[s][1]][decisions[3 * s]]

    def option_layers(self, t, decisions, option):
        s, kind = divmod(t, 3)
        if kind == 0:
            return []
        cell, node = self.slots[s]
        return [(self.paths.edge(cell, node, self._pair(t, decisions)[kind - 1]), self.ops[option])]

    def floor_after(self, limit, t, decisions, option):
        s, kind = divmod(t, 3)
        cell, node = self.slots[s]
        rest = self.suffix[limit.name][s + 1]
        if kind == 0:
            a, b = self.pairs[node][option]
            return rest + self.edge_min(limit, cell, node, a) + self.edge_min(limit, cell, node, b)
        if kind == 1:
            return rest + self.edge_min(limit, cell, node, self._pair(t, decisions)[1])
        return rest

    def to_path(self, decisions):
        choices = [self.ops[0]] * self.paths.num_layers  # edges off the path keep a fixed (unused) choice
        inputs: list[int] = []
        for s, (cell, node) in enumerate(self.slots):
            pair = self.pairs[node][decisions[3 * s]]
            inputs += list(pair)
            for slot, i in enumerate(pair):
                choices[self.paths.edge(cell, node, i)] = self.ops[decisions[3 * s + 1 + slot]]
        return Path(tuple(choices), tuple(inputs))


SequenceFactory = Callable[..., ChoiceSequence]  # (adapter, limits) -> ChoiceSequence
CHOICES: Registry[SequenceFactory] = Registry("CTNAS choice sequence")


@CHOICES.register("mobilenet")
def mobilenet_choices(adapter, limits: list[Limit]) -> ChoiceSequence:
    return LayerChoices(adapter.paths.candidates, limits)


@CHOICES.register("darts")
def darts_choices(adapter, limits: list[Limit]) -> ChoiceSequence:
    return CellChoices(adapter.paths, limits)
