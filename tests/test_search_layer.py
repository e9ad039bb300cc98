"""The search layer: typed settings, the shared context, and a strategy added as one class + one registration."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from nasdeploy.latency.trust import TablePolicy
from nasdeploy.errors import NasDeployError
from nasdeploy.io import read_json
from nasdeploy.search.base import STRATEGIES, SearchRequest, SearchStrategy, get_strategy
from nasdeploy.search.context import COMMON_KEYS, SearchOutcome
from nasdeploy.search.settings import describe_settings, make_settings, setting
from nasdeploy.spaces.record import ArchitectureRecord
from test_icdarts_search import make_table


# ------------------------------------------------------------------------------------------ settings
@dataclass
class ToyConfig:
    samples: int = setting(4, "random architectures drawn")
    scale: float = setting(1.0, "a float")
    label: str | None = setting(None, "an optional string")
    verbose: bool = setting(False, "a flag")


TOY_PRESETS = {"paper": {"samples": 100}, "cpu": {"samples": 8}, "tiny": {}}


def test_settings_defaults_presets_and_types():
    config = make_settings("toy", ToyConfig, TOY_PRESETS, "cpu", {"scale": "2.5", "label": "x", "verbose": "true"})
    assert (config.samples, config.scale, config.label, config.verbose) == (8, 2.5, "x", True)
    assert make_settings("toy", ToyConfig, TOY_PRESETS, "paper", {"samples": "3"}).samples == 3
    assert make_settings("toy", ToyConfig, TOY_PRESETS, "tiny", {"label": "none"}).label is None
    with pytest.raises(NasDeployError, match=r"^toy has no setting 'bogus'; its 4 settings: nasdeploy strategies toy$"):
        make_settings("toy", ToyConfig, TOY_PRESETS, "tiny", {"bogus": 1})
    with pytest.raises(NasDeployError, match=r"^toy has no setting 'sample' \(did you mean 'samples'\?\); "):
        make_settings("toy", ToyConfig, TOY_PRESETS, "tiny", {"sample": 1})
    with pytest.raises(NasDeployError, match=r"toy setting samples='2.5' is not a valid int"):
        make_settings("toy", ToyConfig, TOY_PRESETS, "tiny", {"samples": "2.5"})
    with pytest.raises(NasDeployError, match="not a valid float"):
        make_settings("toy", ToyConfig, TOY_PRESETS, "tiny", {"scale": "fast"})
    with pytest.raises(NasDeployError, match="unknown preset 'huge' for toy; choose one of: paper, cpu, tiny"):
        make_settings("toy", ToyConfig, TOY_PRESETS, "huge", {})
    rows = {row.name: row for row in describe_settings(ToyConfig, TOY_PRESETS)}
    assert rows["samples"].presets == {"paper": 100, "cpu": 8} and rows["samples"].help == "random architectures drawn"


def test_every_registered_strategy_describes_its_settings():
    for name in STRATEGIES:
        strategy = get_strategy(name)
        rows = describe_settings(strategy.config_class, strategy.presets)
        assert rows and all(row.help for row in rows), f"{name}: every setting needs a help line"
        for preset in ("tiny", "cpu", "paper"):
            strategy.settings(preset, {})  # every preset builds a valid config


def run_cli(*args: str) -> subprocess.CompletedProcess:
    import nasdeploy

    root = str(Path(nasdeploy.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", "from nasdeploy.cli import main; main()", *args],
                          capture_output=True, text=True, env=env)


def test_cli_bad_setting_is_one_line_exit_2(tmp_path):
    out = run_cli("search", "--strategy", "senas", "--preset", "tiny", "--set", "epochs=many", "--out", str(tmp_path))
    assert out.returncode == 2
    lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
    assert "senas setting epochs='many' is not a valid int" in " ".join(lines)
    assert all("Traceback" not in line for line in lines)
    listing = run_cli("strategies", "icdarts")
    printed = listing.stdout + listing.stderr  # the rich console writes to stderr
    assert listing.returncode == 0 and "alpha_lr" in printed and "discretization" in printed


# ------------------------------------------------------------------------------------------ a plug-in strategy
@dataclass
class RandomConfig:
    samples: int = setting(4, "random architectures drawn; the cheapest under the budget wins")


class RandomSearch(SearchStrategy):
    """A complete strategy in a dozen lines: the context does table, budget, data, seeds, outputs."""

    name = "test-random"
    spaces = ("darts", "mobilenet")
    config_class = RandomConfig
    summary = "random sampling (test only)"

    def search(self, ctx, config):
        rng = ctx.rng(7)
        archs = [ctx.space.sample(ctx.template, rng) for _ in range(config.samples)]
        best = min(archs, key=ctx.predict_latency_ms)
        return SearchOutcome(arch=best, search_seconds=0.0, metrics={"samples": config.samples},
                             log={"sampled": [ctx.space.arch_to_json(a) for a in archs]})


@pytest.fixture(scope="module")
def registered():
    STRATEGIES.register("test-random")(RandomSearch)
    yield "test-random"
    STRATEGIES._items.pop("test-random")


@pytest.fixture(scope="module")
def lut(tmp_path_factory) -> Path:
    return make_table(tmp_path_factory.mktemp("lut") / "tiny.json")


def toy_request(out: Path, table: Path, budget: float | None = None, **options) -> SearchRequest:
    # hand-made table (prices by op, not by this machine): spot check skipped on purpose
    return SearchRequest(space="darts", out_dir=out, table_path=table, latency_budget_ms=budget, preset="tiny",
                         options=options, table_policy=TablePolicy(trust=True))


def test_plugin_strategy_gets_a_resolved_context_and_the_common_outputs(registered, lut, tmp_path):
    result = get_strategy(registered).run(toy_request(tmp_path / "out", lut, budget=10_000.0, samples="3"))
    record = ArchitectureRecord.load(result.arch_path)
    log = read_json(result.log_path)
    assert set(COMMON_KEYS) <= set(record.metrics) and set(COMMON_KEYS) <= set(log)
    assert log["strategy"] == "test-random" and log["settings"] == {"samples": 3}
    assert record.metrics["predicted_latency_ms"] <= 10_000.0 and record.metrics["params"] > 0
    assert log["result"]["metrics"]["samples"] == 3 and (tmp_path / "out" / "architecture.png").is_file()
    assert len(log["sampled"]) == 3 and log["result"]["arch"] in log["sampled"]


def test_context_prechecks_budget_and_setting_errors(registered, lut, tmp_path):
    strategy = get_strategy(registered)
    with pytest.raises(NasDeployError, match="below the cheapest darts network test-random can output"):
        strategy.run(toy_request(tmp_path / "out", lut, budget=1e-6))
    assert not (tmp_path / "out").exists()  # nothing written before the check
    with pytest.raises(NasDeployError, match="test-random searches the darts / mobilenet space"):
        strategy.run(SearchRequest(space="nas-bench", out_dir=tmp_path, preset="tiny"))
    with pytest.raises(NasDeployError, match="does not take a FLOPs budget"):
        strategy.run(SearchRequest(space="darts", out_dir=tmp_path, preset="tiny", flops_budget=1e6))
    with pytest.raises(NasDeployError, match="no CUDA device is visible") if not torch.cuda.is_available() else pytest.raises(NasDeployError):
        strategy.run(SearchRequest(space="darts", out_dir=tmp_path, preset="tiny", device="cuda:7"))


def test_checkpoint_is_bound_to_the_settings(registered, lut, tmp_path):
    from nasdeploy.search.context import build_context

    strategy = get_strategy(registered)
    ctx = build_context(strategy, toy_request(tmp_path, lut), strategy.settings("tiny", {"samples": 2}))
    ctx.checkpoint().save({"step": 5})
    assert ctx.checkpoint().load() == {"step": 5}
    other = build_context(strategy, toy_request(tmp_path, lut), strategy.settings("tiny", {"samples": 3}))
    with pytest.raises(NasDeployError, match="other settings"):
        other.checkpoint().load()
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(NasDeployError):
        ctx.checkpoint().load()


def test_two_views_are_independent_augmentations_without_labels(registered, lut, tmp_path):
    from nasdeploy.search.context import build_context

    strategy = get_strategy(registered)
    ctx = build_context(strategy, toy_request(tmp_path, lut), strategy.settings("tiny", {}))
    views = ctx.data.two_views()
    assert len(views) == len(ctx.data.train)
    ctx.seed_everything(1)
    a, b = views[0]
    assert a.shape == b.shape == ctx.data.train.tensors[0][0].shape
    assert not torch.equal(a, b)  # two draws of the augmentation
    ctx.seed_everything(1)
    again, _ = views[0]
    assert torch.equal(a, again)  # reproducible from the context's seed
    assert len(views[0]) == 2  # (view, view): no label is handed out
    # views stay in the images' normalised range (jitter runs on [0, 1], then the normalisation is re-applied)
    image = ctx.data.train.tensors[0][0]
    assert a.min() < 0 and image.min() < 0 and a.max() <= image.max() + 3.0
    assert ctx.data.flip is False  # digits are never mirrored


def test_a_refused_search_prints_its_error_without_the_info_lines_of_its_checks(registered, lut, tmp_path, capsys,
                                                                               monkeypatch):
    """The context's INFO lines (here: one logged while loading the data) are held until its checks pass."""
    import logging

    import nasdeploy.search.context as context
    from nasdeploy.progress import HoldingHandler, setup_logging

    original = context.load_search_data

    def loading(*args, **kwargs):
        logging.getLogger("nasdeploy.test").info("loading the search data")
        return original(*args, **kwargs)

    monkeypatch.setattr(context, "load_search_data", loading)
    setup_logging()
    try:
        with pytest.raises(NasDeployError, match="below the cheapest"):
            get_strategy(registered).run(toy_request(tmp_path / "refused", lut, budget=1e-6))
        assert "loading the search data" not in capsys.readouterr().err
        get_strategy(registered).run(toy_request(tmp_path / "accepted", lut, budget=10_000.0))
        assert "loading the search data" in capsys.readouterr().err  # shown once the checks pass
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, HoldingHandler)]:
            root.removeHandler(handler)


