"""Steady or unsteady machine (latency.rounds): the rule's arithmetic against hand-computed values, and the profiler,
network checks and export measurement following it on real torch runs whose reported times are then set to a known
two-speed pattern (the rule is about numbers, so the numbers are set; the runs are real)."""

from __future__ import annotations

import math
import random

import pytest

from nasdeploy.export.measure import best_round
from nasdeploy.hardware import Backend, MeasureMethod, Timing, get_backend
from nasdeploy.latency.profiler import measure_networks, network_input_shape, profile_space
from nasdeploy.latency.rounds import ALL_SLOW_RISK, mixing_risk, pick_round, rounds_decision, settle, slow_share
from nasdeploy.spaces.base import get_space
from test_profiler import CountingBackend, tiny  # noqa: F401  (tiny: the shared fixture, 2 cells of 2 nodes)


def item(*medians: float) -> dict:
    return {"rounds": [{"median_ms": m, "p10_ms": m, "p90_ms": m, "iqr_ms": 0.0, "mean_ms": m} for m in medians]}


def test_steady_rounds_mean_no_slow_share():
    assert slow_share([item(1.0, 1.02, 0.99)] * 20) == 0.0
    decision = rounds_decision([item(1.0, 1.02, 0.99)] * 20, 3, 9)
    assert decision["steady"] and decision["rounds"] == 3 and decision["statistic"] == "best"


def test_one_slow_round_in_three_everywhere_gives_a_third_and_unsteady():
    # likelihood n * log(3 p (1-p)^2) peaks at p = 1/3; the grid's step is 0.005
    assert slow_share([item(1.0, 1.5, 1.0)] * 30) == pytest.approx(1 / 3, abs=0.005)
    # (1/3)^3 = 0.037 > 0.01: three rounds could all land slow for 3.7 % of items
    decision = rounds_decision([item(1.0, 1.5, 1.0)] * 30, 3, 9)
    assert not decision["steady"] and decision["rounds"] == 9 and decision["statistic"] == "fast"
    assert decision["mixing_risk"] == pytest.approx(round(decision["slow_share"] ** 9, 4))


def test_mixing_risks_by_hand():
    # fast: no fast round among 9 = p^9; median of 9 (the 5th): in the minority state when >= 5 of 9 rounds are
    assert mixing_risk("fast", 0.5, 9) == pytest.approx(0.5 ** 9)
    assert mixing_risk("median", 0.5, 9) == pytest.approx(0.5)  # 256/512
    tail = sum(math.comb(9, j) * 0.3 ** j * 0.7 ** (9 - j) for j in range(5, 10))  # 0.0988
    assert mixing_risk("median", 0.3, 9) == pytest.approx(tail) and mixing_risk("median", 0.7, 9) == pytest.approx(tail)
    # the median of 8 is the 4th smallest: slow when >= 5 are slow, fast when >= 4 are fast
    assert mixing_risk("median", 0.3, 8) == pytest.approx(sum(math.comb(8, j) * 0.3 ** j * 0.7 ** (8 - j) for j in range(5, 9)))
    assert mixing_risk("median", 0.7, 8) == pytest.approx(sum(math.comb(8, j) * 0.3 ** j * 0.7 ** (8 - j) for j in range(4, 9)))


def test_unsteady_machines_keep_the_state_every_item_is_likelier_to_show():
    # p = 0.7: fast misses 0.7^9 = 4.0 % of items, the median 9.9 %; p = 0.8: 13.4 % against 2.0 %
    assert mixing_risk("fast", 0.7, 9) < mixing_risk("median", 0.7, 9)
    assert mixing_risk("fast", 0.8, 9) > mixing_risk("median", 0.8, 9)
    mostly_slow = [item(1.5, 1.5, 1.5, 1.0, 1.5)] * 40  # p = 0.8
    assert rounds_decision(mostly_slow, 3, 9)["statistic"] == "median"
    assert rounds_decision([item(1.5, 1.0, 1.5)] * 30 + [item(1.0, 1.0, 1.5)] * 30, 3, 9)["statistic"] == "fast"  # p = 1/2


def test_two_slow_rounds_in_three_gives_two_thirds():
    assert slow_share([item(1.5, 1.0, 1.5)] * 30) == pytest.approx(2 / 3, abs=0.005)


