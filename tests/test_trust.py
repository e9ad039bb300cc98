"""Latency tables a user can trust: fingerprints, the spot check (cached, refusing, recalibrating), finding this
machine's table, and ``export`` without ``--checkpoint``. Tables here are real tiny tables profiled on this machine."""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nasdeploy.errors import NasDeployError
from nasdeploy.hardware import MeasureMethod, fingerprint, fingerprint_id
from nasdeploy.hardware.fingerprint import machine_mismatches
from nasdeploy.latency import trust
from nasdeploy.latency.predictor import predict_latency_ms
from nasdeploy.latency.profiler import profile_space
from nasdeploy.latency.table import LatencyTable, default_table_path, load_table, save_table
from nasdeploy.latency.trust import TablePolicy, find_table, spot_check, table_for_search, table_mismatches
from nasdeploy.spaces.base import get_space

REPO = Path(__file__).resolve().parents[1]
TINY = get_space("darts").default_template("tiny")


@pytest.fixture(scope="module")
def table_path(tmp_path_factory) -> Path:
    """A tiny-template torch table profiled here (two rounds, so one noisy spell does not spoil an entry)."""
    root = tmp_path_factory.mktemp("lut")
    table = profile_space("darts", TINY, "torch", "cpu", MeasureMethod(warmup=2, repeats=10, rounds=2), root / "torch.json",
                          fit_samples=4)
    return Path(table.path)