def test_search_without_table_uses_this_machines_table_from_the_table_root(registered, tmp_path):
    """``nasdeploy search --latency-budget B`` with no --table: the table profiled into the table root is found,
    named in arch.json, and spot-checked on this machine (issue: the design card's commands as written)."""
    from nasdeploy.hardware import MeasureMethod
    from nasdeploy.latency.profiler import profile_space
    from nasdeploy.latency.table import default_table_path
    from nasdeploy.spaces.base import get_space

    root = tmp_path / "tables"
    template = get_space("darts").default_template("tiny")
    path = default_table_path("darts", template, "torch", "cpu", 1, root)
    profile_space("darts", template, "torch", "cpu", MeasureMethod(warmup=2, repeats=10, rounds=2), path, fit_samples=4)
    request = SearchRequest(space="darts", out_dir=tmp_path / "out", latency_budget_ms=10_000.0, preset="tiny",
                            runtime="torch", table_root=root, options={"samples": 2},
                            table_policy=TablePolicy(tolerance=0.5))  # a tiny quick table: run's tiny-preset tolerance
    result = get_strategy(registered).run(request)
    metrics = ArchitectureRecord.load(result.arch_path).metrics
    assert metrics["table"] == str(path)
    assert metrics["spot_check"].startswith(f"spot check: {TablePolicy().nets} nets")
    assert read_json(result.log_path)["spot_check_detail"]["nets"] == TablePolicy().nets