def test_items_that_agree_count_as_always_fast_or_always_slow():
    # 10 items with one slow round of three, 30 that agree: maximise 30 log((1-p)^3 + p^3) + 10 log(3p(1-p)^2)
    grid = [i / 1000 for i in range(1, 960)]
    loglik = [30 * math.log((1 - p) ** 3 + p ** 3) + 10 * math.log(3 * p * (1 - p) ** 2) for p in grid]
    expected = grid[loglik.index(max(loglik))]
    share = slow_share([item(1.0, 1.5, 1.0)] * 10 + [item(2.0, 2.0, 2.0)] * 30)
    assert share == pytest.approx(expected, abs=0.005)
    assert rounds_decision([item(1.0, 1.5, 1.0)] * 10 + [item(2.0, 2.0, 2.0)] * 30, 3, 9)["steady"] == (expected ** 3 <= ALL_SLOW_RISK)


def test_the_threshold_is_an_all_slow_risk_of_one_per_cent():
    # one slow round in k: p = 1/k. Three rounds steady while p^3 <= 0.01, i.e. p <= 0.215
    steady = [item(*([1.5] + [1.0] * 4))] * 20  # p = 0.2: 0.008
    unsteady = [item(*([1.5] + [1.0] * 3))] * 20  # p = 0.25: 0.0156
    assert rounds_decision(steady, 3, 9)["steady"] and not rounds_decision(unsteady, 3, 9)["steady"]
    assert rounds_decision(unsteady, 3, None)["steady"]  # no max_rounds above the rounds: the old rule, always
    assert rounds_decision(unsteady, 3, 3)["rounds"] == 3


def test_settle_keeps_the_best_the_median_or_the_median_fast_round():
    record = item(1.3, 1.0, 1.2, 1.25)
    assert settle({**record, "median_ms": 1.0}, "best")["median_ms"] == 1.0
    assert settle(record, "median")["median_ms"] == 1.2  # sorted 1.0, 1.2, 1.25, 1.3: the lower middle
    assert settle(item(1.3, 1.0, 1.2), "median")["median_ms"] == 1.2
    assert settle(item(1.3, 1.0, 1.2), "median")["statistic"] == "median"
    # fast: the rounds within 1.10x of the best (0.90: 0.90, 0.95, 0.97, 0.98), their lower middle 0.95
    two_speed = item(1.45, 0.97, 0.90, 1.50, 0.95, 1.40, 0.98)
    assert settle(two_speed, "fast")["median_ms"] == 0.95 and settle(two_speed, "fast")["statistic"] == "fast"
    assert settle(two_speed, "median")["median_ms"] == 0.98 and pick_round([1.45, 0.97, 0.90, 1.50, 0.95, 1.40, 0.98], "best") == 2
    assert pick_round([1.45, 0.97, 0.90, 1.50, 0.95, 1.40, 0.98], "fast") == 4


def test_best_round_takes_more_rounds_and_the_state_every_item_shows_when_unsteady():
    pattern = iter([1.5, 1.0, 1.5] + [1.0, 1.5, 1.5, 1.0, 1.5, 1.5])
    chosen, medians = best_round(lambda: Timing([next(pattern)] * 5), 3, 9)
    # p = 2/3 from the first three: no fast round in 9 has chance 2.6 %, a fast median 14.5 %: the fast state
    assert len(medians) == 9 and chosen.median == 1.0
    pattern = iter([1.5, 1.5, 1.5, 1.5, 1.0] + [1.5, 1.5, 1.0, 1.5])
    chosen, medians = best_round(lambda: Timing([next(pattern)] * 5), 5, 9)
    assert len(medians) == 9 and chosen.median == 1.5  # p = 0.8 from 5 rounds: a slow median is likelier (2.0 % vs 13.4 %)
    chosen, steady = best_round(lambda: Timing([1.0] * 5), 3, 9)
    assert len(steady) == 3 and chosen.median == 1.0
    values = iter([1.2, 1.0, 1.5])
    chosen, fixed = best_round(lambda: Timing([next(values)] * 5), 3)
    assert len(fixed) == 3 and chosen.median == 1.0  # no max_rounds: the best of the rounds asked for


class TwoSpeedBackend(CountingBackend):
    """A real torch backend whose every measurement runs, and whose reported time is then set: item i takes
    1 + 0.01 i ms, 1.5x that when the call lands in a slow phase (a seeded coin per call, slow with ``slow``)."""

    def __init__(self, inner: Backend, slow: float, seed: int = 0):
        super().__init__(inner)
        self.slow, self.rng, self.items = slow, random.Random(seed), 0

    def prepare(self, module, input_shape):
        measure, index = self.inner.prepare(module, input_shape), self.items
        self.items += 1

        def phased() -> Timing:
            measure()
            factor = 1.5 if self.rng.random() < self.slow else 1.0
            return Timing([(1 + 0.01 * index) * factor] * 3)
        return phased

    def measure_module(self, module, input_shape):
        return self.prepare(module, input_shape)()


