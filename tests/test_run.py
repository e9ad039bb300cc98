"""``nasdeploy run`` end to end on the embedded digits with the tiny preset, and its stage bookkeeping."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nasdeploy.errors import NasDeployError
from nasdeploy.pipeline import SPOT_CHECK_TOLERANCE, STAGES, RunConfig, load_run_state, run_pipeline


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


def test_profile_stage_fills_and_reuses_cache_and_derives_budget(tmp_path, tables, monkeypatch):
    from nasdeploy.latency.predictor import cheapest_latency_ms
    from nasdeploy.pipeline import derive_budget, space_and_template, stage_profile

    from nasdeploy.latency import profiler

    config = RunConfig(out=tmp_path / "run", preset="tiny", table_root=tables)
    result = stage_profile(config, config.out)
    assert result.status == "done" and (config.out / "profile" / "table.json").is_file()
    source = Path(result.outputs["source"])
    assert source.is_relative_to(tables) and source.is_file()
    assert result.outputs["spot_check"]["summary"].startswith("spot check: 8 nets, median |err| ")

    # the machine's table cache is reused: a second run folder copies it without profiling (and without measuring
    # the spot check again: it is cached for this table and boot)
    def no_profiling(*args, **kwargs):
        raise AssertionError("profiled although the machine's table cache holds the table")

    monkeypatch.setattr(profiler, "profile_space", no_profiling)
    again = stage_profile(RunConfig(out=tmp_path / "run2", preset="tiny", table_root=tables), tmp_path / "run2")
    assert again.status == "done" and again.outputs["source"] == str(source) and again.outputs["spot_check"]["cached"]
    assert (tmp_path / "run2" / "profile" / "table.json").read_bytes() == (config.out / "profile" / "table.json").read_bytes()
    assert json.loads(source.read_text())["entries"] == json.loads((tmp_path / "run2" / "profile" / "table.json").read_text())["entries"]
    assert stage_profile(config, config.out).status == "skipped"
    monkeypatch.undo()

    from nasdeploy.latency.table import load_table

    space, template = space_and_template(config)
    table = load_table(config.out / "profile" / "table.json", "darts", template)
    budget, source = derive_budget(table, space, template, seed=0)
    assert cheapest_latency_ms(table, "darts", template) <= budget
    assert source.startswith("derived: lower quartile of 32 random architectures")
    # a quarter of the (same, seeded) random architectures are predicted within the budget, the rest above
    from nasdeploy.latency.predictor import predict_latency_ms

    rng = random.Random(0)
    predictions = [predict_latency_ms(table, space.sample(template, rng), space, template) for _ in range(32)]
    assert sum(p <= budget for p in predictions) in range(8, 17)  # ties at the quartile may add a few
    assert derive_budget(table, space, template, seed=0) == (budget, source)  # deterministic


def test_cpu_preset_scales_retraining_epochs_by_network_cost():
    from nasdeploy.pipeline import CPU_TRAIN_EPOCH_MACS, run_train_epochs
    from nasdeploy.spaces.base import get_space
    from nasdeploy.spaces.record import ArchitectureRecord
    from nasdeploy.train.trainer import count_flops

    record = _small_record(0)
    flops = count_flops(record.build(), (1, 3, 16, 16))
    assert run_train_epochs(record, "cpu") == min(max(round(CPU_TRAIN_EPOCH_MACS / flops), 3), 30)
    assert run_train_epochs(record, "tiny") is None and run_train_epochs(record, "paper") is None
    space, template = get_space("darts"), get_space("darts").default_template("cpu")
    heavy = ArchitectureRecord("darts", template, space.sample(template, random.Random(0)), {})
    assert run_train_epochs(heavy, "cpu") < run_train_epochs(record, "cpu")  # a costlier network gets fewer epochs


def test_run_defaults_space_and_folder_follow_the_strategy():
    from nasdeploy.cli.run import default_run_folder, default_space

    assert (default_space(None), default_space("icdarts"), default_space("senas")) == ("darts", "darts", "mobilenet")
    with pytest.raises(NasDeployError, match="unknown search strategy 'evo'"):
        default_space("evo")
    assert default_run_folder("darts", None, "cpu") == Path("runs/darts-icdarts-cpu")
    assert default_run_folder("mobilenet", "senas", "tiny") == Path("runs/mobilenet-senas-tiny")


def _small_record(seed: int = 0):
    """A small searched-like DARTS record (C=4, 3 cells, 16 px): trains and exports in seconds."""
    from nasdeploy.spaces.base import get_space
    from nasdeploy.spaces.record import ArchitectureRecord

    space = get_space("darts")
    template = space.default_template("tiny", C=4, layers=3, input_size=16)
    return ArchitectureRecord("darts", template, space.sample(template, random.Random(seed)),
                              {"predicted_latency_ms": 1.0, "latency_budget_ms": 50.0})


def _weights(path: Path) -> dict:
    import torch

    return torch.load(path, weights_only=False)["state_dict"]


def _same(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_stage_skips_finished_and_redoes_corrupt_or_stale(tmp_path):
    from nasdeploy.pipeline import stage_train

    run = tmp_path / "run"
    _small_record(0).save(run / "search" / "arch.json")
    config = RunConfig(out=run, preset="tiny")
    assert stage_train(config, run).status == "done"
    model, checkpoint = run / "train" / "model.pt", run / "train" / "checkpoint.pt"
    first = _weights(model)
    assert stage_train(config, run).status == "skipped"

    model.write_bytes(b"truncated")  # a corrupt output is redone: resumed from the final checkpoint
    assert stage_train(config, run).status == "done"
    assert _same(_weights(model), first)

    model.write_bytes(b"truncated")  # corrupt checkpoint too: moved aside, trained again from scratch
    checkpoint.write_bytes(b"truncated")
    assert stage_train(config, run).status == "done"
    assert _same(_weights(model), first)  # seeded: the same weights as the first time
    assert (run / "train" / "checkpoint.pt.stale").read_bytes() == b"truncated"

    _small_record(1).save(run / "search" / "arch.json")  # a new search result makes the trained net stale
    assert stage_train(config, run).status == "done"
    assert not _same(_weights(model), first)
    assert stage_train(config, run).status == "skipped"

    longer = RunConfig(out=run, preset="tiny", train_epochs=2)  # other training settings: trained again
    assert stage_train(longer, run).status == "done"
    assert json.loads((run / "train" / "metrics.json").read_text())["config"]["epochs"] == 2
    assert stage_train(longer, run).status == "skipped"


def test_export_finished_checks_report_onnx_and_checkpoint(tmp_path):
    from nasdeploy.export.deploy import ExportOptions, export_checkpoint
    from nasdeploy.pipeline import export_finished
    from nasdeploy.train.trainer import TrainConfig, train_architecture

    config = TrainConfig(epochs=1, batch_size=16, max_batches=2, threads=1)
    train_architecture(_small_record(0), "digits", config, tmp_path / "train")
    checkpoint, out = tmp_path / "train" / "model.pt", tmp_path / "export"
    assert not export_finished(out, checkpoint)
    report = export_checkpoint(checkpoint, out / "model.onnx", None, ExportOptions(method={"warmup": 1, "repeats": 3}))
    assert len(report["checkpoint_sha256"]) == 64
    assert export_finished(out, checkpoint)

    onnx_bytes = (out / "model.onnx").read_bytes()
    (out / "model.onnx").write_bytes(onnx_bytes[: len(onnx_bytes) // 2])  # truncated graph
    assert not export_finished(out, checkpoint)
    (out / "model.onnx").write_bytes(onnx_bytes)
    assert export_finished(out, checkpoint)

    report_text = (out / "report.json").read_text()
    (out / "report.json").write_text(report_text[:100])
    assert not export_finished(out, checkpoint)
    (out / "report.json").write_text(report_text)

    train_architecture(_small_record(0), "digits", TrainConfig(**{**config.to_dict(), "seed": 1}), tmp_path / "train")
    assert not export_finished(out, checkpoint)  # retrained weights: the old export is stale


def test_run_tiny_end_to_end_and_rerun_skips(tmp_path, tables):
    """The whole pipeline with the tiny preset (about 20-35 s on 2 shared cores, so not marked slow)."""
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
    # the α-only genotype and the fix-up are reported apart; the fix-up only ever lowers the prediction
    assert summary["strategy"] == "icdarts" and summary["alpha_only_latency_ms"] > 0
    assert (summary["fixup_replacements"] == 0) == (summary["alpha_only_latency_ms"] <= summary["budget_ms"])
    assert [(row["key"], row.get("ms", row.get("count"))) for row in summary["fixups"]] == [
        ("alpha_only_latency_ms", summary["alpha_only_latency_ms"]), ("fixup_replacements", summary["fixup_replacements"])]
    saved = json.loads((out / "run.json").read_text())
    assert saved["summary"] == summary

    result = CliRunner().invoke(app, ["run", "--preset", "tiny", "--out", str(out)], env={})
    # the CLI uses the default table root, but the profile stage is already finished, so nothing is profiled
    assert result.exit_code == 0, result.output
    assert result.output.count("already finished") == 4
    assert "test accuracy" in result.output and "PyTorch" in result.output and "spot check: 8 nets" in result.output
    assert "α-discretised (before fix-up)" in result.output and "fix-up replacements" in result.output

    # the searched architecture measured on its table's own backend, next to its prediction
    arch, table_json = out / "search" / "arch.json", out / "profile" / "table.json"
    # the tiny preset's quick table is held to the tiny preset's spot-check tolerance, as `run` holds it
    tolerance = str(100 * SPOT_CHECK_TOLERANCE["tiny"])  # the option is in per cent
    measured = CliRunner().invoke(app, ["measure", str(arch), "--table", str(table_json), "--json", str(tmp_path / "m.json"),
                                        "--spot-check-tolerance", tolerance])
    assert measured.exit_code == 0, measured.output
    m = json.loads((tmp_path / "m.json").read_text())
    rounds = json.loads(table_json.read_text())["method"]["rounds"]
    from nasdeploy.latency.predictor import predict_latency_ms
    from nasdeploy.latency.table import load_table
    from nasdeploy.spaces.record import ArchitectureRecord

    # predicted in today's ms: the table's own prediction times the drift this measurement's spot check found
    lut = load_table(table_json)
    assert m["predicted_table_ms"] == pytest.approx(predict_latency_ms(lut, ArchitectureRecord.load(arch).arch))
    assert m["predicted_ms"] == pytest.approx(m["predicted_table_ms"] * m["speed_ratio"]) and m["speed_ratio"] > 0
    assert m["measured_p10_ms"] <= m["measured_median_ms"] <= m["measured_p90_ms"] and len(m["rounds"]) == rounds
    assert m["measured_median_ms"] == min(r["median_ms"] for r in m["rounds"])
    assert m["prediction_error"] == pytest.approx((m["predicted_ms"] - m["measured_median_ms"]) / m["measured_median_ms"])
    assert m["budget_ms"] == pytest.approx(state["budget_ms"]) and "LUT-predicted" in measured.output
    no_table = CliRunner().invoke(app, ["measure", str(arch)])
    assert no_table.exit_code != 0 and "pass --table LUT.json" in str(no_table.exception)
    other = json.loads(table_json.read_text())
    other["fingerprint"]["cpu_model"] = "Some Other CPU"
    (tmp_path / "other.json").write_text(json.dumps(other))
    refused = CliRunner().invoke(app, ["measure", str(arch), "--table", str(tmp_path / "other.json")])
    assert refused.exit_code != 0 and "--allow-other-machine" in str(refused.exception)

    # a damaged stage output is redone, and only that stage
    (out / "export" / "model.onnx").write_bytes(b"not onnx")
    state = run_pipeline(config)
    assert [state["stages"][s]["status"] for s in STAGES] == ["skipped", "skipped", "skipped", "done"]
    import onnx

    onnx.checker.check_model(onnx.load(str(out / "export" / "model.onnx")))
    assert state["summary"]["test_accuracy"] == summary["test_accuracy"]

    # an architecture searched for another budget (e.g. an older budget rule) is searched again
    from nasdeploy.pipeline import stage_search

    assert stage_search(config, out, state["budget_ms"]).status == "skipped"
    assert stage_search(config, out, state["budget_ms"] * 1.5).status == "done"
    record = json.loads((out / "search" / "arch.json").read_text())
    assert record["metrics"]["latency_budget_ms"] == pytest.approx(state["budget_ms"] * 1.5)


def test_tables_a_run_profiles_go_to_the_user_cache_not_the_checkout(tmp_path, monkeypatch):
    """``git status`` stays clean after ``nasdeploy run``: with no --table-root the table goes to the cache folder."""
    from nasdeploy.latency.table import TABLE_ROOT_ENV
    from nasdeploy.pipeline import stage_profile

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(TABLE_ROOT_ENV, raising=False)
    monkeypatch.setenv("NASDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    result = stage_profile(RunConfig(out=tmp_path / "run", preset="tiny"), tmp_path / "run")
    source = Path(result.outputs["source"])
    assert source.is_relative_to(tmp_path / "cache" / "latency_tables") and source.is_file()
    assert not (tmp_path / "latency_tables").exists()
    monkeypatch.setenv(TABLE_ROOT_ENV, str(tmp_path / "elsewhere"))
    from nasdeploy.latency.table import table_root

    assert table_root() == tmp_path / "elsewhere" and table_root(tmp_path / "given") == tmp_path / "given"


@pytest.mark.slow
def test_default_cpu_run_end_to_end(tmp_path):
    """The README's main job (cpu preset, embedded digits), profiling its own table: 6-8 min on 2 cores.

    Asserts what a user relies on: every stage ran, the retrained net learned the digits, the ONNX export
    matches PyTorch, the re-measured latency is close to the LUT's prediction, and the searched genotype
    was predicted within the derived budget.
    """
    out = tmp_path / "run"
    state = run_pipeline(RunConfig(out=out, preset="cpu", table_root=tmp_path / "tables"))
    assert [state["stages"][s]["status"] for s in STAGES] == ["done"] * 4
    summary = state["summary"]
    assert summary["test_accuracy"] >= 0.8
    assert summary["parity_max_abs_diff"] <= 1e-4
    assert summary["predicted_latency_ms"] <= summary["budget_ms"]
    assert abs(summary["predicted_latency_ms"] - summary["measured_median_ms"]) <= 0.25 * summary["measured_median_ms"]
    assert summary["onnxruntime_median_ms"] < summary["torch_median_ms"]
