"""SE-NAS operator scores (Eq. 5-7), shrinking (§3.3) and the merging rule of expanding (§3.4, Fig. 3).

Pure functions over plain Python data, so the maths can be checked on hand-made accuracies.

An *operator* is a pair ``(layer, choice)``: choice ``choice`` of searchable layer ``layer`` (a MobileNet
layer, or one DARTS edge). ``alive[layer]`` lists the choices of a layer still in the search space.

* **Selection importance** (Eq. 5): ``SI_o`` = mean of ``P(a)`` over the sampled paths ``a`` that contain
  ``o`` (``P`` from Eq. 4: accuracy with snapshot-averaged weights). An operator no sampled path
  contains gets ``SI = 0`` (it is never seen in a feasible path, so it is the first to go).
* **Selection confidence** (Eq. 6): ``SC_o`` = the *population* variance (ddof = 0) of the ``SI`` values
  of the alive operators of ``o``'s layer; every operator of a layer has the same ``SC``.
* **Score** (Eq. 7): ``S_o = normalize(SI_o) / normalize(SC_o)`` with mean normalisation
  ``normalize(x_o) = x_o / mean(x)``, the mean taken over the *pool*: the operators of layers that still
  have at least two alive choices (only those can be removed). ``SC_o = 0`` (all operators of the layer
  equally good, no confidence) gives ``S_o = +inf``: such a layer is never pruned first. If every
  layer of the pool has ``SC = 0``, ``S = normalize(SI)`` (ranking by importance alone).
  Why ``x / mean`` and not the textbook mean normalisation ``(x − mean) / (max − min)``: centred values are
  negative for half the operators, so their ratio flips sign and explodes near ``SC ≈ mean(SC)``: an
  above-average operator of a low-confidence layer gets a negative score (positive / negative) and is removed
  early — on the hand-made pool of ``tests/test_senas_maths.py`` the centred reading removes the best operator
  of the space. With ``x / mean`` the constants cancel and the ranking is that of ``SI / SC``, a well-defined
  order that removes low-importance operators of high-confidence layers first, as the paper intends.
* **Shrinking**: remove the ``k`` operators of the pool with the lowest ``S`` (ties: lower layer, then
  choice order), never the last alive operator of a layer, and skipping any operator a ``keep``
  predicate protects (the strategy protects operators whose removal would make the budget infeasible).
* **Merging** (Algorithm 1 line 5): scanning layers from shallow to deep, a group starts at the first
  layer not yet in a child space and greedily takes the next adjacent layers while the product of
  their alive-operator counts stays ``<= T``; a group of two or more layers becomes a merged child
  space, a single layer stays a plain shared layer and the scan restarts at the next layer. Child
  spaces made at earlier stages are kept (they only shrink); only runs of ungrouped layers between
  them are merged. Fig. 3 (6 layers, T = 6): alive counts ``[5, 2, 1, 3, 2, 3]`` give
  ``5`` alone (5·2 = 10 > 6), ``2·1·3 = 6`` -> child space of layers 2-4, ``2·3 = 6`` -> layers 5-6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

Operator = tuple[int, str]


@dataclass
class OperatorScores:
    """Per-operator SI (Eq. 5), SC (Eq. 6) and S (Eq. 7) over the pool of removable operators."""

    si: dict[Operator, float] = field(default_factory=dict)
    sc: dict[Operator, float] = field(default_factory=dict)
    s: dict[Operator, float] = field(default_factory=dict)

    def to_json(self) -> list[dict]:
        return [
            {"layer": layer, "op": op, "SI": self.si[(layer, op)], "SC": self.sc[(layer, op)], "S": self.s[(layer, op)]}
            for layer, op in self.si
        ]


def selection_importance(
    path_choices: Sequence[Sequence[str | None]], accuracies: Sequence[float], alive: Sequence[Sequence[str]]
) -> dict[Operator, float]:
    """Eq. 5: mean accuracy of the sampled paths containing each alive operator.

    ``path_choices[n][layer]`` is the choice path ``n`` makes at ``layer`` (``None``: the layer is not
    on the path, e.g. an unselected DARTS edge); ``accuracies[n]`` is ``P`` of path ``n`` (Eq. 4).
    """
    sums: dict[Operator, float] = {}
    counts: dict[Operator, int] = {}
    for choices, acc in zip(path_choices, accuracies):
        for layer, choice in enumerate(choices):
            if choice is not None:
                sums[(layer, choice)] = sums.get((layer, choice), 0.0) + float(acc)
                counts[(layer, choice)] = counts.get((layer, choice), 0) + 1
    return {
        (layer, op): (sums[(layer, op)] / counts[(layer, op)] if counts.get((layer, op)) else 0.0)
        for layer, ops in enumerate(alive)
        for op in ops
    }


def population_variance(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / len(values)


def selection_confidence(si: dict[Operator, float], alive: Sequence[Sequence[str]]) -> dict[Operator, float]:
    """Eq. 6: population variance of the layer's SI values, given to every operator of the layer."""
    sc: dict[Operator, float] = {}
    for layer, ops in enumerate(alive):
        variance = population_variance([si[(layer, op)] for op in ops])
        for op in ops:
            sc[(layer, op)] = variance
    return sc


