"""Predictor maths on hand-made tables: sums + overhead, Algorithm 3 and its gradient, layer-wise expectations."""

from __future__ import annotations

import math
import random

import pytest
import torch

from nasdeploy.latency.overhead import apply_overhead, fit_overhead
from nasdeploy.latency.predictor import (
    OpWeights,
    cell_type_counts,
    cell_expected_latency,
    cheapest_latency_ms,
    expected_latency_darts,
    expected_latency_layerwise,
    fixed_instances,
    predict_latency_ms,
)
from nasdeploy.latency.table import LatencyTable
from nasdeploy.latency.validate import fidelity_metrics, kendall_tau
from nasdeploy.spaces.base import get_space

ENTRY = {"p10_ms": 0.0, "p90_ms": 0.0, "iqr_ms": 0.0, "mean_ms": 0.0, "n": 1}


def hand_table(space_name, template, cost, overhead=None) -> LatencyTable:
    """A table whose entry for each op instance is ``cost(inst)`` ms."""
    space = get_space(space_name)
    table = LatencyTable(space=space_name, template=template.to_dict(), runtime="torch", device="cpu",
                         fingerprint={"cpu_model": "hand", "threads": 1}, versions={}, method={"batch": 1, "dtype": "float32"})
    for inst in space.op_instances(template):
        table.add(inst, {**ENTRY, "median_ms": float(cost(inst))})
    table.overhead = overhead
    return table


# --- Algorithm 3 on hand-computed cells ------------------------------------------------------------


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


# 2 nodes, 2 ops. Edges: node 0 <- inputs 0, 1 (edges 0, 1); node 1 <- inputs 0, 1, node 0 (edges 2, 3, 4)
ALPHA_2 = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.5, 0.5], [-1.0, 1.0]]
COSTS_2 = [[1.0, 3.0], [2.0, 4.0], [1.0, 1.0], [0.5, 2.5], [1.0, 2.0]]


def max_expected(node_latencies):
    return sum(l * w for l, w in zip(node_latencies, softmax(node_latencies)))  # Σ_j l^c_j softmax(l^c)_j


def test_algorithm3_hand_computed_cell_idarts():
    """One softmax over each node's (edge, op) pairs; input 2 (node 0) adds node 0's latency to both its ops."""
    w0 = softmax([0.0, 0.0, 1.0, 0.0])  # node 0: (e0,o0) (e0,o1) (e1,o0) (e1,o1)
    node0 = w0[0] * 1.0 + w0[1] * 3.0 + w0[2] * 2.0 + w0[3] * 4.0
    w1 = softmax([0.0, 2.0, 0.5, 0.5, -1.0, 1.0])  # node 1: edges 2, 3, 4
    node1 = w1[0] * 1.0 + w1[1] * 1.0 + w1[2] * 0.5 + w1[3] * 2.5 + w1[4] * (1.0 + node0) + w1[5] * (2.0 + node0)
    expected = max_expected([node0, node1])
    for rule in ("idarts", "xdarts"):
        got = cell_expected_latency(torch.tensor(ALPHA_2), torch.tensor(COSTS_2), nodes=2, rule=rule)
        assert got.item() == pytest.approx(expected, rel=1e-6)


def test_algorithm3_hand_computed_cell_darts():
    """Per-edge softmax (Eq. 3.1) times a softmax over the node's edge strengths (strongest op, §3.1.1)."""
    p = [softmax(row) for row in ALPHA_2]
    s = [max(row) for row in p]
    edge = [p[k][0] * COSTS_2[k][0] + p[k][1] * COSTS_2[k][1] for k in range(5)]
    e0 = softmax([s[0], s[1]])
    node0 = e0[0] * edge[0] + e0[1] * edge[1]
    e1 = softmax([s[2], s[3], s[4]])
    node1 = e1[0] * edge[2] + e1[1] * edge[3] + e1[2] * (edge[4] + node0)  # p_4 sums to 1: node 0 added once
    expected = max_expected([node0, node1])
    got = cell_expected_latency(torch.tensor(ALPHA_2), torch.tensor(COSTS_2), nodes=2, rule="darts")
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert cell_expected_latency(torch.tensor(ALPHA_2), torch.tensor(COSTS_2), nodes=2).item() == pytest.approx(expected, rel=1e-6)


