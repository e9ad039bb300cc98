"""ICDARTS pure parts: discretisation rules on hand-built α, zero configurations, Algorithm 2 bookkeeping,
distillation loss, option parsing."""

from __future__ import annotations

import math
import random

import pytest
import torch

from nasdeploy.errors import NasDeployError
from nasdeploy.search.shared.discretize import (
    ZERO_CONFIGS,
    discretize_cell,
    get_zero_config,
    mixing_weights,
    num_edges,
    search_op_names,
    stage_op,
)
from nasdeploy.search.base import get_strategy
from nasdeploy.search.shared.objective import soft_target_loss
from nasdeploy.search.icdarts.tournament import GameResult, games_in_tier, keep_top_half, merge, run_tournament

# Two intermediate nodes: node 0 <- inputs 0,1 (rows 0,1); node 1 <- inputs 0,1,2 (rows 2,3,4).
OPS_ZERO = ["sep", "dil", "skip", "none"]
ALPHA = torch.tensor(
    [
        [2.0, 0.0, 0.0, 5.0],  # zero dominates; best non-zero: sep
        [0.0, 3.0, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0],
        [3.5, 0.0, 4.0, 0.0],  # two strong ops from input 1
        [0.0, 2.0, 0.0, 0.0],
    ]
)


def test_num_edges_matches_darts_cells():
    assert num_edges(4) == 14
    assert num_edges(2) == 5


def test_mixing_weights_per_edge_and_per_node():
    darts = mixing_weights(ALPHA, 2, "darts")
    assert torch.allclose(darts.sum(dim=1), torch.ones(5))
    node = mixing_weights(ALPHA, 2, "idarts")
    assert math.isclose(float(node[0:2].sum()), 1.0, rel_tol=1e-6)
    assert math.isclose(float(node[2:5].sum()), 1.0, rel_tol=1e-6)
    # I-DARTS compares across edges: sep on input 0 gets exp(2) / Σ over node 0's 8 pairs
    expected = math.exp(2) / (math.exp(2) + math.exp(5) + math.exp(3) + 5)
    assert math.isclose(float(node[0, 0]), expected, rel_tol=1e-5)


def test_mask_gives_zero_weight_and_zero_gradient():
    alpha = ALPHA.clone().requires_grad_(True)
    mask = torch.ones_like(ALPHA, dtype=torch.bool)
    mask[3, 2] = False
    weights = mixing_weights(alpha, 2, "darts", mask)
    assert float(weights.detach()[3, 2]) == 0.0
    weights[3].sum().backward()
    assert float(alpha.grad[3, 2]) == 0.0


def test_darts_rule_top2_edges_best_nonzero_op():
    zero = ZERO_CONFIGS["V0"]  # zero mixed in during search, never selected
    cell = discretize_cell(ALPHA, OPS_ZERO, 2, "darts", zero)
    assert cell == [[("dil", 1), ("sep", 0)], [("dil", 2), ("skip", 1)]]


def test_idarts_rule_top_k_pairs_over_all_incoming_edges():
    cell = discretize_cell(ALPHA, OPS_ZERO, 2, "idarts", ZERO_CONFIGS["V0"])
    assert cell == [[("dil", 1), ("sep", 0)], [("skip", 1), ("sep", 1)]]  # two ops from input 1
    assert discretize_cell(ALPHA, OPS_ZERO, 2, "idarts", ZERO_CONFIGS["V0"], k=1) == [[("dil", 1)], [("skip", 1)]]


def test_xdarts_rule_node_takes_as_many_inputs_as_predecessors():
    cell = discretize_cell(ALPHA, OPS_ZERO, 2, "xdarts", ZERO_CONFIGS["V0"])
    assert [len(node) for node in cell] == [2, 3]
    assert cell == [[("dil", 1), ("sep", 0)], [("skip", 1), ("sep", 1), ("dil", 2)]]


