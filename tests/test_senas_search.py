"""SE-NAS end to end on the tiny preset: real supernet training on digits, real LUT predictor, resume."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from nasdeploy.latency.trust import TablePolicy
from nasdeploy.errors import NasDeployError
from nasdeploy.hardware.base import MeasureMethod
from nasdeploy.io import read_json
from nasdeploy.latency.predictor import cheapest_latency_ms, predict_latency_ms
from nasdeploy.latency.table import LatencyTable, save_table
from nasdeploy.search.base import SearchRequest, get_strategy
from nasdeploy.search.senas.run import SenasRun
from nasdeploy.search.shared.space_adapters import network_flops
from nasdeploy.spaces.base import get_space
from nasdeploy.spaces.record import ArchitectureRecord

TINY = {"population": 4, "generations": 1}


def hand_made_table(space_name, template, path):
    """A LUT whose entries are a deterministic function of each op's FLOPs (0.05 ms + 1 ms per MFLOP)."""
    from nasdeploy.spaces.flops import count_flops

    space = get_space(space_name)
    table = LatencyTable(space=space_name, template=template.to_dict(), runtime="torch", device="cpu",
                         fingerprint={}, versions={}, method=MeasureMethod().to_dict())
    for inst in space.op_instances(template):
        flops = count_flops(space.build_op(inst), (1, inst.c_in, inst.h, inst.w))
        ms = 0.0 if inst.op in ("identity", "none") else 0.05 + flops / 1e6
        table.add(inst, {"median_ms": ms, "p10_ms": ms, "p90_ms": ms, "iqr_ms": 0.0, "n": 1})
    save_table(table, path)
    return table


@pytest.fixture(scope="module")
def mobilenet_lut(tmp_path_factory):
    space = get_space("mobilenet")
    template = space.default_template("tiny")
    path = tmp_path_factory.mktemp("lut") / "mobilenet-tiny.json"
    table = hand_made_table("mobilenet", template, path)
    return path, table, space, template


def request_for(out_dir, table_path=None, **kwargs):
    options = dict(TINY)
    options.update(kwargs.pop("options", {}))
    # hand-made tables price ops by FLOPs, not by this machine: their spot check is skipped on purpose
    return SearchRequest(space=kwargs.pop("space", "mobilenet"), out_dir=out_dir, table_path=table_path,
                         preset="tiny", seed=kwargs.pop("seed", 0), options=options, table_policy=TablePolicy(trust=True), **kwargs)


def probe_costs(space_name, template, table=None, config=None):
    """The strategy's own path costs, without loading data or building a supernet."""
    from nasdeploy.search.shared.paths import PathCosts
    from nasdeploy.search.shared.space_adapters import make_adapter, search_template_for

    adapter = make_adapter(space_name, search_template_for(get_space(space_name), template, 10, 3), template, table, config)
    return PathCosts(adapter.paths, adapter.flops, adapter.latency, adapter.predict_latency)


def test_search_meets_latency_and_flops_budgets(tmp_path, mobilenet_lut):
    path, table, space, template = mobilenet_lut
    cheapest = cheapest_latency_ms(table, "mobilenet", template)
    costs = probe_costs("mobilenet", template, table)
    paths = costs.paths
    largest = max(costs.latency_ms(paths.sample(paths.candidates, random.Random(i))) for i in range(20))
    budget = cheapest + 0.3 * (largest - cheapest)
    flops_budget = costs.cheapest_value(paths.candidates, "flops") * 1.5
    result = get_strategy("senas").run(request_for(tmp_path / "out", path, latency_budget_ms=budget, flops_budget=flops_budget))

    record = ArchitectureRecord.load(result.arch_path)
    m = record.metrics
    assert m["predicted_latency_ms"] <= budget
    assert m["predicted_latency_ms"] == pytest.approx(predict_latency_ms(table, record.arch, space, template))
    assert m["flops"] <= flops_budget
    assert m["flops"] == network_flops(space, record.arch, template)  # per-layer FLOPs table is exact
    assert m["latency_budget_ms"] == budget and m["table"] == str(path)
    assert record.template.to_dict() == template.to_dict()

    log = read_json(result.log_path)
    stage = log["stages"][0]
    assert len(stage["removed"]) == 3  # tiny preset: k = 3
    assert stage["space_size_after"] < stage["space_size_before"]
    assert {"SI", "SC", "S"} <= set(stage["scores"][0])
    assert (tmp_path / "out" / "architecture.png").stat().st_size > 1000
    assert (tmp_path / "out" / "checkpoint.pt").is_file()
    # every evaluated candidate of the evolutionary search met both budgets
    state = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=False)["state"]["search"]
    evaluated = list(state.evolution.fitness)
    assert evaluated
    assert all(costs.latency_ms(p) <= budget and costs.flops(p) <= flops_budget for p in evaluated)


def test_impossible_latency_budget_fails_before_training(tmp_path, mobilenet_lut):
    path, table, space, template = mobilenet_lut
    cheapest = cheapest_latency_ms(table, "mobilenet", template)
    with pytest.raises(NasDeployError, match=f"{cheapest:.4f} ms"):
        get_strategy("senas").run(request_for(tmp_path, path, latency_budget_ms=cheapest * 0.5))
    assert not (tmp_path / "checkpoint.pt").exists()