def backend(slow: float, max_rounds: int | None = 9) -> TwoSpeedBackend:
    method = MeasureMethod(warmup=0, repeats=2, threads=1, rounds=3, max_rounds=max_rounds)
    return TwoSpeedBackend(get_backend("torch", "cpu", method), slow)


@pytest.mark.parametrize("slow", [0.0, 0.5])
def test_profile_takes_max_rounds_and_medians_when_unsteady(tiny, tmp_path, slow):
    table = profile_space("darts", tiny, "torch", "cpu", backend(slow).method, tmp_path / "t.json", backend=backend(slow), fit_samples=3)
    taken = {len(e["rounds"]) for e in table.entries.values()} | {len(s["rounds"]) for s in table.overhead["samples"]}
    assert taken == {9 if slow else 3}  # every op and fit network the same rounds
    rule = table.rounds_rule
    assert rule["rounds"] == (9 if slow else 3) and rule["base_rounds"] == 3 and rule["max_rounds"] == 9
    assert rule["steady"] is (not slow) and rule["statistic"] == ("fast" if slow else "best")
    assert "--max-rounds 9" in table.command
    for records in (list(table.entries.values()), table.overhead["samples"]):
        for record in records:
            ordered = sorted(r["median_ms"] for r in record["rounds"])
            fast = [m for m in ordered if m <= 1.1 * ordered[0]]
            assert record["median_ms"] == (fast[(len(fast) - 1) // 2] if slow else ordered[0])
            assert record["statistic"] == rule["statistic"]


def test_network_checks_follow_the_rule(tiny):
    space = get_space("darts")
    archs = [space.sample(tiny, random.Random(seed)) for seed in range(4)]
    networks = [lambda arch=arch: space.build(arch, tiny) for arch in archs]
    shape = network_input_shape(tiny, 1)
    noisy = measure_networks(backend(0.5), networks, shape, [{} for _ in archs], "check")
    assert {len(r["rounds"]) for r in noisy} == {9} and {r["statistic"] for r in noisy} == {"fast"}
    assert [r["median_ms"] for r in noisy] == pytest.approx([1.0, 1.01, 1.02, 1.03])  # every network at the fast speed
    fixed = measure_networks(backend(0.5, max_rounds=None), networks, shape, [{} for _ in archs], "check")
    assert {len(r["rounds"]) for r in fixed} == {3} and {r["statistic"] for r in fixed} == {"best"}
    steady = measure_networks(backend(0.0), networks, shape, [{} for _ in archs], "check")
    assert [r["median_ms"] for r in steady] == pytest.approx([1.0, 1.01, 1.02, 1.03]) and {len(r["rounds"]) for r in steady} == {3}


def test_reports_name_the_round_kept():
    from nasdeploy.export.measure import Measurement
    from nasdeploy.export.report import rounds_text

    method = MeasureMethod(rounds=3, max_rounds=9)
    steady = Measurement("onnxruntime", "cpu", (1, 3, 32, 32), Timing([1.0]), method, {}, {}, [1.0, 1.1, 1.05])
    unsteady = Measurement("onnxruntime", "cpu", (1, 3, 32, 32), Timing([1.0]), method, {}, {}, [1.0, 1.3, 1.2] * 3)
    slow = Measurement("onnxruntime", "cpu", (1, 3, 32, 32), Timing([1.3]), MeasureMethod(rounds=5, max_rounds=9), {}, {},
                       [1.3, 1.3, 1.3, 1.3, 1.0] + [1.3] * 4)
    assert steady.to_dict()["round_statistic"] == "best" and unsteady.to_dict()["round_statistic"] == "fast"
    assert slow.to_dict()["round_statistic"] == "median"  # p = 0.8 from its first 5 rounds
    assert rounds_text(steady.to_dict(), method.to_dict()) == "best of 3 round(s)"
    assert rounds_text(unsteady.to_dict(), method.to_dict()) == "median fast round of 9 (unsteady machine)"
    assert rounds_text(slow.to_dict(), slow.method.to_dict()) == "median round of 9 (unsteady machine)"