def test_zero_selectable_in_v2_v4_and_mapped_per_stage():
    ops = ["sep", "dil", "skip", "random"]
    for name, evaluation, retraining in (("V2", "random", "random"), ("V3", "random", "none"), ("V4", "none", "none")):
        zero = ZERO_CONFIGS[name]
        assert discretize_cell(ALPHA, ops, 2, "darts", zero, stage="evaluation")[0] == [(evaluation, 0), ("dil", 1)]
        assert discretize_cell(ALPHA, ops, 2, "darts", zero, stage="retraining")[0] == [(retraining, 0), ("dil", 1)]


def test_zero_configurations_table_3_1():
    ops = ["sep_conv_3x3", "skip_connect"]
    assert search_op_names(ops, ZERO_CONFIGS["V0"]) == ops + ["none"]
    assert search_op_names(ops, ZERO_CONFIGS["V1"]) == ops
    for name in ("V2", "V3", "V4"):
        assert search_op_names(ops, ZERO_CONFIGS[name]) == ops + ["random"]
    rows = {name: (c.search, c.evaluation, c.retraining) for name, c in ZERO_CONFIGS.items()}
    assert rows == {
        "V0": ("none", None, None),
        "V1": (None, None, None),
        "V2": ("random", "random", "random"),
        "V3": ("random", "random", "none"),
        "V4": ("random", "none", "none"),
    }
    assert stage_op("sep_conv_3x3", ZERO_CONFIGS["V4"], "evaluation") == "sep_conv_3x3"
    assert get_zero_config("v3").name == "V3"
    with pytest.raises(NasDeployError, match="V0, V1, V2, V3, V4"):
        get_zero_config("V9")


def test_soft_target_loss_is_eq_3_7():
    torch.manual_seed(0)
    f_s, f_e, t = torch.randn(4, 10), torch.randn(4, 10), 3.0
    p, q = torch.softmax(f_e / t, 1), torch.softmax(f_s / t, 1)
    manual = t**2 / 4 * (p * (p / q).log()).sum()
    assert torch.allclose(soft_target_loss(f_s, f_e, t), manual, atol=1e-6)
    assert float(soft_target_loss(f_e, f_e, t)) == pytest.approx(0.0, abs=1e-6)
    f_e.requires_grad_(True)
    f_s.requires_grad_(True)
    soft_target_loss(f_s, f_e, t).backward()
    assert f_e.grad is None and f_s.grad is not None  # E's logits are a constant target


def test_tournament_algorithm_2_bookkeeping():
    pool = [f"op{i}" for i in range(10)]
    played = []

    def play(tier, game, op_sets):
        played.append((tier, game, [list(s) for s in op_sets]))
        scores = [{op: -pool.index(op) for op in ops} for ops in op_sets]  # lower index = larger α
        return GameResult(scores, genotype=f"g{tier}{game}")

    result = run_tournament(3, pool, num_sets=2, max_ops=4, rng=random.Random(1), play=play)
    assert [games_in_tier(t) for t in (3, 2, 1)] == [4, 2, 1]
    assert [(t, g) for t, g, _ in played] == [(3, 0), (3, 1), (3, 2), (3, 3), (2, 0), (2, 1), (1, 0)]
    first = [sets for t, _, sets in played if t == 3]
    assert all(len(s) == 4 and len(set(s)) == 4 for sets in first for s in sets)
    # tier 2 game r plays the merged top halves of tier-3 games 2r and 2r+1
    for r in range(2):
        for e in range(2):
            expected = list(dict.fromkeys(sorted(first[2 * r][e], key=pool.index)[:2] + sorted(first[2 * r + 1][e], key=pool.index)[:2]))
            assert played[4 + r][2][e] == expected
    # the best op of each edge set's whole bracket survives to the final tier, which returns its sets
    for e in range(2):
        assert min((op for sets in first for op in sets[e]), key=pool.index) in result.op_sets[e]
    assert result.op_sets == played[-1][2] and result.genotype == "g10"
    assert keep_top_half([["a", "b", "c"]], [{"a": 0.1, "b": 0.5, "c": 0.3}]) == [["b", "c"]]
    assert merge([["a", "b"]], [["b", "c"]]) == [["a", "b", "c"]]


