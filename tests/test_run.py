"""``nasdeploy run`` end to end on the embedded digits with the tiny preset, and its stage bookkeeping."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nasdeploy.errors import NasDeployError
from nasdeploy.pipeline import STAGES, RunConfig, load_run_state, run_pipeline


def test_run_state_refuses_other_settings(tmp_path):
    config = RunConfig(out=tmp_path, preset="tiny")
    state = load_run_state(tmp_path, config)
    assert state["stages"] == {} and state["settings"]["preset"] == "tiny"
    (tmp_path / "run.json").write_text(json.dumps(state))
    assert load_run_state(tmp_path, config)["settings"] == state["settings"]
    with pytest.raises(NasDeployError, match="other settings .*latency_budget_ms"):
        load_run_state(tmp_path, RunConfig(out=tmp_path, preset="tiny", latency_budget_ms=5.0))


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """One machine table cache for the module: profiled once (tiny template), reused after."""
    return tmp_path_factory.mktemp("tables")


def test_profile_stage_fills_and_reuses_cache_and_derives_budget(tmp_path, tables):
    from nasdeploy.latency.predictor import cheapest_latency_ms
    from nasdeploy.pipeline import derive_budget, space_and_template, stage_profile

    config = RunConfig(out=tmp_path / "run", preset="tiny", table_root=tables)
    result = stage_profile(config, config.out)
    assert result.status == "done" and (config.out / "profile" / "table.json").is_file()
    assert Path(result.outputs["source"]).is_relative_to(tables)
    # the machine's table cache is reused: a second run folder copies it without profiling
    again = stage_profile(RunConfig(out=tmp_path / "run2", preset="tiny", table_root=tables), tmp_path / "run2")
    assert again.status == "done" and again.seconds < result.seconds
    assert stage_profile(config, config.out).status == "skipped"

    from nasdeploy.latency.table import load_table

    space, template = space_and_template(config)
    table = load_table(config.out / "profile" / "table.json", "darts", template)
    budget, source = derive_budget(table, space, template, seed=0)
    assert cheapest_latency_ms(table, "darts", template) <= budget
    assert source.startswith("derived: midway")


@pytest.mark.slow
def test_run_tiny_end_to_end_and_rerun_skips(tmp_path, tables):
    from nasdeploy.cli import app

    out = tmp_path / "run"
    config = RunConfig(out=out, preset="tiny", table_root=tables)
    state = run_pipeline(config)
    assert [state["stages"][s]["status"] for s in STAGES] == ["done"] * 4
    for path in ("profile/table.json", "search/arch.json", "train/model.pt", "train/metrics.json",
                 "export/model.onnx", "export/report.json", "export/report.md", "run.json"):
        assert (out / path).is_file(), path
    summary = state["summary"]
    assert summary["budget_ms"] == pytest.approx(state["budget_ms"]) and state["budget_source"].startswith("derived")
    assert summary["predicted_latency_ms"] > 0 and summary["measured_median_ms"] > 0
    assert summary["onnxruntime_median_ms"] > 0 and summary["torch_median_ms"] > 0
    assert summary["parity_max_abs_diff"] <= 1e-4 and 0 <= summary["test_accuracy"] <= 1
    saved = json.loads((out / "run.json").read_text())
    assert saved["summary"] == summary

    began = time.perf_counter()
    result = CliRunner().invoke(app, ["run", "--preset", "tiny", "--out", str(out)], env={})
    # the CLI uses the default table root, but the profile stage is already finished, so nothing is profiled
    assert result.exit_code == 0, result.output
    assert result.output.count("already finished") == 4
    assert "test accuracy" in result.output and "PyTorch" in result.output
    assert time.perf_counter() - began < 60
