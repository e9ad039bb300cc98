"""Per-instance corrections of the overhead model: learned when the networks are enough, ignored when they do not help."""

from __future__ import annotations

import random

import pytest

from nasdeploy.latency.overhead import fit_overhead
from nasdeploy.latency.predictor import op_latency_ms, predict_latency_ms
from nasdeploy.latency.table import LatencyTable
from nasdeploy.spaces.base import get_space

ENTRY = {"p10_ms": 0.0, "p90_ms": 0.0, "iqr_ms": 0.0, "mean_ms": 0.0, "n": 1}


ENTRIES = {"a": 1.0, "b": 2.0, "c": 0.5, "d": 1.5}


def samples_with_counts(bias: dict[str, float], count: int = 60, noise: float = 0.0, seed: int = 0) -> list[dict]:
    """Networks of op instances a..d (0-3 of each, ENTRIES ms alone); in a network each costs its entry + bias."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        counts = {k: rng.randint(0, 3) for k in ENTRIES}
        measured = 0.2 + sum(n * (ENTRIES[k] + bias.get(k, 0.0)) for k, n in counts.items()) * (1 + rng.gauss(0, noise))
        out.append({"sum_ms": sum(n * ENTRIES[k] for k, n in counts.items()), "n_ops": sum(counts.values()),
                    "measured_ms": measured, "counts": counts})
    return out


def test_corrections_recover_in_network_costs():
    model = fit_overhead(samples_with_counts({"a": 0.5, "c": -0.3}))
    assert model["loo_rmse_pct"] < 0.1 * model["loo_rmse_pct_without_corrections"]
    coef, corrections = model["coef"], model["corrections"]
    for key, bias in {"a": 0.5, "b": 0.0, "c": -0.3, "d": 0.0}.items():
        # the network cost of one instance, b·(entry + κ) + c, is entry + bias whatever split b, c and κ take
        cost = coef["sum_ms"] * (ENTRIES[key] + corrections[key]) + coef["n_ops"]
        assert cost == pytest.approx(ENTRIES[key] + bias, abs=0.02)


def test_no_corrections_when_entries_already_add_up_or_networks_are_too_few():
    exact = fit_overhead(samples_with_counts({}, noise=0.01))
    assert "corrections" not in exact and exact["loo_rmse_pct_without_corrections"] == exact["loo_rmse_pct"]
    few = fit_overhead(samples_with_counts({"a": 0.5}, count=3))
    assert "corrections" not in few


def test_predictions_use_corrected_costs_everywhere():
    darts = get_space("darts")
    template = darts.default_template("tiny")
    table = LatencyTable(space="darts", template=template.to_dict(), runtime="torch", device="cpu",
                         fingerprint={"cpu_model": "hand", "threads": 1}, versions={}, method={"batch": 1})
    for inst in darts.op_instances(template):
        table.add(inst, {**ENTRY, "median_ms": 0.1})
    arch = darts.sample(template, random.Random(0))
    instances = darts.arch_op_instances(arch, template)
    table.overhead = {"coef": {"intercept": 0.0, "sum_ms": 1.0, "n_ops": 0.0}}
    plain = predict_latency_ms(table, arch)
    key = instances[0].key()
    table.overhead["corrections"] = {key: 0.05}
    assert op_latency_ms(table, instances[0]) == pytest.approx(0.15) and op_latency_ms(table, instances[0], corrected=False) == 0.1
    assert predict_latency_ms(table, arch) == pytest.approx(plain + 0.05 * sum(i.key() == key for i in instances))
    table.overhead["corrections"] = {key: -1.0}  # never below zero
    assert op_latency_ms(table, instances[0]) == 0.0


def test_profiler_measures_more_fit_networks_when_the_model_misses_them(tmp_path, monkeypatch):
    from nasdeploy.hardware import MeasureMethod
    from nasdeploy.latency import profiler

    template = get_space("darts").default_template("tiny", layers=2, nodes=2)
    method = dict(warmup=1, repeats=3, threads=1)
    monkeypatch.setattr(profiler, "MORE_FIT_LOO_PCT", 0.0)  # any leave-one-out error asks for more networks
    table = profiler.profile_space("darts", template, "torch", "cpu", MeasureMethod(**method), tmp_path / "more.json",
                                   fit_samples=4, more_fit_samples=8)
    samples = table.overhead["samples"]
    assert len(samples) == 8 and all("median_ms" in s and "counts" in s for s in samples)
    assert sorted(s["seed"] for s in samples)[4:] == list(range(profiler.MORE_FIT_SEED, profiler.MORE_FIT_SEED + 4))
    assert table.overhead["loo_rmse_pct"] is not None
    # a table asked for with fewer fit networks than the default is a quick one: never extended by default
    quick = profiler.profile_space("darts", template, "torch", "cpu", MeasureMethod(**method), tmp_path / "quick.json", fit_samples=4)
    assert len(quick.overhead["samples"]) == 4


def test_one_standard_error_rule_prefers_the_simplest_model_within_one_standard_error():
    import numpy as np

    from nasdeploy.latency.overhead import one_standard_error_choice

    # squared errors: "weak" the lowest (mean 4, std 2, se 1: threshold 5), "strong" mean 4.9 (within), "none" 16
    weak = np.sqrt(np.array([2.0, 6.0, 2.0, 6.0]))  # mean 4, std 2, se 2 / sqrt(4) = 1 -> threshold 5
    strong = np.sqrt(np.array([4.9, 4.9, 4.9, 4.9]))  # within one standard error: kept by the rule
    none = np.sqrt(np.array([16.0, 16.0, 16.0, 16.0]))
    choice, rmse = one_standard_error_choice([(None, none), ("strong", strong), ("weak", weak)])
    assert choice == "strong" and rmse == pytest.approx(np.sqrt(4.9) * 100)
    stricter = np.sqrt(np.array([5.5, 5.5, 5.5, 5.5]))  # mean 5.5 > 5: the lowest wins
    assert one_standard_error_choice([(None, none), ("strong", stricter), ("weak", weak)])[0] == "weak"


def test_ridge_weight_is_chosen_on_the_random_fit_networks():
    """With >= MIN_RANDOM_SAMPLES networks marked random, the weight with the lowest leave-one-out error on them is kept,
    whatever the others (extremes) prefer; without them, the one-standard-error rule on all networks."""
    import numpy as np

    from nasdeploy.latency import overhead

    # extremes whose in-network costs follow other biases than the random networks' (as the D-optimal ones did)
    extremes = samples_with_counts({"a": 0.9, "d": -0.6}, count=30, noise=0.002, seed=1)
    drawn = [dict(s, random=True) for s in samples_with_counts({"a": 0.5, "c": -0.3}, count=20, noise=0.002, seed=2)]
    model = fit_overhead(extremes + drawn)
    assert model["correction_choice"] == "lowest leave-one-out error on the 20 random fit networks"
    # the choice, recomputed from the candidates' leave-one-out errors on the random networks alone
    samples = extremes + drawn
    keys = sorted(ENTRIES)
    y = np.array([s["measured_ms"] for s in samples])
    base = np.column_stack([np.ones(len(y)), [s["sum_ms"] for s in samples], [s["n_ops"] for s in samples]])
    design = np.column_stack([base, [[s["counts"][k] for k in keys] for s in samples]])
    mse = {None: np.mean(overhead.loo_errors(base, y)[30:] ** 2)}
    for lam in overhead.CORRECTION_LAMBDAS:
        penalty = np.r_[np.zeros(3), np.full(len(keys), lam * 1e4)]
        mse[lam] = np.mean(overhead.loo_errors(design, y, penalty)[30:] ** 2)
    assert model.get("correction_lambda") == min(mse, key=lambda lam: (mse[lam], lam is not None))
    unmarked = fit_overhead(extremes + [{k: v for k, v in s.items() if k != "random"} for s in drawn])
    assert unmarked["correction_choice"] == "one-standard-error rule on all fit networks"


def test_profiler_adds_random_fit_networks_only_at_the_default_count():
    from nasdeploy.latency import profiler
    from test_predictor import hand_table

    darts = get_space("darts")
    template = darts.default_template("tiny")
    table = hand_table("darts", template, lambda inst: 0.1 + 0.01 * len(inst.op))
    small = profiler.FitNetworks(table, darts, template, 4)
    small.choose()
    assert len(small.records) == 4 and not any(r.get("random") for r in small.records)
    full = profiler.FitNetworks(table, darts, template, profiler.DEFAULT_FIT_SAMPLES)
    full.choose()
    drawn = [r for r in full.records if r.get("random")]
    assert len(full.records) == profiler.DEFAULT_FIT_SAMPLES + profiler.RANDOM_FIT_SAMPLES
    assert [r["seed"] for r in drawn] == list(range(profiler.RANDOM_FIT_SEED, profiler.RANDOM_FIT_SEED + profiler.RANDOM_FIT_SAMPLES))
    assert drawn[0]["arch"] == darts.arch_to_json(darts.sample(template, random.Random(profiler.RANDOM_FIT_SEED)))