def test_options_parse_defaults_and_errors():
    paper = get_strategy("icdarts").settings("paper", {})
    assert (paper.epochs, paper.pretrain_epochs, paper.warmup_epochs) == (30, 2, 1)  # §3.4.2
    assert (paper.w_lr, paper.w_weight_decay, paper.w_momentum) == (0.08, 3e-4, 0.9)
    assert (paper.alpha_lr, paper.alpha_beta1, paper.alpha_beta2, paper.alpha_weight_decay) == (3e-4, 0.5, 0.999, 0.0)
    cfg = get_strategy("icdarts").settings("tiny", {"lambda": "0.5", "tiers": 2, "discretization": "xdarts", "zero_config": "v2", "delta": None})
    assert (cfg.distill_lambda, cfg.tiers, cfg.discretization, cfg.zero_config, cfg.delta) == (0.5, 2, "xdarts", "V2", None)
    with pytest.raises(NasDeployError, match=r"^icdarts has no setting 'bogus'; its \d+ settings: nasdeploy strategies icdarts$"):
        get_strategy("icdarts").settings("cpu", {"bogus": 1})
    with pytest.raises(NasDeployError, match="discretization rule"):
        get_strategy("icdarts").settings("cpu", {"discretization": "pdarts"})
    with pytest.raises(NasDeployError, match="epochs"):
        get_strategy("icdarts").settings("cpu", {"epochs": "many"})


def test_algorithm_3_on_a_hand_computed_cell():
    """Algorithm 3's inner loops on a 2-node cell with two ops, worked out by hand."""
    from nasdeploy.latency.predictor import cell_expected_latency

    costs = torch.tensor([[2.0, 4.0], [0.0, 2.0], [1.0, 1.0], [2.0, 2.0], [4.0, 0.0]])  # L^T per (edge, op), ms
    alpha = torch.zeros(5, 2)
    alpha[0, 0] = math.log(3.0)  # softmax (0.75, 0.25) on edge 0; 0.5/0.5 elsewhere
    alpha.requires_grad_(True)
    # edge latencies: 2.5, 1, 1, 2, 2. darts rule: edges weighted by a softmax over their strongest op's weight
    # node 0: strengths 0.75, 0.5 -> l^c_0 = (2.5 e^0.75 + 1 e^0.5) / (e^0.75 + e^0.5)
    # node 1: inputs 0, 1 and node 0 (k = 2 adds l^c_0), strengths all 0.5: (1 + 2 + (2 + l^c_0)) / 3
    l0 = (2.5 * math.exp(0.75) + 1.0 * math.exp(0.5)) / (math.exp(0.75) + math.exp(0.5))
    l1 = (1.0 + 2.0 + (2.0 + l0)) / 3
    by_hand = (l0 * math.exp(l0) + l1 * math.exp(l1)) / (math.exp(l0) + math.exp(l1))  # Σ l^c softmax(l^c)
    p = cell_expected_latency(alpha, costs, nodes=2)
    assert float(p.detach()) == pytest.approx(by_hand, rel=1e-6)
    p.backward()
    # moving weight to the dearer op of edge 4 (4 ms vs 0 ms) raises P: its α gradient is positive
    assert float(alpha.grad[4, 0]) > 0 > float(alpha.grad[4, 1])


def test_genotype_changes_counts_replaced_pairs():
    from nasdeploy.search.shared.budget import genotype_changes
    from nasdeploy.spaces.darts import Genotype

    before = Genotype(normal=[[("sep_conv_3x3", 0), ("skip_connect", 1)], [("dil_conv_3x3", 2), ("sep_conv_5x5", 0)]],
                      normal_concat=[2, 3], reduce=[[("max_pool_3x3", 0), ("skip_connect", 1)], [("skip_connect", 2), ("max_pool_3x3", 1)]],
                      reduce_concat=[2, 3])
    after = Genotype(normal=[[("avg_pool_3x3", 0), ("skip_connect", 1)], [("skip_connect", 2), ("skip_connect", 0)]],
                     normal_concat=[2, 3], reduce=before.reduce, reduce_concat=[2, 3])
    assert genotype_changes(before, after) == 3 and genotype_changes(before, before) == 0
