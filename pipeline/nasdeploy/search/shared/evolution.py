"""SPOS evolutionary search under constraints (Guo et al. 2020, §3.4; SE-NAS Eq. 2).

One generation: the ``population`` best paths seen so far (by fitness) are kept, the top half are parents;
half of the new children come from mutation (each layer re-drawn with ``mutation_prob``), half from
uniform crossover of two parents. Every candidate must pass ``feasible`` (the FLOPs/latency budgets);
infeasible or already-seen children are drawn again (at most ``max_tries`` draws per child), so the search
never returns a path that violates the constraints. Generation ``g`` uses an RNG derived from
``(seed, g)``, and ``state`` (population + fitness cache) can be checkpointed after each generation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Hashable, Protocol

PathT = Hashable


class PathOperators(Protocol):
    def sample(self, rng: random.Random) -> PathT: ...
    def mutate(self, path: PathT, rng: random.Random, prob: float) -> PathT: ...
    def crossover(self, a: PathT, b: PathT, rng: random.Random) -> PathT: ...


@dataclass
class EvolutionConfig:
    population: int = 50
    generations: int = 20
    mutation_prob: float = 0.1
    max_tries: int = 200


@dataclass
class EvolutionState:
    """What a resumed search needs: generations done, fitness of every evaluated path, current top paths."""

    generation: int = 0
    fitness: dict = field(default_factory=dict)  # path -> fitness
    population: list = field(default_factory=list)
    history: list[dict] = field(default_factory=list)


def derive_rng(*parts: object) -> random.Random:
    return random.Random("|".join(str(p) for p in parts))


def _draw(make: Callable[[], PathT], feasible: Callable[[PathT], bool], seen: set, max_tries: int) -> PathT | None:
    for _ in range(max_tries):
        path = make()
        if path not in seen and feasible(path):
            return path
    return None


def next_generation(
    parents: list[PathT], ops: PathOperators, feasible: Callable[[PathT], bool], seen: set,
    config: EvolutionConfig, rng: random.Random,
) -> list[PathT]:
    """New feasible, unseen children: half mutations, half crossovers, topped up with random feasible paths."""
    children: list[PathT] = []
    taken = set(seen)
    half = max(1, config.population // 2)
    if parents:
        makers = [lambda: ops.mutate(rng.choice(parents), rng, config.mutation_prob)] * half
        makers += [lambda: ops.crossover(rng.choice(parents), rng.choice(parents), rng)] * (config.population - half)
    else:
        makers = [lambda: ops.sample(rng)] * config.population
    for make in makers:
        child = _draw(make, feasible, taken, config.max_tries)
        if child is None:
            child = _draw(lambda: ops.sample(rng), feasible, taken, config.max_tries)
        if child is not None:
            children.append(child)
            taken.add(child)
    return children


def evolutionary_search(
    ops: PathOperators,
    fitness: Callable[[PathT], float],
    feasible: Callable[[PathT], bool],
    config: EvolutionConfig,
    seed: int,
    state: EvolutionState | None = None,
    on_generation: Callable[[EvolutionState], None] | None = None,
) -> tuple[PathT, float, EvolutionState]:
    """Eq. 2: the feasible path with the best fitness found; ``on_generation`` is called after each generation."""
    state = state or EvolutionState()
    while state.generation <= config.generations:
        rng = derive_rng(seed, "evolution", state.generation)
        parents = state.population[: max(1, len(state.population) // 2)]  # none at generation 0
        candidates = next_generation(parents, ops, feasible, set(state.fitness), config, rng)
        for path in candidates:
            state.fitness[path] = float(fitness(path))
        ranked = sorted(state.fitness, key=lambda p: -state.fitness[p])
        state.population = ranked[: config.population]
        if not state.population:
            raise RuntimeError("evolutionary search found no feasible path")
        best = state.population[0]
        state.history.append({"generation": state.generation, "evaluated": len(candidates), "best_fitness": state.fitness[best]})
        state.generation += 1
        if on_generation is not None:
            on_generation(state)
    best = state.population[0]
    return best, state.fitness[best], state
