"""The latency controller (search.shared.latency_control): dual ascent on λ, a toy constrained problem, fixed δ, resume."""

from __future__ import annotations

import pytest
import torch

from nasdeploy.errors import NasDeployError
from nasdeploy.search.shared.latency_control import ControllerConfig, LatencyController


def test_lambda_grows_over_budget_and_shrinks_to_zero_under():
    control = LatencyController(budget_ms=10.0, fixed_delta=None, p0=4.0,
                                config=ControllerConfig(step="adam", eta=2.0, margin=0.0, shrink=0.5))
    assert control.mode == "lagrangian" and control.coefficient == 0.0
    control.observe(12.0)  # g = 12/10 - 1 = 0.2
    assert control.coefficient == pytest.approx(0.4)
    control.observe(15.0)  # g = 0.5
    assert control.coefficient == pytest.approx(1.4)
    control.observe(8.0)  # g = -0.2, slack steps are eta * shrink = 1
    assert control.coefficient == pytest.approx(1.2)
    for _ in range(10):
        control.observe(2.0)  # g = -0.8: never below 0
    assert control.coefficient == 0.0
    assert [h["step"] for h in control.history] == list(range(1, 14))
    assert control.history[1] == {"step": 2, "lambda": pytest.approx(1.4), "discretised_ms": 15.0}
    # the penalty is λ·P/P(α_0): unitless, and it carries P's gradient
    control.observe(20.0)  # g = 1 -> λ = 2
    expected = torch.tensor(6.0, requires_grad=True)
    term = control.penalty(expected)
    term.backward()
    assert term.item() == pytest.approx(2.0 * 6.0 / 4.0) and expected.grad.item() == pytest.approx(0.5)


def test_margin_aims_under_the_budget():
    control = LatencyController(10.0, None, 1.0, ControllerConfig(step="adam", eta=1.0, margin=0.1))
    control.observe(9.5)  # under the budget but over its target 9.0: λ still grows
    assert control.target_ms == pytest.approx(9.0) and control.coefficient == pytest.approx(9.5 / 9.0 - 1)


def toy_search(control: LatencyController | None, steps: int, lr: float = 0.05):
    """α over 3 ops costing [1, 2, 3] on each of 6 edges; a cross-entropy pull toward the costly op (weights
    0.5-1.5 per edge), Adam. P(α) = Σ_edges softmax(α)·cost; the discretised latency is Σ cost[argmax α]."""
    costs = torch.tensor([1.0, 2.0, 3.0])
    pull = torch.tensor([0.5, 0.7, 0.9, 1.1, 1.3, 1.5])
    alpha = torch.zeros(6, 3, requires_grad=True)
    opt = torch.optim.Adam([alpha], lr=lr)
    trace = []
    for _ in range(steps):
        opt.zero_grad()
        p = torch.softmax(alpha, dim=1)
        loss = -(pull * torch.log(p[:, 2])).sum()  # CE toward the costly op
        if control is not None:
            loss = loss + control.penalty((p @ costs).sum())
        loss.backward()
        opt.step()
        discretised = float(costs[alpha.argmax(dim=1)].sum())
        if control is not None:
            control.observe(discretised)
        trace.append(discretised)
    return trace


def test_toy_problem_ends_under_budget_only_with_the_controller():
    budget, steps = 13.0, 200  # free: 6 x 3 = 18; cheapest 6
    assert toy_search(None, steps)[-1] == 18.0
    p0 = 6 * 2.0  # uniform α: expected cost 2 per edge
    control = LatencyController(budget, None, p0, ControllerConfig(step="adam", eta=2.0, margin=0.05))
    trace = toy_search(control, steps)
    assert max(trace[-50:]) <= budget  # under, and stays under: no chattering over the budget at the end
    assert control.coefficient > 0 and max(h["lambda"] for h in control.history) > 0
    # plain dual ascent (shrink = 1) on the same problem chatters: more steps over the budget
    plain = toy_search(LatencyController(budget, None, p0, ControllerConfig(step="adam", eta=2.0, margin=0.05, shrink=1.0)), steps)
    assert sum(d > budget for d in plain) > sum(d > budget for d in trace)


