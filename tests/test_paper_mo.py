"""The ``paper-mo`` preset: Table 4.7's setting (XDARTS cells, Eq. 4.1's fixed δ, Algorithm 3 on Table 4.6's weights)."""

from __future__ import annotations

import pytest
import torch

from nasdeploy.latency.stem_repeat import TABLE_4_6_WEIGHTS, load_stem_repeat_weights
from nasdeploy.search.base import get_strategy
from nasdeploy.spaces.base import get_space
from nasdeploy.spaces.ops import OP_SPACES


def test_paper_mo_is_the_paper_schedule_with_table_4_7s_setting():
    strategy = get_strategy("icdarts")
    paper, mo = strategy.settings("paper", None), strategy.settings("paper-mo", None)
    assert (mo.discretization, mo.delta, mo.latency_weights) == ("xdarts", 0.1, "table-4.6")
    assert mo.aux_head == "cdarts"
    different = {k for k, v in mo.to_dict().items() if paper.to_dict()[k] != v}
    assert different == {"discretization", "delta", "latency_weights"}  # otherwise §3.4.2's schedule
    assert strategy.settings("paper-mo", {"delta": "0.05"}).delta == 0.05
    space = get_space("darts")
    assert space.default_template("paper-mo") == space.default_template("paper")


def test_paper_mo_retrains_with_the_paper_recipe():
    from nasdeploy.train.recipes import recipe_config

    assert recipe_config("icdarts", "paper-mo") == recipe_config("icdarts", "paper")


def test_table_4_6_weights_cover_op_space_3():
    weights = load_stem_repeat_weights("table-4.6")
    assert set(weights.weights) == set(OP_SPACES["3"])
    assert weights.weights == TABLE_4_6_WEIGHTS and weights.weights["sep_conv_5x5"] == 0.36
    assert weights.unit == "normalised weight"


def test_p_with_table_4_6_is_algorithm_3_on_the_weights():
    """Algorithm 3 with one cell of one node and uniform α: P = the mean weight over the node's (edge, op) pairs."""
    from nasdeploy.latency.predictor import expected_latency_darts

    template = get_space("darts").default_template("tiny", nodes=1)
    ops = OP_SPACES["3"]
    alpha = torch.zeros(2, len(ops))
    p = expected_latency_darts(alpha, alpha, ops, template, None, rule="xdarts", source=load_stem_repeat_weights("table-4.6"),
                               cell_counts=(1, 0))
    mean = sum(TABLE_4_6_WEIGHTS[o] for o in ops) / len(ops)
    assert float(p) == pytest.approx(mean, rel=1e-6)