def reference_cell(alpha, costs, nodes, rule):
    """Algorithm 3 for one cell in plain Python floats, with the rule's normalisation."""
    node_latency, row = [], 0
    for j in range(nodes):
        rows = list(range(row, row + j + 2))
        row += j + 2
        if rule == "darts":
            p = [softmax(alpha[r]) for r in rows]
            strength = softmax([max(pk) for pk in p])
            weights = [[strength[k] * pk[o] for o in range(len(pk))] for k, pk in enumerate(p)]
        else:
            flat = softmax([a for r in rows for a in alpha[r]])
            n = len(alpha[0])
            weights = [flat[k * n : (k + 1) * n] for k in range(len(rows))]
        total = 0.0
        for k, r in enumerate(rows):
            for o in range(len(alpha[r])):
                total += weights[k][o] * (costs[r][o] + (node_latency[k - 2] if k >= 2 else 0.0))
        node_latency.append(total)
    return max_expected(node_latency)


@pytest.mark.parametrize("rule", ["darts", "idarts"])
def test_algorithm3_hand_computed_three_node_cell(rule):
    # 3 nodes, 3 ops: 2 + 3 + 4 = 9 edges
    alpha = [[0.3, -0.2, 0.0], [1.0, 0.1, -0.5], [0.0, 0.7, 0.2], [-0.4, 0.0, 0.9], [0.2, 0.2, -1.0],
             [0.5, -0.3, 0.1], [0.0, 0.0, 1.2], [-0.8, 0.4, 0.3], [0.6, 0.1, -0.1]]
    costs = [[1.0, 2.0, 0.1], [1.5, 3.0, 0.2], [0.8, 2.5, 0.1], [1.2, 2.2, 0.3], [0.9, 1.9, 0.1],
             [1.1, 2.4, 0.2], [1.3, 2.1, 0.1], [0.7, 2.6, 0.2], [1.4, 2.3, 0.3]]
    got = cell_expected_latency(torch.tensor(alpha, dtype=torch.float64), torch.tensor(costs, dtype=torch.float64), 3, rule)
    assert got.item() == pytest.approx(reference_cell(alpha, costs, 3, rule), rel=1e-9)


def deep_to_shallow(rule):
    """Equal op costs everywhere; α of node 1 before and after moving mass from input 2 (node 0) to input 0."""
    costs = torch.ones(5, 2, dtype=torch.float64)
    before = torch.zeros(5, 2, dtype=torch.float64)
    if rule == "darts":  # DARTS ranks edges by their strongest op: a peaked edge is a chosen edge
        before[4] = torch.tensor([2.0, 0.0])
        after = before.clone()
        after[4] = torch.tensor([0.0, 0.0])
        after[2] = torch.tensor([2.0, 0.0])
    else:
        before[4] = 1.0
        after = before.clone()
        after[4] = 0.0
        after[2] = 1.0
    return costs, before, after


@pytest.mark.parametrize("rule", ["darts", "idarts", "xdarts"])
def test_algorithm3_gradient_reaches_edge_choice(rule):
    costs, before, after = deep_to_shallow(rule)
    p_before = cell_expected_latency(before, costs, 2, rule)
    p_after = cell_expected_latency(after, costs, 2, rule)
    assert p_after.item() < p_before.item() - 1e-3  # the shallow input does not add node 0's latency
    alpha = before.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(cell_expected_latency(alpha, costs, 2, rule), alpha)
    assert grad[4].abs().sum() > 1e-3  # the deep edge's α gets a latency gradient although its ops cost the same
    assert grad[2].abs().sum() > 1e-3
    if rule != "darts":
        assert (grad[4] > 0).all() and (grad[2] < 0).all()
    else:  # more strength on the deep edge's strongest op raises P
        assert grad[4, 0] > 0 and grad[4, 1] < 0


