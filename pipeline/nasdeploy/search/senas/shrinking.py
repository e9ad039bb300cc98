"""SE-NAS' shrinking and expanding (§3.3-3.4, Eq. 4-7), mixed into ``SenasRun`` (``senas.run``): score every alive
operator with the K-averaged weights on feasible paths, remove the k lowest (never one the budget needs), merge
adjacent small layer spaces into child spaces with their own weights."""

from __future__ import annotations

import logging

from nasdeploy.search.senas.scores import merge_child_spaces, operator_scores, selection_importance, shrink, space_size
from nasdeploy.search.shared.evolution import derive_rng
from nasdeploy.search.shared.paths import Path
from nasdeploy.search.shared.supernet import SnapshotAverage, Supernet, path_accuracy
from nasdeploy.search.senas.state import SearchState

log = logging.getLogger("nasdeploy.search.senas.run")


class ShrinkAndExpand:
    """Scores, shrinking and expanding of a ``SenasRun`` at the end of a stage."""

    def keep_for_budget(self, current: list[list[str]], operator: tuple[int, str]) -> bool:
        """True when removing ``operator`` would leave no architecture within the budgets."""
        layer, op = operator
        trial = [list(ops) for ops in current]
        trial[layer].remove(op)
        return not self.costs.budget_reachable(trial, self.budget)

    def evaluate(self, supernet: Supernet, path: Path) -> float:
        supernet.prepare(path, self.device)
        return path_accuracy(supernet, path, self.data.val_batches, self.data.bn_batches)

    def score_pool(self, supernet: Supernet, state: SearchState) -> tuple[list[Path], list[float]]:
        """Feasible paths until every alive operator is on ``score_samples`` of them (Eq. 5 sample)."""
        rng = derive_rng(self.seed, "score", state.stage)
        pool: list[Path] = []
        accuracies: list[float] = []
        cache: dict[Path, float] = {}
        counts: dict[tuple[int, str], int] = {}
        for layer, ops in enumerate(state.alive):
            if len(ops) < 2:
                continue
            for op in ops:
                while counts.get((layer, op), 0) < self.config.score_samples:
                    path = self.sample(state.alive, rng, forced=(layer, op))
                    if path is None:
                        break  # no feasible path contains this operator: SI = 0
                    if path not in cache:
                        cache[path] = self.evaluate(supernet, path)
                    pool.append(path)
                    accuracies.append(cache[path])
                    for i, c in enumerate(self.adapter.paths.scored(path)):
                        if c is not None:
                            counts[(i, c)] = counts.get((i, c), 0) + 1
        return pool, accuracies

    def shrink_and_expand(self, state: SearchState, snapshots: SnapshotAverage) -> None:
        averaged = snapshots.averaged(self.supernet)  # Eq. 4
        pool, accuracies = self.score_pool(averaged, state)
        del averaged
        si = selection_importance([self.adapter.paths.scored(p) for p in pool], accuracies, state.alive)  # Eq. 5
        scores = operator_scores(si, state.alive)  # Eq. 6-7
        size_before = space_size(state.alive)
        alive, removed = shrink(state.alive, scores.s, self.config.shrink_k, keep=self.keep_for_budget)
        groups = merge_child_spaces([len(ops) for ops in alive], self.config.merge_threshold, self.supernet.child_spaces)
        self.supernet.set_child_spaces(groups)
        self.supernet.drop_removed(alive)
        names = dict(self.supernet.named_parameters())
        self.buffers = {k: v for k, v in self.buffers.items() if k in names}
        state.alive = alive
        entry = {
            "stage": state.stage,
            "supernet_accuracy": sum(accuracies) / max(len(accuracies), 1),
            "paths_evaluated": len(set(pool)),
            "scores": scores.to_json(),
            "removed": [{"layer": layer, "op": op} for layer, op in removed],
            "child_spaces": groups,
            "space_size_before": size_before,
            "space_size_after": space_size(alive),
            "alive": alive,
        }
        state.stages.append(entry)
        log.info("stage %d: supernet accuracy %.3f, removed %s, child spaces %s", state.stage,
                 entry["supernet_accuracy"], [f"{l}:{o}" for l, o in removed], groups)
