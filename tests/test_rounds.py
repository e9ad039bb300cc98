"""More rounds when rounds often land in a slow phase (latency.rounds): the rule's arithmetic against hand-computed
values, and the profiler, network checks and export measurement following it on real torch runs whose timings are
replaced by a known two-speed pattern (the rule is about numbers, so the numbers are set; the runs are real)."""

from __future__ import annotations

import math
import random

import pytest

from nasdeploy.export.measure import best_round
from nasdeploy.hardware import Backend, MeasureMethod, Timing, get_backend
from nasdeploy.latency.profiler import measure_networks, network_input_shape, profile_space
from nasdeploy.latency.rounds import ALL_SLOW_RISK, rounds_decision, rounds_needed, slow_share
from nasdeploy.spaces.base import get_space


def item(*medians: float) -> dict:
    return {"rounds": [{"median_ms": m} for m in medians]}


def test_steady_rounds_mean_no_slow_share():
    assert slow_share([item(1.0, 1.02, 0.99)] * 20) == 0.0
    assert rounds_decision([item(1.0, 1.02, 0.99)] * 20, 3, 9)["rounds"] == 3


def test_one_slow_round_in_three_everywhere_gives_a_third():
    # likelihood n * log(3 p (1-p)^2) peaks at p = 1/3; the grid's step is 0.005
    assert slow_share([item(1.0, 1.5, 1.0)] * 30) == pytest.approx(1 / 3, abs=0.005)
    # (1/3)^k <= 0.01 first at k = 5 (log 0.01 / log(1/3) = 4.19)
    assert rounds_decision([item(1.0, 1.5, 1.0)] * 30, 3, 9)["rounds"] == 5


def test_two_slow_rounds_in_three_gives_two_thirds_and_the_ceiling():
    assert slow_share([item(1.5, 1.0, 1.5)] * 30) == pytest.approx(2 / 3, abs=0.005)
    assert rounds_decision([item(1.5, 1.0, 1.5)] * 30, 3, 9)["rounds"] == 9  # (2/3)^k <= 0.01 needs k = 12


def test_items_that_agree_count_as_always_fast_or_always_slow():
    # 10 items with one slow round of three, 30 that agree: maximise 30 log((1-p)^3 + p^3) + 10 log(3p(1-p)^2)
    grid = [i / 1000 for i in range(1, 960)]
    loglik = [30 * math.log((1 - p) ** 3 + p ** 3) + 10 * math.log(3 * p * (1 - p) ** 2) for p in grid]
    expected = grid[loglik.index(max(loglik))]
    assert slow_share([item(1.0, 1.5, 1.0)] * 10 + [item(2.0, 2.0, 2.0)] * 30) == pytest.approx(expected, abs=0.005)


def test_rounds_needed_bounds():
    assert rounds_needed(0.5, 3, 9) == 7  # 0.5^7 = 0.0078 <= 0.01 < 0.5^6
    assert 0.5 ** 7 <= ALL_SLOW_RISK < 0.5 ** 6
    assert rounds_needed(0.1, 3, 9) == 3  # two would do; never fewer than asked for
    assert rounds_needed(0.9, 3, None) == 3  # no ceiling above the rounds asked for: exactly those
    assert rounds_needed(0.0, 3, 9) == 3


def test_best_round_keeps_going_while_rounds_land_slow():
    # one item: p = j / k. After 3 rounds 2/3 (needs 12 -> 9), 4: 1/2 (7), 5: 3/5 (10 -> 9), 6: 1/2 (7),
    # 7: 4/7 (9), 8: 1/2 (7 <= 8): it stops after 8
    pattern = iter([1.5, 1.0, 1.5] + [1.0, 1.5] * 10)
    _, medians = best_round(lambda: Timing([next(pattern)] * 5), 3, 9)
    assert len(medians) == 8 and min(medians) == 1.0
    _, steady = best_round(lambda: Timing([1.0] * 5), 3, 9)
    assert len(steady) == 3
    _, fixed = best_round(lambda: Timing([1.0 + 0.5 * random.random()] * 5), 3)
    assert len(fixed) == 3


class TwoSpeedBackend(Backend):
    """A real torch backend whose every measurement runs, and whose reported time is then set: item i takes
    1 + 0.01 i ms, 1.5x that when the call lands in a slow phase (a seeded coin per call, slow with ``slow``)."""

    def __init__(self, inner: Backend, slow: float, seed: int = 0):
        super().__init__(inner.device, inner.method)
        self.inner, self.name, self.slow, self.rng, self.items = inner, inner.name, slow, random.Random(seed), 0

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

    def measure_onnx(self, onnx_path, input_shape):
        return self.inner.measure_onnx(onnx_path, input_shape)

    def versions(self):
        return self.inner.versions()


@pytest.fixture(scope="module")
def tiny():
    return get_space("darts").default_template("tiny", layers=2, nodes=2)


def backend(slow: float, max_rounds: int | None = 9) -> TwoSpeedBackend:
    method = MeasureMethod(warmup=0, repeats=2, threads=1, rounds=3, max_rounds=max_rounds)
    return TwoSpeedBackend(get_backend("torch", "cpu", method), slow)


def stopped_by_the_rule(share: float, rounds: int) -> bool:
    """More rounds than asked for, and no more than needed: the share's all-slow risk met, or the ceiling."""
    return rounds > 3 and (share ** rounds <= ALL_SLOW_RISK or rounds == 9) and share ** (rounds - 1) > ALL_SLOW_RISK


@pytest.mark.parametrize("slow", [0.0, 0.5])
def test_profile_takes_more_rounds_when_rounds_land_slow(tiny, tmp_path, slow):
    table = profile_space("darts", tiny, "torch", "cpu", backend(slow).method, tmp_path / "t.json", backend=backend(slow), fit_samples=3)
    taken = {len(e["rounds"]) for e in table.entries.values()} | {len(s["rounds"]) for s in table.overhead["samples"]}
    assert len(taken) == 1  # every op and fit network the same rounds
    rule = table.rounds_rule
    assert rule["rounds"] == taken.pop() and rule["base_rounds"] == 3 and rule["max_rounds"] == 9
    if slow:
        assert rule["slow_share"] > 0.3 and stopped_by_the_rule(rule["slow_share"], rule["rounds"])
    else:
        assert rule["slow_share"] == 0 and rule["rounds"] == 3
    assert "--max-rounds 9" in table.command
    fast = [1 + 0.01 * i for i in range(len(table.entries))]
    off = [m for m, f in zip((e["median_ms"] for e in table.entries.values()), fast) if m != pytest.approx(f)]
    # what the rule accepts: each item has <= 1 % chance of no round at speed (here 33 items, ~0.3 expected)
    assert len(off) <= (1 if slow else 0)


def test_network_checks_follow_the_rule(tiny):
    space = get_space("darts")
    archs = [space.sample(tiny, random.Random(seed)) for seed in range(4)]
    networks = [lambda arch=arch: space.build(arch, tiny) for arch in archs]
    shape = network_input_shape(tiny, 1)
    noisy = measure_networks(backend(0.5), networks, shape, [{} for _ in archs], "check")
    taken = {len(r["rounds"]) for r in noisy}
    assert len(taken) == 1 and stopped_by_the_rule(slow_share(noisy), taken.pop())
    fixed = measure_networks(backend(0.5, max_rounds=None), networks, shape, [{} for _ in archs], "check")
    assert {len(r["rounds"]) for r in fixed} == {3}
    assert [r["median_ms"] for r in noisy] == pytest.approx([1.0, 1.01, 1.02, 1.03])  # each at its fast speed