def mean_normalize(values: dict[Operator, float]) -> dict[Operator, float]:
    """``x / mean(x)`` over the given operators (a zero mean leaves the values unchanged)."""
    mean = sum(values.values()) / len(values)
    return {key: (v / mean if mean != 0 else v) for key, v in values.items()}


def operator_scores(si: dict[Operator, float], alive: Sequence[Sequence[str]]) -> OperatorScores:
    """Eq. 6-7 over the pool of removable operators (layers with at least two alive choices)."""
    pool_alive = [ops if len(ops) >= 2 else [] for ops in alive]
    pool_si = {(layer, op): si[(layer, op)] for layer, ops in enumerate(pool_alive) for op in ops}
    if not pool_si:
        return OperatorScores()
    pool_sc = {key: v for key, v in selection_confidence(si, alive).items() if key in pool_si}
    norm_si = mean_normalize(pool_si)
    if all(v == 0 for v in pool_sc.values()):
        return OperatorScores(pool_si, pool_sc, dict(norm_si))
    norm_sc = mean_normalize(pool_sc)
    s = {key: (norm_si[key] / norm_sc[key] if norm_sc[key] > 0 else math.inf) for key in pool_si}  # Eq. 7
    return OperatorScores(pool_si, pool_sc, s)


def shrink(
    alive: Sequence[Sequence[str]],
    scores: dict[Operator, float],
    k: int,
    keep: Callable[[list[list[str]], Operator], bool] | None = None,
) -> tuple[list[list[str]], list[Operator]]:
    """Remove the ``k`` lowest-scoring operators, never a layer's last one; returns (new alive, removed).

    ``keep(current_alive, op)`` -> True protects ``op`` (checked against the space as shrunk so far).
    Fewer than ``k`` are removed when no more operators can go.
    """
    order = {(layer, op): (layer, i) for layer, ops in enumerate(alive) for i, op in enumerate(ops)}
    ranked = sorted(scores, key=lambda key: (scores[key], order[key]))
    current = [list(ops) for ops in alive]
    removed: list[Operator] = []
    for layer, op in ranked:
        if len(removed) == k:
            break
        if op not in current[layer] or len(current[layer]) <= 1:
            continue
        if keep is not None and keep(current, (layer, op)):
            continue
        current[layer].remove(op)
        removed.append((layer, op))
    return current, removed


def merge_child_spaces(
    sizes: Sequence[int], threshold: int, existing: Sequence[Sequence[int]] = ()
) -> list[list[int]]:
    """Algorithm 1 line 5: the merged child spaces (lists of adjacent layer indices), shallow to deep.

    ``sizes[layer]`` = alive operators of ``layer``; ``existing`` = child spaces kept from earlier stages.
    Returns the existing child spaces plus the new ones, sorted by first layer.
    """
    taken = {layer for group in existing for layer in group}
    groups = [list(group) for group in existing]
    layer = 0
    while layer < len(sizes):
        if layer in taken:
            layer += 1
            continue
        end, size = layer + 1, sizes[layer]
        while end < len(sizes) and end not in taken and size * sizes[end] <= threshold:
            size *= sizes[end]
            end += 1
        if end - layer >= 2:
            groups.append(list(range(layer, end)))
        layer = end if end - layer >= 2 else layer + 1
    return sorted(groups, key=lambda group: group[0])


def space_size(alive: Sequence[Sequence[str]]) -> int:
    return math.prod(len(ops) for ops in alive)
