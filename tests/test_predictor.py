"""Predictor maths on hand-made tables: sums + overhead, Algorithm 3 and its gradient, layer-wise expectations."""

from __future__ import annotations

import math
import random

import pytest
import torch

from nasdeploy.latency.overhead import apply_overhead, fit_overhead
from nasdeploy.latency.predictor import (
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


# --- Algorithm 3 on a hand-computed cell: 2 nodes, 2 ops --------------------------------------------


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_algorithm3_hand_computed_cell():
    # edges: node 0 <- inputs 0, 1 (edges 0, 1); node 1 <- inputs 0, 1, node 0 (edges 2, 3, 4)
    alpha = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.5, 0.5], [-1.0, 1.0]])
    costs = torch.tensor([[1.0, 3.0], [2.0, 4.0], [1.0, 1.0], [0.5, 2.5], [1.0, 2.0]])
    edge = [sum(p * c for p, c in zip(softmax(a.tolist()), row.tolist())) for a, row in zip(alpha, costs)]
    node0 = edge[0] + edge[1]
    node1 = edge[2] + edge[3] + (edge[4] + node0)  # input 2 is node 0: its latency is added
    expected = sum(l * w for l, w in zip([node0, node1], softmax([node0, node1])))
    got = cell_expected_latency(alpha, costs, nodes=2)
    assert got.item() == pytest.approx(expected, rel=1e-6)


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