@pytest.mark.parametrize("rule", ["darts", "idarts"])
def test_algorithm3_gradient_finite_differences_three_nodes(rule):
    torch.manual_seed(1)
    alpha = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    costs = torch.rand(9, 3, dtype=torch.float64) * 3
    (grad,) = torch.autograd.grad(cell_expected_latency(alpha, costs, 3, rule), alpha)
    eps = 1e-6
    for e in range(9):
        for o in range(3):
            up, down = alpha.detach().clone(), alpha.detach().clone()
            up[e, o] += eps
            down[e, o] -= eps
            numeric = (cell_expected_latency(up, costs, 3, rule) - cell_expected_latency(down, costs, 3, rule)) / (2 * eps)
            assert grad[e, o].item() == pytest.approx(numeric.item(), rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("rule", ["darts", "idarts"])
def test_algorithm3_masked_ops_are_absent(rule):
    """α pushed to -1e4 (tournament masks) gives the same P as the cell without those ops, and no gradient."""
    torch.manual_seed(2)
    alpha = torch.randn(9, 3)
    costs = torch.rand(9, 3) * 3
    masked = alpha.clone().requires_grad_(True)
    full = torch.where(torch.arange(3) == 2, torch.full_like(alpha, -1.0e4), masked)
    p = cell_expected_latency(full, costs, 3, rule)
    assert p.item() == pytest.approx(cell_expected_latency(alpha[:, :2], costs[:, :2], 3, rule).item(), rel=1e-5)
    p.backward()
    assert (masked.grad[:, 2] == 0).all() and masked.grad[:, :2].abs().sum() > 0


def test_algorithm3_gradient_matches_finite_differences_and_sign():
    torch.manual_seed(0)
    alpha = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    costs = torch.tensor([[1.0, 5.0]] * 5, dtype=torch.float64)  # op 1 is the costly one
    p = cell_expected_latency(alpha, costs, nodes=2)
    (grad,) = torch.autograd.grad(p, alpha)
    assert (grad[:, 1] > 0).all() and (grad[:, 0] < 0).all()  # more weight on the costly op -> larger P
    eps = 1e-6
    for e in range(5):
        bumped = alpha.detach().clone()
        bumped[e, 1] += eps
        numeric = (cell_expected_latency(bumped, costs, 2) - p.detach()) / eps
        assert grad[e, 1].item() == pytest.approx(numeric.item(), rel=1e-4, abs=1e-8)


def test_expected_latency_darts_on_template():
    darts = get_space("darts")
    template = darts.default_template("tiny")
    from nasdeploy.spaces.darts import cell_layouts, num_edges
    from nasdeploy.spaces.ops import OP_SPACES

    op_names = ["none"] + list(OP_SPACES[str(template.op_space)])
    table = hand_table("darts", template, lambda inst: 1.0 + inst.c_in / 16 + (inst.h * inst.w) / 1024)
    fixed = sum(table.lookup_ms(i) for i in fixed_instances(darts, template))
    n_edges = num_edges(template.nodes)
    zeros = torch.zeros(n_edges, len(op_names), requires_grad=True)
    p = expected_latency_darts(zeros, torch.zeros(n_edges, len(op_names)), op_names, template, table)
    p_cells = expected_latency_darts(zeros, torch.zeros(n_edges, len(op_names)), op_names, template, table, include_fixed=False)
    assert p.item() == pytest.approx(p_cells.item() + fixed, rel=1e-6) and p_cells.item() > 0
    # all weight on `none` costs nothing: only the fixed parts remain
    only_none = torch.full((n_edges, len(op_names)), -1e4)
    only_none[:, 0] = 1e4
    assert expected_latency_darts(only_none, only_none, op_names, template, table).item() == pytest.approx(fixed, rel=1e-5)
    # differentiable; pushing the most costly op up raises P
    p.backward()
    assert zeros.grad is not None and zeros.grad.abs().sum() > 0
    assert len(cell_layouts(template)) == template.layers


def test_algorithm3_from_stem_repeat_weights(tmp_path):
    """P from Table 4.6-style weights: unitless, no fixed parts, C_i = number of cells of each type."""
    import json

    from nasdeploy.errors import NasDeployError
    from nasdeploy.latency.stem_repeat import load_stem_repeat_weights

    path = tmp_path / "weights.json"
    path.write_text(json.dumps({"method": "stem-repeat", "ops": {
        "max_pool_3x3": {"weight": 0.1, "delta_ms": 1.0}, "sep_conv_3x3": {"weight": 0.6, "delta_ms": 6.0},
        "skip_connect": {"weight": 0.3, "delta_ms": 3.0}}}))
    weights = load_stem_repeat_weights(path)
    assert isinstance(weights, OpWeights) and weights.cost("sep_conv_3x3", None) == 0.6
    template = get_space("darts").default_template("tiny", nodes=2, layers=3)  # cells: normal, reduce, reduce
    op_names = ["max_pool_3x3", "sep_conv_3x3", "skip_connect"]
    alpha_n = [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.5, 0.0]]
    alpha_r = [[0.0, 0.0, 0.0]] * 5
    # idarts: one softmax over each node's 6 or 9 (edge, op) pairs
    w = softmax([0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    n0 = w[0] * 0.1 + w[1] * 0.6 + w[2] * 0.3 + w[3] * 0.1 + w[4] * 0.6 + w[5] * 0.3
    w = softmax([1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.5, 0.0])
    n1 = (w[0] * 0.1 + w[1] * 0.6 + w[2] * 0.3 + w[3] * 0.1 + w[4] * 0.6 + w[5] * 0.3
          + w[6] * (0.1 + n0) + w[7] * (0.6 + n0) + w[8] * (0.3 + n0))
    normal = max_expected([n0, n1])
    r0 = (0.1 + 0.6 + 0.3) / 3  # uniform α: each node's weights are uniform over its pairs
    r1 = (0.1 + 0.6 + 0.3) / 3 + r0 / 3
    reduce = max_expected([r0, r1])
    p = expected_latency_darts(torch.tensor(alpha_n), torch.tensor(alpha_r), op_names, template, None,
                               rule="idarts", source=weights)
    assert p.item() == pytest.approx(normal + 2 * reduce, rel=1e-6)
    # Eq. 4.1 with Table 4.7's δ = 0.05: the penalty is 0.05 · P, P a sum of normalised weights
    assert 0.05 * p.item() == pytest.approx(0.05 * (normal + 2 * reduce), rel=1e-6)
    # Algorithm 3's C_i of another network (the search network's: 5 normal, 2 reduction cells), hand-computed
    p_search = expected_latency_darts(torch.tensor(alpha_n), torch.tensor(alpha_r), op_names, template, None,
                                      rule="idarts", source=weights, cell_counts=(5, 2))
    assert p_search.item() == pytest.approx(5 * normal + 2 * reduce, rel=1e-6)
    assert cell_type_counts(template) == (1, 2)
    with pytest.raises(NasDeployError, match="no weight for op 'dil_conv_3x3'"):
        expected_latency_darts(torch.zeros(5, 1), torch.zeros(5, 1), ["dil_conv_3x3"], template, None, source=weights)
    (tmp_path / "lut.json").write_text(json.dumps({"space": "darts", "entries": {}}))
    with pytest.raises(NasDeployError, match="not a stem-repeat weights file"):
        load_stem_repeat_weights(tmp_path / "lut.json")


def test_expected_latency_darts_rule_on_template():
    """On a whole template P(α) = Σ over cells (at their own shapes) + fixed parts, for each rule's normalisation."""
    darts = get_space("darts")
    template = darts.default_template("tiny")
    from nasdeploy.spaces.darts import cell_layouts, edge_instance, num_edges

    op_names = ["max_pool_3x3", "sep_conv_3x3", "dil_conv_3x3"]
    table = hand_table("darts", template, lambda inst: 0.1 + inst.c_in * inst.h * inst.w / 1e4 * (1 + len(inst.op) % 3))
    fixed = sum(table.lookup_ms(i) for i in fixed_instances(darts, template))
    torch.manual_seed(3)
    alpha_n, alpha_r = torch.randn(num_edges(template.nodes), 3), torch.randn(num_edges(template.nodes), 3)
    for rule in ("darts", "idarts"):
        expected = fixed
        for layout in cell_layouts(template):
            alpha = (alpha_r if layout.reduction else alpha_n).tolist()
            costs = [[table.lookup_ms(edge_instance(layout, k, op)) for op in op_names]
                     for j in range(template.nodes) for k in range(j + 2)]
            expected += reference_cell(alpha, costs, template.nodes, rule)
        got = expected_latency_darts(alpha_n, alpha_r, op_names, template, table, rule=rule)
        assert got.item() == pytest.approx(expected, rel=1e-5)


# --- sums and overhead -----------------------------------------------------------------------------


def test_predict_latency_is_sum_plus_overhead():
    darts = get_space("darts")
    template = darts.default_template("tiny")
    table = hand_table("darts", template, lambda inst: 0.5 if inst.op.startswith("sep") else 0.1)
    arch = darts.sample(template, random.Random(3))
    instances = darts.arch_op_instances(arch, template)
    total = sum(0.5 if i.op.startswith("sep") else 0.1 for i in instances if i.op not in ("none", "identity", "random"))
    assert predict_latency_ms(table, arch) == pytest.approx(total)
    table.overhead = {"coef": {"intercept": 0.7, "sum_ms": 1.2, "n_ops": 0.01}}
    count = sum(1 for i in instances if i.op not in ("none", "identity", "random"))
    assert predict_latency_ms(table, arch) == pytest.approx(0.7 + 1.2 * total + 0.01 * count)


def test_fit_overhead_recovers_coefficients():
    samples = [{"sum_ms": s, "n_ops": n, "measured_ms": 0.3 + 1.1 * s + 0.02 * n}
               for s, n in [(1, 10), (2, 14), (3, 11), (4, 20), (5, 13), (6, 17)]]
    model = fit_overhead(samples)
    assert model["coef"]["intercept"] == pytest.approx(0.3, abs=1e-9)
    assert model["coef"]["sum_ms"] == pytest.approx(1.1) and model["coef"]["n_ops"] == pytest.approx(0.02)
    assert model["rmse_ms"] == pytest.approx(0.0, abs=1e-9)
    # constant op count (a DARTS template): the feature is dropped, its effect lands in the intercept
    constant = [{**s, "n_ops": 8, "measured_ms": 0.5 + 0.9 * s["sum_ms"]} for s in samples]
    model = fit_overhead(constant)
    assert model["fitted_features"] == ["sum_ms"] and model["coef"]["n_ops"] == 0.0
    assert apply_overhead(model["coef"], 10.0, 8) == pytest.approx(0.5 + 9.0)
    # samples too alike to give a positive slope: slope 1, mean residual as intercept
    flat = [{"sum_ms": s, "n_ops": 8, "measured_ms": m} for s, m in [(1.0, 3.0), (1.1, 2.9), (1.2, 2.8)]]
    model = fit_overhead(flat)
    assert model["coef"]["sum_ms"] == 1.0 and model["coef"]["intercept"] == pytest.approx(1.8)


# --- layer-wise expectation and the cheapest network -----------------------------------------------


def test_expected_latency_layerwise_hand_probs():
    mobilenet = get_space("mobilenet")
    template = mobilenet.default_template("tiny")
    from nasdeploy.spaces.mobilenet import LayerwiseArch, layer_instance, layer_layouts

    cost = lambda inst: 0.1 * (1 + len(inst.op)) + inst.c_out / 100  # noqa: E731
    table = hand_table("mobilenet", template, cost, overhead={"coef": {"intercept": 0.2, "sum_ms": 1.5, "n_ops": 0.03}})
    layouts = layer_layouts(template)
    fixed = fixed_instances(mobilenet, template)
    fixed_sum = sum(table.lookup_ms(i) for i in fixed)
    # uniform probabilities: the mean cost of each layer's choices
    probs = [torch.full((len(l.choices),), 1.0 / len(l.choices)) for l in layouts]
    layer_sum = sum(sum(0.0 if c == "identity" else cost(layer_instance(l, c)) for c in l.choices) / len(l.choices) for l in layouts)
    layer_ops = sum(sum(c != "identity" for c in l.choices) / len(l.choices) for l in layouts)
    expected = 0.2 + 1.5 * (fixed_sum + layer_sum) + 0.03 * (len(fixed) + layer_ops)
    assert expected_latency_layerwise(probs, template, table).item() == pytest.approx(expected, rel=1e-5)
    # one-hot probabilities give exactly the architecture's prediction
    arch = mobilenet.sample(template, random.Random(1))
    one_hot = [torch.tensor([1.0 if c == choice else 0.0 for c in l.choices]) for l, choice in zip(layouts, arch.choices)]
    assert expected_latency_layerwise(one_hot, template, table).item() == pytest.approx(predict_latency_ms(table, arch), rel=1e-5)
    assert isinstance(arch, LayerwiseArch)


@pytest.mark.parametrize("space_name", ["darts", "mobilenet"])
def test_cheapest_latency_is_a_lower_bound(space_name):
    space = get_space(space_name)
    template = space.default_template("tiny")
    table = hand_table(space_name, template, lambda inst: 0.05 + inst.c_out * inst.h * inst.w / 1e5 * (3 if "5" in inst.op else 1))
    cheapest = cheapest_latency_ms(table, space_name, template)
    sampled = [predict_latency_ms(table, space.sample(template, random.Random(i))) for i in range(30)]
    assert cheapest <= min(sampled) + 1e-9
    assert cheapest > sum(table.lookup_ms(i) for i in fixed_instances(space, template)) - 1e-9


# --- fidelity statistics ----------------------------------------------------------------------------


def test_kendall_tau_and_fidelity_metrics():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    m = fidelity_metrics(predicted=[1.04, 2.0, 3.3, 4.0], measured=[1.0, 2.0, 3.0, 5.0])
    assert m["within_5pct"] == 0.5 and m["within_10pct"] == 0.75
    assert m["rmse_ms"] == pytest.approx(math.sqrt((0.04**2 + 0 + 0.3**2 + 1.0) / 4))
    assert m["rmse_pct"] == pytest.approx(math.sqrt((0.04**2 + 0 + 0.1**2 + 0.2**2) / 4) * 100)
