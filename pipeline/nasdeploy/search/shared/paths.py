"""Paths through an SE-NAS supernet, their costs, and sampling under FLOPs/latency budgets.

A *path* is one architecture of the (shrunk) space: one choice per searchable *layer*.

* Layer-wise spaces (MobileNet-like): a layer is a MobileNet layer; every layer is on the path.
* Edge-wise spaces (DARTS): a layer is one edge of the normal cell (layers ``0..E-1``) or of the
  reduction cell (layers ``E..2E-1``), edges enumerated node by node (node ``j`` takes inputs
  ``0..j+1``). Two path spaces:

  - ``AllEdgesPaths`` (the paper's, §3.5): every edge takes one of the candidate ops, ``none`` included
    (8^14 per cell with DARTS' 8 ops); node j sums all its edges. An edge whose op is ``none`` is *not on the
    path*: it contributes zero, costs nothing, has no weights and is not part of a partial model's key.
  - ``EdgewisePaths`` (DARTS genotypes): the usual selection of **two inputs per intermediate node is sampled
    too**: ``Path.inputs`` holds, for the normal cell then the reduction cell, the two chosen input indices of
    each node (sorted). A path is exactly a genotype; an edge that is not selected is *not on the path* (its
    choice is carried along but costs nothing, is not trained and is not scored).

Sampling under budgets (§4.3, "dumps models that don't satisfy FLOPs constraint"): uniform paths are
drawn and rejected while they violate a budget (up to ``max_tries``); after that the last draw is
*repaired* by switching random layers (never a forced one) to their cheapest alive choice for the
violated metric until it fits. FLOPs of a path are an exact sum over a per-(layer, choice) table;
latency is the LUT predictor's value (``predict_latency_ms``) of the path's architecture.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from nasdeploy.errors import NasDeployError
from nasdeploy.spaces.darts import candidate_inputs, edge_index, locate_edge, num_edges


@dataclass(frozen=True)
class Path:
    choices: tuple[str, ...]
    inputs: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"choices": list(self.choices), "inputs": list(self.inputs)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Path":
        return cls(tuple(d["choices"]), tuple(d.get("inputs", ())))


class PathSpace(ABC):
    """The searchable layers of a space: candidates per layer and the structure of a path."""

    candidates: list[list[str]]

    @property
    def num_layers(self) -> int:
        return len(self.candidates)

    @abstractmethod
    def sample(self, alive: Sequence[Sequence[str]], rng: random.Random, forced: tuple[int, str] | None = None) -> Path:
        """A uniform path over ``alive``; ``forced=(layer, choice)`` puts that operator on the path."""

    @abstractmethod
    def active(self, path: Path) -> list[str | None]:
        """The choice of each layer, ``None`` for layers not on the path."""

    def scored(self, path: Path) -> list[str | None]:
        """The operator each layer contributes to Eq. 5's sample (``None``: the layer's choice was not selected)."""
        return self.active(path)

    @abstractmethod
    def cheapest(self, alive: Sequence[Sequence[str]], cost: "LayerCosts") -> Path:
        """The path of smallest ``cost`` over ``alive``."""

    def mutate(self, path: Path, alive: Sequence[Sequence[str]], rng: random.Random, prob: float) -> Path:
        choices = tuple(rng.choice(list(alive[i])) if rng.random() < prob else c for i, c in enumerate(path.choices))
        return Path(choices, path.inputs)

    def crossover(self, a: Path, b: Path, rng: random.Random) -> Path:
        choices = tuple(x if rng.random() < 0.5 else y for x, y in zip(a.choices, b.choices))
        return Path(choices, a.inputs)


class LayerwisePaths(PathSpace):
    def __init__(self, candidates: Sequence[Sequence[str]]):
        self.candidates = [list(c) for c in candidates]

    def sample(self, alive, rng, forced=None):
        choices = [rng.choice(list(ops)) for ops in alive]
        if forced is not None:
            choices[forced[0]] = forced[1]
        return Path(tuple(choices))

    def active(self, path):
        return list(path.choices)

    def cheapest(self, alive, cost):
        return Path(tuple(min(ops, key=lambda op, i=i: (cost.per_layer[i][op], list(ops).index(op))) for i, ops in enumerate(alive)))


class EdgewisePaths(PathSpace):
    """DARTS: ``2 * num_edges`` layers (normal cell edges, then reduction cell edges) plus input selection."""

    def __init__(self, op_names: Sequence[str], nodes: int):
        self.nodes = nodes
        self.num_edges = num_edges(nodes)
        self.candidates = [list(op_names) for _ in range(2 * self.num_edges)]

    def edge(self, cell_type: int, node: int, input_index: int) -> int:
        return cell_type * self.num_edges + edge_index(node, input_index)

    def locate(self, layer: int) -> tuple[int, int, int]:
        """``(cell_type, node, input_index)`` of a layer."""
        cell_type, e = divmod(layer, self.num_edges)
        return (cell_type, *locate_edge(e))

    def node_inputs(self, path: Path, cell_type: int, node: int) -> tuple[int, ...]:
        """The inputs node ``node`` of ``path`` sums (the edges on the path)."""
        at = 2 * (cell_type * self.nodes + node)
        return path.inputs[at], path.inputs[at + 1]

    def sample(self, alive, rng, forced=None):
        choices = [rng.choice(list(ops)) for ops in alive]
        inputs: list[int] = []
        for cell_type in range(2):
            for node in range(self.nodes):
                inputs += sorted(rng.sample(candidate_inputs(node), 2))
        if forced is not None:
            layer, op = forced
            choices[layer] = op
            cell_type, node, input_index = self.locate(layer)
            at = 2 * (cell_type * self.nodes + node)
            pair = inputs[at : at + 2]
            if input_index not in pair:
                pair[rng.randrange(2)] = input_index
            inputs[at : at + 2] = sorted(pair)
        return Path(tuple(choices), tuple(inputs))

    def active(self, path):
        result: list[str | None] = [None] * self.num_layers
        for cell_type in range(2):
            for node in range(self.nodes):
                for input_index in self.node_inputs(path, cell_type, node):
                    layer = self.edge(cell_type, node, input_index)
                    result[layer] = path.choices[layer]
        return result

    def cheapest(self, alive, cost):
        choices = [min(ops, key=lambda op, i=i: (cost.per_layer[i][op], list(ops).index(op))) for i, ops in enumerate(alive)]
        inputs: list[int] = []
        for cell_type in range(2):
            for node in range(self.nodes):
                ranked = sorted(candidate_inputs(node), key=lambda i: cost.per_layer[self.edge(cell_type, node, i)][choices[self.edge(cell_type, node, i)]])
                inputs += sorted(ranked[:2])
        return Path(tuple(choices), tuple(inputs))

    def mutate(self, path, alive, rng, prob):
        mutated = super().mutate(path, alive, rng, prob)
        inputs = list(path.inputs)
        for at in range(0, len(inputs), 2):
            if rng.random() < prob:
                node = (at // 2) % self.nodes
                inputs[at : at + 2] = sorted(rng.sample(candidate_inputs(node), 2))
        return Path(mutated.choices, tuple(inputs))

    def crossover(self, a, b, rng):
        crossed = super().crossover(a, b, rng)
        inputs: list[int] = []
        for at in range(0, len(a.inputs), 2):
            inputs += list((a if rng.random() < 0.5 else b).inputs[at : at + 2])
        return Path(crossed.choices, tuple(inputs))


NONE = "none"


class AllEdgesPaths(EdgewisePaths):
    """The paper's DARTS space (§3.5): one op per edge on all ``E`` edges of each cell type, ``none`` included.

    A path is ``choices`` only (no input selection): node j = Σ_i o^(i,j)(x_i) over the edges whose op is not
    ``none``. Sampling, mutation and crossover are layer-wise, as on the MobileNet-like space.
    """

    sample = LayerwisePaths.sample
    cheapest = LayerwisePaths.cheapest
    mutate = PathSpace.mutate
    crossover = PathSpace.crossover

    def active(self, path):
        return [None if c == NONE else c for c in path.choices]

    def scored(self, path: Path) -> list[str | None]:
        return list(path.choices)  # none is one of the 8 operations and is scored like the others (§3.3)

    def node_inputs(self, path: Path, cell_type: int, node: int) -> tuple[int, ...]:
        return tuple(i for i in candidate_inputs(node) if path.choices[self.edge(cell_type, node, i)] != NONE)


@dataclass
class LayerCosts:
    """An additive cost model: ``fixed + sum(per_layer[layer][choice] for layers on the path)``."""

    fixed: float
    per_layer: list[dict[str, float]]

    def of(self, paths: PathSpace, path: Path) -> float:
        return self.fixed + sum(self.per_layer[i][c] for i, c in enumerate(paths.active(path)) if c is not None)


@dataclass
class Budget:
    flops: float | None = None  # multiply-adds
    latency_ms: float | None = None


class PathCosts:
    """FLOPs (exact, additive table) and latency (LUT predictor) of paths, and the budget check."""

    def __init__(self, paths: PathSpace, flops: LayerCosts, latency: LayerCosts | None = None,
                 predict_latency: Callable[[Path], float] | None = None):
        self.paths = paths
        self.flops_table = flops
        self.latency_table = latency
        self.predict_latency = predict_latency
        self._latency_cache: dict[Path, float] = {}

    def flops(self, path: Path) -> float:
        return self.flops_table.of(self.paths, path)

    def latency_ms(self, path: Path) -> float | None:
        if self.predict_latency is None:
            return None
        if path not in self._latency_cache:
            self._latency_cache[path] = float(self.predict_latency(path))
        return self._latency_cache[path]

    def violations(self, path: Path, budget: Budget) -> list[str]:
        """The metrics ``path`` exceeds: a sublist of ``["flops", "latency"]``."""
        broken = []
        if budget.flops is not None and self.flops(path) > budget.flops:
            broken.append("flops")
        if budget.latency_ms is not None and self.latency_ms(path) > budget.latency_ms:
            broken.append("latency")
        return broken

    def feasible(self, path: Path, budget: Budget) -> bool:
        return not self.violations(path, budget)

    def table_for(self, metric: str) -> LayerCosts:
        return self.flops_table if metric == "flops" else self.latency_table

    def cheapest_value(self, alive: Sequence[Sequence[str]], metric: str) -> float:
        """Smallest FLOPs (exact) or the predicted latency of the lowest-latency path over ``alive``."""
        path = self.paths.cheapest(alive, self.table_for(metric))
        return self.flops(path) if metric == "flops" else self.latency_ms(path)

    def budget_reachable(self, alive: Sequence[Sequence[str]], budget: Budget) -> bool:
        if budget.flops is not None and self.cheapest_value(alive, "flops") > budget.flops:
            return False
        if budget.latency_ms is not None and self.cheapest_value(alive, "latency") > budget.latency_ms:
            return False
        return True


def repair(path: Path, alive: Sequence[Sequence[str]], costs: PathCosts, budget: Budget, rng: random.Random,
           forced: tuple[int, str] | None = None) -> Path | None:
    """Switch random layers to their cheapest alive choice for a violated metric until ``path`` fits."""
    choices = list(path.choices)
    while True:
        current = Path(tuple(choices), path.inputs)
        broken = costs.violations(current, budget)
        if not broken:
            return current
        table = costs.table_for(broken[0]).per_layer
        active = costs.paths.active(current)
        movable = [
            i for i, c in enumerate(active)
            if c is not None and (forced is None or i != forced[0])
            and table[i][c] > min(table[i][op] for op in alive[i])
        ]
        if not movable:
            return None
        i = rng.choice(movable)
        choices[i] = min(alive[i], key=lambda op: table[i][op])


def sample_feasible(paths: PathSpace, alive: Sequence[Sequence[str]], costs: PathCosts, budget: Budget,
                    rng: random.Random, forced: tuple[int, str] | None = None, max_tries: int = 100) -> Path | None:
    """A path meeting ``budget``: rejection sampling, then repair of the last draw (``None`` if impossible)."""
    path = paths.sample(alive, rng, forced)
    for _ in range(max_tries):
        if costs.feasible(path, budget):
            return path
        path = paths.sample(alive, rng, forced)
    return repair(path, alive, costs, budget, rng, forced)


def check_budget(costs: PathCosts, alive: Sequence[Sequence[str]], budget: Budget, space_name: str,
                 cheapest_latency: float | None = None) -> None:
    """Fail at once, naming the cheapest value, when no architecture can meet a budget."""
    if budget.flops is not None:
        smallest = costs.cheapest_value(alive, "flops")
        if smallest > budget.flops:
            raise NasDeployError(
                f"no {space_name} architecture meets the FLOPs budget {format_flops(budget.flops)}: the smallest has "
                f"{format_flops(smallest)} FLOPs; raise --flops-budget to at least {format_flops(math.ceil(smallest / 1e3) * 1e3)}"
            )
    if budget.latency_ms is not None:
        fastest = cheapest_latency if cheapest_latency is not None else costs.cheapest_value(alive, "latency")
        if fastest > budget.latency_ms:
            raise NasDeployError(
                f"no {space_name} architecture meets the latency budget {budget.latency_ms:.4g} ms: the cheapest "
                f"predicted latency is {fastest:.4f} ms; raise --latency-budget to at least {math.ceil(fastest * 1e4) / 1e4:.4f}ms"
            )


def format_flops(value: float) -> str:
    """``312.457M`` style (multiply-adds), exact integers below a million."""
    return f"{value / 1e6:.3f}M" if value >= 1e6 else f"{int(round(value))}"