def test_fixed_delta_is_eq_4_1():
    control = LatencyController(budget_ms=10.0, fixed_delta=0.05, p0=123.0, config=ControllerConfig())
    assert control.mode == "fixed" and control.coefficient == 0.05
    expected = torch.tensor(7.0, requires_grad=True)
    term = control.penalty(expected)
    term.backward()
    assert term.item() == pytest.approx(0.05 * 7.0) and expected.grad.item() == pytest.approx(0.05)  # δ·P, P unnormalised
    control.observe(50.0)
    assert control.coefficient == 0.05 and control.history[-1]["lambda"] == 0.05  # no adaptation
    assert "delta fixed at 0.05" in control.describe() and "Eq. 4.1" in control.describe()


def test_no_budget_no_delta_is_off():
    control = LatencyController(None, None, 5.0, ControllerConfig())
    assert control.mode == "off" and control.coefficient == 0.0
    assert control.penalty(torch.tensor(3.0)).item() == 0.0
    control.observe(99.0)
    assert control.coefficient == 0.0 and "accuracy-only" in control.describe()
    with pytest.raises(NasDeployError, match="needs δ"):
        LatencyController(10.0, None, 5.0, ControllerConfig(mode="fixed"))
    with pytest.raises(NasDeployError, match="unknown latency control mode"):
        ControllerConfig(mode="pid")
    with pytest.raises(NasDeployError, match="shrink"):
        ControllerConfig(shrink=1.5)


def test_state_dict_round_trip_continues_identically():
    config = ControllerConfig(step="adam", eta=2.0, margin=0.05)
    p0 = 12.0
    whole = LatencyController(13.0, None, p0, config)
    toy_search(whole, 60)
    # the same run split in two: a controller rebuilt from the first half's state, α continued with it
    costs, pull = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 0.7, 0.9, 1.1, 1.3, 1.5])
    alpha = torch.zeros(6, 3, requires_grad=True)
    opt = torch.optim.Adam([alpha], lr=0.05)
    first = LatencyController(13.0, None, p0, config)

    def step(control):
        opt.zero_grad()
        p = torch.softmax(alpha, dim=1)
        (-(pull * torch.log(p[:, 2])).sum() + control.penalty((p @ costs).sum())).backward()
        opt.step()
        control.observe(float(costs[alpha.argmax(dim=1)].sum()))

    for _ in range(30):
        step(first)
    state = first.state_dict()
    resumed = LatencyController(13.0, None, p0, config)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    for _ in range(30):
        step(resumed)
    assert resumed.history == whole.history and resumed.coefficient == whole.coefficient
    assert "lambda <- max(0, lambda + eta * g)" in resumed.describe()
    with pytest.raises(NasDeployError, match="mode"):
        LatencyController(None, 0.1, p0, config).load_state_dict(state)


def test_decoupled_step_moves_each_coordinate_in_proportion_to_its_latency_gradient():
    """α ← α − lr·λ·∇P/max|∇P| after Adam's step: the dearest op sinks λ learning rates, the others in proportion
    (Adam's own normalisation would move every coordinate of one sign alike)."""
    control = LatencyController(10.0, None, 4.0, ControllerConfig(eta=2.0, margin=0.0))
    assert control.decoupled and control.penalty(torch.tensor(5.0, requires_grad=True)).item() == 0.0
    alpha = torch.zeros(2, 3, requires_grad=True)
    costs = torch.tensor([0.0, 1.0, 4.0])
    expected = (torch.softmax(alpha, dim=1) @ costs).sum()
    assert control.latency_gradient(expected, [alpha]) is None  # λ = 0: nothing to step
    control.observe(15.0)  # g = 0.5 -> λ = 1
    gradient = control.latency_gradient(expected, [alpha])
    # ∂P/∂α_o = softmax_o (c_o − E[c]) = (c_o − 5/3)/3 per edge
    assert torch.allclose(gradient[0], ((costs - 5 / 3) / 3).expand(2, 3))
    control.decoupled_step([alpha], gradient, lr=0.1)
    step = alpha.detach()[0]
    assert step[2].item() == pytest.approx(-0.1)  # the dearest op: λ·lr = 0.1 down
    assert step[1].item() == pytest.approx(0.1 * (5 / 3 - 1) / (4 - 5 / 3))  # in proportion to its gradient
    assert step[0].item() == pytest.approx(0.1 * (5 / 3) / (4 - 5 / 3))  # the cheapest rises most
    assert "decoupled latency step" in control.describe()
    adam = LatencyController(10.0, None, 4.0, ControllerConfig(step="adam", eta=2.0))
    adam.observe(15.0)
    assert adam.latency_gradient(expected, [alpha]) is None and adam.penalty(expected).item() > 0
    with pytest.raises(NasDeployError, match="unknown latency step"):
        ControllerConfig(step="sgd")