def reshaped_copy(source: Path, target: Path, share: float = 0.95) -> Path:
    """The table with a wrong shape: its overhead model's intercept lowered by ``share`` of its lowest prediction among
    the spot check's networks, so every prediction loses the same milliseconds: the cheapest of those networks comes
    out 20x too low, the dearest (about 1.4x the cheapest on the tiny template) about 3x. No one factor (the drift)
    brings those eight within 10 %; refitting the overhead model (``--recalibrate``) does. (Every entry times one factor
    is no wrong shape: its predictions all move by about one factor, which the drift measures and calibrates.)"""
    table = load_table(source)
    space = get_space(table.space)
    template = space.template_from_dict(table.template)
    cheapest = min(predict_latency_ms(table, space.sample(template, random.Random(seed)), scaled=False)
                   for seed in trust.spot_check_seeds(trust.SPOT_NETS))
    table.overhead["coef"]["intercept"] -= share * cheapest
    save_table(table, target)
    return target


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "pipeline")}
    return subprocess.run([sys.executable, "-c", "from nasdeploy.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, timeout=300)


# ---------------------------------------------------------------- fingerprint


def test_fingerprint_records_caches_isa_flags_and_kernel_and_keeps_its_id():
    fp = fingerprint("cpu", threads=1)
    assert fp["kernel"] == platform.release() and isinstance(fp["isa_flags"], list) and isinstance(fp["cache_kb"], dict)
    if Path("/sys/devices/system/cpu/cpu0/cache").is_dir():
        assert fp["cache_kb"] and all(size > 0 for size in fp["cache_kb"].values())
    # the folder name comes from the CPU model, threads and a hash of the rest: stable for one machine, not for a twin VM
    assert fingerprint_id(fp) == fingerprint_id(fingerprint("cpu", threads=1))
    assert fingerprint_id(fp) != fingerprint_id(dict(fp, kernel="5.4.0-other"))
    assert machine_mismatches(fp, fingerprint("cpu", threads=1)) == []
    other_vm = dict(fp, kernel="5.4.0-other", cache_kb={"L1d": 32, "L2": 512})
    found = machine_mismatches(other_vm, fp)
    assert any(m.startswith("kernel ") and "5.4.0-other in the table" in m for m in found)
    assert any(m.startswith("cache sizes ") for m in found)
    older = {k: fp[k] for k in ("device", "cpu_model", "logical_cores", "threads", "machine", "os")}
    assert machine_mismatches(older, fp) == ["the table's fingerprint has no cache sizes, ISA flags, kernel (written by an older nasdeploy)"]


# ---------------------------------------------------------------- spot check


def test_spot_check_measures_reports_and_is_cached_per_table_and_boot(table_path, tmp_path, monkeypatch):
    first = spot_check(table_path, TablePolicy(tolerance=0.5))
    assert first["nets"] == trust.SPOT_NETS == 8 and not first["cached"] and first["passed"] and first["machine_match"]
    assert first["summary"] == (f"spot check: 8 nets, median |err| {first['median_abs_err_pct']:.1f} % after drift "
                                f"({first['raw_median_abs_err_pct']:.1f} % raw); drift {100 * (first['drift_ratio'] - 1):+.1f} %, "
                                f"predictions scaled by {first['drift_ratio']:.3f}")
    assert len(first["measured_ms"]) == 8 and first["seconds"] > 0 and first["mismatches"] == []
    assert len(first["anchors"]) == 4  # the tiny table's 4 fit networks are its reference networks
    # the drift is the references' time now over what the table predicts for them, not over their time at profiling
    # (which carries the fit's residual on each of them)
    assert first["drift_ratio"] == pytest.approx(statistics.median(a["now_ms"] / a["predicted_ms"] for a in first["anchors"]))
    table = load_table(table_path)
    space = get_space(table.space)
    assert [a["predicted_ms"] for a in first["anchors"]] == pytest.approx(
        [predict_latency_ms(table, space.arch_from_json(r["arch"]), scaled=False) for r in trust.reference_networks(table, 4)])
    assert [a["then_ms"] for a in first["anchors"]] == [r["median_ms"] for r in trust.reference_networks(table, 4)]
    assert not first["recalibrated"] and not first["trusted_override"]

    def no_measuring(*args, **kwargs):
        raise AssertionError("the cached spot check was measured again")

    monkeypatch.setattr(trust, "measure_spot_check", no_measuring)
    again = spot_check(table_path, TablePolicy(tolerance=0.5))
    assert again["cached"] and again["measured_ms"] == first["measured_ms"]
    # the shape is cached, the drift is not: the reference networks were timed again for this use
    assert again["drift_measured_at"] and [a["now_ms"] for a in again["anchors"]] != [a["now_ms"] for a in first["anchors"]]
    # a copy (as `nasdeploy run` keeps in its folder) has the same content, so the same cached check
    copy = tmp_path / "run" / "profile" / "table.json"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(table_path.read_bytes())
    assert spot_check(copy, TablePolicy(tolerance=0.5))["cached"]


def profiled_on_a_faster_machine(source: Path, target: Path, factor: float) -> Path:
    """The table as a machine ``factor`` times as fast would have profiled it: entries, fit networks and overhead model
    all scaled (pure drift: the same shape)."""
    from nasdeploy.latency.profiler import fit_table_overhead

    data = json.loads(source.read_text())
    for entry in data["entries"].values():
        for key in ("median_ms", "p10_ms", "p90_ms", "mean_ms"):
            entry[key] *= factor
    samples = [dict(s, median_ms=s["median_ms"] * factor) for s in data["overhead"]["samples"]]
    table = LatencyTable.from_json(data)
    fit_table_overhead(table, samples)
    save_table(table, target)
    return target


def test_pure_drift_is_measured_and_scales_predictions_but_is_never_refused(table_path, tmp_path):
    # The copy differs from the table by pure drift, so it must be judged as the table itself is: the table's own
    # check sets the bar (a tiny table profiled in a slow spell of a shared VM can miss by 45 %, and that is the
    # table's shape, not drift; CI saw it once).
    own = spot_check(table_path, TablePolicy(tolerance=1.0))
    tolerance = max(0.3, own["median_abs_err_pct"] / 100 + 0.2)
    drifted = load_table(profiled_on_a_faster_machine(table_path, tmp_path / "fast.json", factor=0.25))
    arch = get_space("darts").sample(TINY, random.Random(7))
    unscaled = predict_latency_ms(drifted, arch)
    result = spot_check(drifted, TablePolicy(tolerance=tolerance))
    # the machine runs ~4x slower than the copy says: drift ~+300 % over the table's own, raw errors ~-75 %
    assert result["passed"], (result["summary"], own["summary"])
    assert 2.5 < result["drift_ratio"] / own["drift_ratio"] < 6.0, (result["summary"], own["summary"])
    assert result["raw_median_abs_err_pct"] > 50 and result["median_abs_err_pct"] <= 100 * tolerance
    assert drifted.speed_ratio == result["drift_ratio"]
    assert predict_latency_ms(drifted, arch) == pytest.approx(unscaled * result["drift_ratio"])
    assert predict_latency_ms(drifted, arch, scaled=False) == pytest.approx(unscaled)
    assert f"predictions scaled by {result['drift_ratio']:.3f}" in result["summary"]


def test_reshaped_table_exits_2_naming_the_fixes_and_recalibrate_brings_it_back(table_path, tmp_path):
    from nasdeploy.spaces.record import ArchitectureRecord

    reshaped = reshaped_copy(table_path, tmp_path / "reshaped.json")  # every prediction lowered by one constant
    arch = tmp_path / "arch.json"
    ArchitectureRecord("darts", TINY, get_space("darts").sample(TINY, random.Random(0)), {}).save(arch)
    refused = run_cli("measure", str(arch), "--table", str(reshaped))
    assert refused.returncode == 2, refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith("error: latency table") and "does not predict this machine: spot check: 8 nets" in line
    assert "after drift" in line
    assert f"nasdeploy profile --device cpu --runtime torch --space darts" in line and f"--no-resume --out {reshaped}" in line
    assert "--recalibrate" in line and "--trust-table" in line and "Traceback" not in refused.stderr

    with pytest.raises(NasDeployError, match=r"> 10 % tolerance"):
        spot_check(reshaped)
    trusted = spot_check(reshaped, TablePolicy(trust=True))  # the failed check cached this boot, reported, not refused
    assert trusted["trusted_override"] and trusted["cached"] and "used anyway: --trust-table" in trusted["summary"]

    # a tiny eager-torch table fitted on 16 networks still misses them by 5-13 % (its own noise): judged at 20 %, which
    # the reshaped table misses by far
    fixed = spot_check(reshaped, TablePolicy(recalibrate=True, tolerance=0.2))
    assert fixed["recalibrated"] and fixed["passed"] and fixed["median_abs_err_pct"] <= 20.0
    assert "after --recalibrate on 16 nets" in fixed["summary"]
    note = load_table(reshaped).overhead["calibrations"][-1]
    assert note["networks"] == trust.RECALIBRATE_NETS and note["where"] == fingerprint_id(fingerprint("cpu", 1)) and note["when"]
    assert note["spot_check_before"].startswith("spot check: 8 nets") and note["previous_coef"]
    assert spot_check(reshaped, TablePolicy(tolerance=0.2))["passed"]  # the recalibrated table passes from now on (cached)


def test_a_table_profiled_here_this_boot_is_reported_but_never_refused(table_path, tmp_path):
    from nasdeploy.latency.table import mark_profiled_here

    reshaped = load_table(reshaped_copy(table_path, tmp_path / "own.json"))
    with pytest.raises(NasDeployError, match="does not predict this machine"):
        spot_check(reshaped)
    mark_profiled_here(reshaped)  # as the profiler does when it finishes a table
    result = spot_check(reshaped)
    assert not result["passed"] and result["own_table"] and "used: profiled here this boot" in result["summary"]
    reshaped.entries[next(iter(reshaped.entries))]["median_ms"] *= 2  # edited afterwards: no longer what was profiled
    with pytest.raises(NasDeployError, match="does not predict this machine"):
        spot_check(reshaped)


def test_another_onnxruntime_version_in_the_header_is_flagged(table_path, tmp_path):
    from nasdeploy.hardware import get_backend

    current = get_backend("onnxruntime", "cpu", MeasureMethod(threads=1)).versions()
    data = json.loads(table_path.read_text())
    data.update(runtime="onnxruntime", versions={**current, "onnxruntime": "1.0.0"})
    other = save_table(LatencyTable.from_json(data), tmp_path / "old-ort.json")
    table = load_table(other)
    found = table_mismatches(table, trust.runtime_versions(table))
    assert found == [f"onnxruntime {current['onnxruntime']} here, 1.0.0 in the table"]
    result = spot_check(table, TablePolicy(trust=True))  # trusted: not measured, but flagged all the same
    assert not result["machine_match"] and result["mismatches"] == found and result["trusted_override"]
    assert table_mismatches(load_table(table_path), threads=2) == ["threads 2 in this run, 1 in the table"]
    # the profiler does not continue a table made with other runtime versions: it starts afresh
    from nasdeploy.hardware import get_backend as backend_for
    from nasdeploy.latency.profiler import open_table

    backend = backend_for("onnxruntime", "cpu", MeasureMethod(warmup=2, repeats=10, rounds=2, threads=1))
    fresh = open_table(other, get_space("darts"), TINY, backend, "cpu", backend.method, resume=True)
    assert fresh.entries == {} and fresh.versions["onnxruntime"] == current["onnxruntime"]


def test_a_table_for_a_device_this_machine_lacks_needs_trust(table_path, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    data = json.loads(table_path.read_text())
    data["device"] = "cuda:0"
    gpu = save_table(LatencyTable.from_json(data), tmp_path / "gpu.json")
    with pytest.raises(NasDeployError, match=r"cannot spot-check latency table .*no CUDA device.*--trust-table") as info:
        spot_check(gpu)
    assert "\n" not in str(info.value)
    assert "not available here" in spot_check(gpu, TablePolicy(trust=True))["summary"]


# ---------------------------------------------------------------- this machine's table


def test_find_table_and_table_for_search_profile_into_a_table_root(tmp_path, monkeypatch):
    from nasdeploy.latency import profiler

    monkeypatch.setattr(profiler, "PROFILE_DEFAULTS", {"warmup": 1, "repeats": 3, "rounds": 1})
    monkeypatch.setattr(profiler, "DEFAULT_FIT_SAMPLES", 2)
    root = tmp_path / "tables"
    assert find_table("darts", TINY, "torch", "cpu", root=root) is None
    path = table_for_search("darts", TINY, "torch", "cpu", root=root)
    assert path == default_table_path("darts", TINY, "torch", "cpu", 1, root) and path.is_file()
    assert find_table("darts", TINY, "torch", "cpu", root=root) == path
    assert find_table("darts", None, "torch", "cpu", root=root) is None  # None: the cpu preset's template, not profiled here

    def no_profiling(*args, **kwargs):
        raise AssertionError("profiled although the table exists")

    monkeypatch.setattr(profiler, "profile_space", no_profiling)
    assert table_for_search("darts", TINY, "torch", "cpu", root=root) == path
    unfinished = json.loads(path.read_text())
    unfinished["entries"].pop(next(iter(unfinished["entries"])))
    path.write_text(json.dumps(unfinished))
    assert find_table("darts", TINY, "torch", "cpu", root=root) is None


# ---------------------------------------------------------------- export without --checkpoint


def _small_record(seed: int, **metrics):
    from nasdeploy.spaces.record import ArchitectureRecord

    space = get_space("darts")
    template = space.default_template("tiny", C=4, layers=3, input_size=16)
    return ArchitectureRecord("darts", template, space.sample(template, random.Random(seed)),
                              {"predicted_latency_ms": 1.0, "latency_budget_ms": 50.0, **metrics})


def test_export_without_checkpoint_takes_the_latest_search_and_retrains_it_once(tmp_path, monkeypatch):
    from nasdeploy.cli import app
    from nasdeploy.export import latest

    monkeypatch.chdir(tmp_path)
    _small_record(1).save(Path("runs/older/arch.json"))
    os.utime("runs/older/arch.json", (1, 1))
    _small_record(0).save(Path("runs/search/arch.json"))
    Path("runs/search/search_log.json").write_text(json.dumps({"preset": "tiny", "data": "digits", "seed": 0}))
    result = CliRunner().invoke(app, ["export", "model.onnx", "--no-compare-torch", "--warmup", "1", "--repeats", "3"])
    assert result.exit_code == 0, result.output
    assert "checkpoint: runs/search/train/model.pt (the latest search, runs/search/arch.json)" in result.output
    assert Path("model.onnx").is_file() and not Path("exports").exists()  # the file named, report beside it
    report = json.loads(Path("report.json").read_text())
    assert report["files"]["onnx"] == "model.onnx"
    assert report["files"]["checkpoint"] == "runs/search/train/model.pt" and report["parity"][0]["passed"]

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although a trained model exists")

    monkeypatch.setattr("nasdeploy.train.trainer.train_architecture", no_training)
    model, folder = latest.latest_trained_model()
    assert model == Path("runs/search/train/model.pt") and folder.name == "search"

    # a newer search with the paper preset is not retrained unasked: one line naming the train command
    _small_record(2).save(Path("runs/paper/arch.json"))
    Path("runs/paper/search_log.json").write_text(json.dumps({"preset": "paper", "data": "digits"}))
    with pytest.raises(NasDeployError, match=r"never retrained .*run 'nasdeploy train --arch runs/paper/arch.json "
                                             r"--data digits --preset paper .*--out runs/paper/train'") as info:
        latest.latest_trained_model()
    assert "\n" not in str(info.value)


def test_export_without_checkpoint_and_without_searches_names_the_commands(tmp_path, monkeypatch):
    from nasdeploy.export.latest import latest_trained_model

    monkeypatch.chdir(tmp_path)
    with pytest.raises(NasDeployError, match=r"no searched architecture under runs/ .*nasdeploy search --latency-budget"):
        latest_trained_model()
