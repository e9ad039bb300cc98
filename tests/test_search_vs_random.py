"""benchmarks/search_vs_random.py: the random draw respects the budget, best of N is chosen on validation accuracy only,
and the ``split:TRAIN,VAL:SPEC`` data it runs on keeps training, validation and test images apart."""

import importlib.util
import random
from pathlib import Path

import pytest

from nasdeploy.errors import NasDeployError
from nasdeploy.latency.predictor import predict_latency_ms, table_space_template
from nasdeploy.latency.table import load_table
from nasdeploy.train.data import load_dataset, load_validation

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("search_vs_random", REPO / "benchmarks" / "search_vs_random.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_random_draw_fits_the_budget_of_the_same_table():
    table = load_table(REPO / bench.DEFAULT_TABLE)
    space, template = table_space_template(table)
    predict = lambda arch: predict_latency_ms(table, arch, space, template)  # noqa: E731
    sample = lambda rng: space.sample(template, rng)  # noqa: E731
    budget, rule = bench.median_budget(predict, sample, samples=16)
    assert "median of 16" in rule
    kept, draws = bench.draw_within_budget(predict, sample, budget, 5, random.Random(0))
    assert len(kept) == 5 and draws >= 5
    for arch, ms in kept:
        assert ms <= budget and predict(arch) == pytest.approx(ms)
    again, _ = bench.draw_within_budget(predict, sample, budget, 5, random.Random(0))
    assert [ms for _, ms in again] == [ms for _, ms in kept]  # the seed fixes the draw
    with pytest.raises(NasDeployError, match="fit"):
        bench.draw_within_budget(predict, sample, 1e-6, 1, random.Random(0), max_draws=20)


def test_best_of_n_is_chosen_by_validation_not_test_accuracy():
    nets = [
        {"index": 0, "val_accuracy": 0.80, "test_accuracy": 0.99, "predicted_latency_ms": 1.0},
        {"index": 1, "val_accuracy": 0.90, "test_accuracy": 0.70, "predicted_latency_ms": 1.2},
        {"index": 2, "val_accuracy": 0.90, "test_accuracy": 0.95, "predicted_latency_ms": 1.1},
    ]
    assert bench.best_by_validation(nets)["index"] == 2  # tie on validation: the lower latency
    without_test = [{k: v for k, v in n.items() if k != "test_accuracy"} for n in nets]
    assert bench.best_by_validation(without_test)["index"] == 2  # test accuracy is not even read


def test_summary_rows_mean_and_spread_over_seeds():
    def net(i, val, test):
        return {"index": i, "val_accuracy": val, "test_accuracy": test, "predicted_latency_ms": 1.0}

    results = {
        "random": {"0": {"nets": [net(0, 0.9, 0.8), net(1, 0.8, 0.9)], "best_index": 0},
                   "1": {"nets": [net(0, 0.7, 0.7), net(1, 0.9, 0.9)], "best_index": 1}},
        "searched": {"icdarts": {"0": net(0, 0.9, 0.95), "1": net(0, 0.9, 0.85)}},
    }
    rows = {r["arm"]: r for r in bench.summarise(results, ["icdarts"], [0, 1])}
    assert rows["searched (icdarts)"]["test_accuracy_mean"] == pytest.approx(0.90)
    assert rows["searched (icdarts)"]["test_accuracy_std"] == pytest.approx(0.0707, abs=1e-4)
    assert rows["best of 2 random (by validation)"]["per_seed_test_accuracy"] == [0.8, 0.9]
    assert rows["mean of all 2 random"]["test_accuracy_mean"] == pytest.approx(0.825)
    assert rows["searched (icdarts)"]["paired_gain_mean"] == pytest.approx(0.05)  # (0.95 - 0.8 + 0.85 - 0.9) / 2
    del results["searched"]["icdarts"]["1"]  # seed 1 unfinished for the search: every arm is reported on seed 0 alone
    rows = {r["arm"]: r for r in bench.summarise(results, ["icdarts"], [0, 1])}
    assert rows["best of 2 random (by validation)"]["seeds"] == [0] and rows["searched (icdarts)"]["seeds"] == [0]


def test_split_spec_keeps_train_validation_and_test_apart():
    data = "split:360,360:digits"
    train, info = load_dataset(data, train=True)
    test, _ = load_dataset(data, train=False)
    val = load_validation(data)
    assert (len(train), len(val), len(test), info.name) == (360, 360, 1077, "digits")
    assert not set(train.indices) & set(val.indices)
    left_over = set(test.datasets[0].indices)
    assert not left_over & (set(train.indices) | set(val.indices))
    assert len(left_over) + len(train) + len(val) == 1497
    capped, _ = load_dataset("split:360,360,100:digits", train=False)
    same_train, _ = load_dataset("split:360,360,100:digits", train=True)
    assert len(capped) == 100 and same_train.indices == train.indices  # a shorter test curve, the same training images
    with pytest.raises(NasDeployError, match="no validation split"):
        load_validation("digits")
    with pytest.raises(NasDeployError, match="not split:TRAIN,VAL"):
        load_dataset("split:360:digits", train=True)
    with pytest.raises(NasDeployError, match="training images"):
        load_dataset("split:1400,400:digits", train=True)