def test_impossible_flops_budget_names_smallest(tmp_path):
    with pytest.raises(NasDeployError, match="the smallest has"):
        get_strategy("senas").run(request_for(tmp_path, flops_budget=1000.0))
    assert not (tmp_path / "checkpoint.pt").exists()


# T = 40 merges pairs of layers, so stage 1 trains partial models that the checkpoint must restore
RESUME_OPTIONS = {"epochs": 2, "generations": 2, "shrink_stages": 2, "merge_threshold": 40}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    return get_strategy("senas").run(request_for(tmp_path_factory.mktemp("straight"), options=RESUME_OPTIONS))


@pytest.mark.parametrize("kill_after", [2, 4])
def test_resume_ends_with_same_architecture(tmp_path, monkeypatch, straight_run, kill_after):
    calls = {"n": 0}
    original = SenasRun.save

    def killed_after_checkpoint(self, state):
        original(self, state)
        calls["n"] += 1
        if calls["n"] == kill_after:
            raise KeyboardInterrupt  # a kill right after a checkpoint: 2 = first stage + shrink, 4 = second shrink

    monkeypatch.setattr(SenasRun, "save", killed_after_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        get_strategy("senas").run(request_for(tmp_path, options=RESUME_OPTIONS))
    monkeypatch.setattr(SenasRun, "save", original)
    resumed = get_strategy("senas").run(request_for(tmp_path, options=RESUME_OPTIONS, resume=True))

    a, b = read_json(straight_run.arch_path), read_json(resumed.arch_path)
    assert a["arch"] == b["arch"]
    assert a["metrics"]["supernet_accuracy"] == b["metrics"]["supernet_accuracy"]
    log = read_json(straight_run.log_path)
    assert log["stages"] == read_json(resumed.log_path)["stages"]
    assert log["final_child_spaces"], "expected merged child spaces with T = 40"
    assert 0.0 <= log["final_supernet_accuracy"] <= 1.0


def test_resume_with_other_settings_is_refused(tmp_path, straight_run):
    import shutil

    shutil.copy(straight_run.arch_path.parent / "checkpoint.pt", tmp_path / "checkpoint.pt")
    with pytest.raises(NasDeployError, match="other settings"):
        get_strategy("senas").run(request_for(tmp_path, options={**RESUME_OPTIONS, "shrink_k": 1}, resume=True))


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(NasDeployError, match="drop --resume"):
        get_strategy("senas").run(request_for(tmp_path, resume=True))


def test_unknown_option_is_rejected(tmp_path):
    with pytest.raises(NasDeployError, match=r"senas has no setting 'delta'.*; its \d+ settings: nasdeploy strategies senas$"):
        get_strategy("senas").run(request_for(tmp_path, options={"delta": 0.1}))


@pytest.mark.parametrize("cell", ["paper", "two-inputs"])
def test_darts_edgewise_search_under_flops_budget(tmp_path, cell):
    space = get_space("darts")
    template = space.default_template("tiny")
    options = {"steps_per_epoch": 2, "val_samples": 16, "population": 3, "darts_cell": cell}
    costs = probe_costs("darts", template, config=SimpleNamespace(darts_cell=cell))
    paths = costs.paths
    # a budget between the cheapest and a typical path: binding, yet reachable
    typical = sorted(costs.flops(paths.sample(paths.candidates, random.Random(i))) for i in range(20))[10]
    smallest = costs.cheapest_value(paths.candidates, "flops")
    budget = smallest + 0.5 * (typical - smallest)
    result = get_strategy("senas").run(request_for(tmp_path / "out", space="darts", flops_budget=budget, options=options))
    record = ArchitectureRecord.load(result.arch_path)
    genotype = record.arch
    if cell == "two-inputs":
        assert all(len(node) == 2 for node in genotype.normal + genotype.reduce)  # two inputs per node
    else:  # §3.5: every non-none edge of the path; a node whose edges are all none keeps one none edge
        assert any(len(node) != 2 for node in genotype.normal + genotype.reduce)
        assert all(op != "none" or len(node) == 1 for node in genotype.normal + genotype.reduce for op, _ in node)
    assert record.metrics["flops"] <= budget
    assert record.metrics["flops"] == network_flops(space, genotype, template)
    log = read_json(result.log_path)
    assert len(log["stages"][0]["removed"]) == 3
    # §4.1: the supernet trains on the training split minus the held-out 20 % (tiny preset)
    assert log["split"]["held_out_images"] == round(0.2 * 1497)
    assert log["split"]["train_images"] == 1497 - log["split"]["held_out_images"]
    assert log["stop_reason"].startswith("shrink_stages = 1")
    assert (tmp_path / "out" / "architecture.png").is_file()


def test_cli_search_senas_impossible_budget_exits_2(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import nasdeploy

    root = str(Path(nasdeploy.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", "from nasdeploy.cli import main; main()", "search", "--strategy", "senas", "--space", "mobilenet",
         "--preset", "tiny", "--flops-budget", "1k", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env,
    )
    assert out.returncode == 2, out.stderr
    assert "smallest has" in out.stderr and "FLOPs" in out.stderr
