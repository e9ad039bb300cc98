"""SE-NAS' last step (SPOS evolution over the final shrunk space, every candidate within the budgets), mixed into
``SenasRun`` (``senas.run``), and the final supernet accuracy."""

from __future__ import annotations

from nasdeploy.progress import progress_bar
from nasdeploy.search.shared.evolution import EvolutionConfig, EvolutionState, derive_rng, evolutionary_search
from nasdeploy.search.shared.paths import Path
from nasdeploy.search.senas.state import SearchState


class EvolutionPhase:
    """The final supernet accuracy and the evolutionary search of a ``SenasRun``."""

    def final_accuracy(self, state: SearchState) -> float:
        rng = derive_rng(self.seed, "final")
        paths = [p for p in (self.sample(state.alive, rng) for _ in range(self.config.final_samples)) if p is not None]
        return sum(self.evaluate(self.supernet, p) for p in paths) / max(len(paths), 1)

    def run_evolution(self, state: SearchState) -> tuple[Path, float]:
        if state.final_accuracy is None:
            state.final_accuracy = self.final_accuracy(state)
            self.save(state)
        config = EvolutionConfig(self.config.population, self.config.generations, self.config.mutation_prob, self.config.max_tries)
        operators = AliveOperators(self, state.alive)
        with progress_bar() as bar:
            task = bar.add_task("evolution", total=config.generations + 1, completed=(state.evolution or EvolutionState()).generation, info="")

            def on_generation(evo: EvolutionState) -> None:
                state.evolution = evo
                self.save(state)
                bar.update(task, advance=1, info=f"best {evo.history[-1]['best_fitness']:.3f}")

            best, fitness, evo = evolutionary_search(
                operators, lambda p: self.evaluate(self.supernet, p), lambda p: self.costs.feasible(p, self.budget),
                config, self.seed, state.evolution, on_generation,
            )
        state.evolution = evo
        return best, fitness


class AliveOperators:
    """Evolution operators over the current (shrunk) space, with budget-respecting random samples."""

    def __init__(self, run, alive: list[list[str]]):
        self.run, self.alive, self.paths = run, alive, run.adapter.paths

    def sample(self, rng):
        return self.run.sample(self.alive, rng)

    def mutate(self, path, rng, prob):
        return self.paths.mutate(path, self.alive, rng, prob)

    def crossover(self, a, b, rng):
        return self.paths.crossover(a, b, rng)
