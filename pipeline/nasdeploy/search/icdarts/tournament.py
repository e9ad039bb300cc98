"""Algorithm 2: the tournament-style dynamic operation space of ICDARTS (§4.1, Figure 4.1).

Tier T (the first, "if t = 3" in the algorithm text for T = 3) plays 2^(T-1) independent games, each an
ICDARTS run whose edge sets hold O_max operations drawn at random from the pool. After every game the top
50 % of each edge set's operations by α are kept; the next tier's game r merges the survivors of games 2r-1
and 2r of the tier before; the single game of tier 1 returns its operation sets (and genotype).

An *edge set* is all incoming edges of one intermediate node of one cell type ("per-node operation sets"
in §4.1), so a DARTS cell with 4 nodes has 8 edge sets (4 normal, 4 reduction). ``play_tournament`` plays it
with one ``ICDARTSRun`` per game.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from nasdeploy.search.icdarts.run import ICDARTSRun, SearchSetup
from nasdeploy.search.shared.discretize import ZERO_OPS
from nasdeploy.spaces.darts import node_edge_ranges, num_edges

log = logging.getLogger(__name__)

OpSets = list[list[str]]


@dataclass
class GameResult:
    """What one ICDARTS game reports: per edge set, a score per op (its α strength), and its genotype."""

    scores: list[dict[str, float]]
    genotype: Any
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class TournamentResult:
    op_sets: OpSets
    genotype: Any
    final: GameResult
    games: list[dict[str, Any]]  # tier, game, op_sets played, survivors


def games_in_tier(t: int) -> int:
    """Tier t holds 2^(t-1) games: 4, 2, 1 for T = 3 (Figure 4.1)."""
    return 2 ** (t - 1)


def initial_op_sets(pool: list[str], num_sets: int, max_ops: int, rng: random.Random) -> OpSets:
    """First tier: O_max ops drawn at random, without replacement, for each edge set."""
    k = min(max_ops, len(pool))
    return [sorted(rng.sample(pool, k), key=pool.index) for _ in range(num_sets)]


def keep_top_half(op_sets: OpSets, scores: list[dict[str, float]]) -> OpSets:
    """Keep the ceil(50 %) best ops of each edge set by α score (ties: pool order)."""
    kept = []
    for ops, score in zip(op_sets, scores):
        ranked = sorted(ops, key=lambda op: -score.get(op, float("-inf")))
        kept.append(ranked[: max(1, math.ceil(len(ops) / 2))])
    return kept


def merge(a: OpSets, b: OpSets) -> OpSets:
    """o_{t,r} = o_{t+1,2r-1} + o_{t+1,2r}: per edge set union, order kept, duplicates once."""
    return [list(dict.fromkeys(x + y)) for x, y in zip(a, b)]


def run_tournament(
    tiers: int,
    pool: list[str],
    num_sets: int,
    max_ops: int,
    rng: random.Random,
    play: Callable[[int, int, OpSets], GameResult],
) -> TournamentResult:
    """Algorithm 2. ``play(tier, game, op_sets)`` runs one ICDARTS game and returns its α scores."""
    assert tiers >= 1 and max_ops >= 1
    survivors: list[OpSets] = []
    history: list[dict[str, Any]] = []
    for t in range(tiers, 0, -1):
        played: list[OpSets] = []
        for r in range(games_in_tier(t)):
            if t == tiers:  # the first tier ("t = 3" in the algorithm text)
                op_sets = initial_op_sets(pool, num_sets, max_ops, rng)
            else:
                op_sets = merge(survivors[2 * r], survivors[2 * r + 1])
            result = play(t, r, op_sets)
            if t == 1:
                history.append({"tier": t, "game": r, "op_sets": op_sets, "survivors": op_sets})
                return TournamentResult(op_sets=op_sets, genotype=result.genotype, final=result, games=history)
            kept = keep_top_half(op_sets, result.scores)
            history.append({"tier": t, "game": r, "op_sets": op_sets, "survivors": kept})
            played.append(kept)
        survivors = played
    raise AssertionError("unreachable: tier 1 always returns")


# ------------------------------------------------------------------------------------------ ICDARTS' games
def masks_for(op_sets: list[list[str]], op_names: list[str], nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean [E, O] masks of both cells from per-node op sets (normal nodes first); zero ops always on."""
    masks = []
    for cell in range(2):
        mask = torch.zeros(num_edges(nodes), len(op_names), dtype=torch.bool)
        for j, edges in enumerate(node_edge_ranges(nodes)):
            allowed = set(op_sets[cell * nodes + j]) | set(ZERO_OPS)
            for o, op in enumerate(op_names):
                mask[edges.start : edges.stop, o] = op in allowed
        masks.append(mask)
    return masks[0], masks[1]


def play_tournament(setup: SearchSetup, out_dir: Path, resume: bool) -> tuple[ICDARTSRun, list[dict]]:
    """Algorithm 2 with one ICDARTS run per game; finished games are read back when resuming."""
    cfg = setup.config
    nodes = setup.search_template.nodes
    pool = [op for op in setup.op_names if op not in ZERO_OPS]
    game_epochs = cfg.game_epochs or max(1, cfg.epochs // cfg.tiers)
    runs: dict[tuple[int, int], ICDARTSRun] = {}

    def play(tier: int, game: int, op_sets: list[list[str]]) -> GameResult:
        game_dir = out_dir / "tournament" / f"tier{tier}_game{game}"
        checkpoint = game_dir / "checkpoint.pt"
        log.info("tournament tier %d game %d: %d-%d ops per edge set", tier, game,
                 min(map(len, op_sets)), max(map(len, op_sets)))
        run = ICDARTSRun(setup, game_dir, game_epochs, masks_for(op_sets, setup.op_names, nodes), f"tier {tier} game {game}")
        run.run(resume and checkpoint.exists())
        runs[(tier, game)] = run
        return GameResult(run.edge_set_scores(), run.genotype("retraining"), {"epochs": run.log})

    result = run_tournament(cfg.tiers, pool, 2 * nodes, cfg.max_ops_per_edge, setup.ctx.rng(0x70), play)
    final = runs[(1, 0)]
    history = result.games + [{"final_op_sets": result.op_sets}]
    return final, history
