"""Profiler, stem-repeat, validation and CLI on the DARTS tiny template with real torch and ONNX Runtime runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nasdeploy.errors import NasDeployError
from nasdeploy.hardware import Backend, MeasureMethod, get_backend
from nasdeploy.latency.predictor import predict_latency_ms
from nasdeploy.latency.profiler import profile_space
from nasdeploy.latency.table import load_table, save_table
from nasdeploy.spaces.base import get_space

FAST = dict(warmup=1, repeats=3, threads=1)
PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"


class CountingBackend(Backend):
    """A real backend that counts (and can stop after) its measurements."""

    def __init__(self, inner: Backend, stop_after: int | None = None):
        super().__init__(inner.device, inner.method)
        self.inner, self.name, self.calls, self.stop_after = inner, inner.name, 0, stop_after

    def measure_module(self, module, input_shape):
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt("interrupted")
        self.calls += 1
        return self.inner.measure_module(module, input_shape)

    def measure_onnx(self, onnx_path, input_shape):
        return self.inner.measure_onnx(onnx_path, input_shape)

    def versions(self):
        return self.inner.versions()


@pytest.fixture(scope="module")
def tiny():
    """The tiny preset cut to 2 cells of 2 nodes: every kind of op instance, few of each."""
    return get_space("darts").default_template("tiny", layers=2, nodes=2)


@pytest.fixture(scope="module")
def torch_table(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("lut") / "torch.json"
    return profile_space("darts", tiny, "torch", "cpu", MeasureMethod(**FAST), path, fit_samples=3)


def test_torch_profile_fills_every_instance(torch_table, tiny):
    darts = get_space("darts")
    keys = {inst.key() for inst in darts.op_instances(tiny)}
    assert set(torch_table.entries) == keys
    for entry in torch_table.entries.values():
        assert entry["n"] == 3 and entry["p10_ms"] <= entry["median_ms"] <= entry["p90_ms"] and entry["median_ms"] > 0
    overhead = torch_table.overhead
    assert len(overhead["samples"]) == 3 and overhead["coef"]["sum_ms"] > 0
    loaded = load_table(torch_table.path, "darts", tiny)
    assert loaded.entries == torch_table.entries and loaded.method["threads"] == 1
    assert loaded.command.startswith("nasdeploy profile --device cpu --runtime torch --space darts")
    arch = darts.sample(tiny, __import__("random").Random(0))
    assert predict_latency_ms(loaded, arch) > 0


def test_resume_skips_measured_entries(torch_table, tiny, tmp_path):
    raw = json.loads(torch_table.path.read_text())
    dropped = list(raw["entries"])[:2]
    for key in dropped:
        del raw["entries"][key]
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(raw))
    counting = CountingBackend(get_backend("torch", "cpu", MeasureMethod(**FAST)))
    table = profile_space("darts", tiny, "torch", "cpu", counting.method, path, backend=counting, fit_samples=3)
    assert counting.calls == 2  # only the two missing entries; the fit networks are kept
    assert set(table.entries) == set(torch_table.entries)


def test_interrupted_run_continues_where_it_stopped(tiny, tmp_path):
    path = tmp_path / "interrupted.json"
    total = len(get_space("darts").op_instances(tiny))
    first = CountingBackend(get_backend("torch", "cpu", MeasureMethod(**FAST)), stop_after=7)
    with pytest.raises(KeyboardInterrupt):
        profile_space("darts", tiny, "torch", "cpu", first.method, path, backend=first, fit_samples=0, save_every=3)
    saved = len(load_table(path).entries)
    assert saved == 6  # saved every 3 entries, the 7th was measured but not yet saved
    second = CountingBackend(get_backend("torch", "cpu", MeasureMethod(**FAST)))
    table = profile_space("darts", tiny, "torch", "cpu", second.method, path, backend=second, fit_samples=0)
    assert second.calls == total - saved and len(table.entries) == total


def test_resume_refuses_other_template(torch_table, tiny):
    other = get_space("darts").default_template("tiny", layers=2, nodes=2, input_size=16)
    with pytest.raises(NasDeployError, match="another template"):
        profile_space("darts", other, "torch", "cpu", MeasureMethod(**FAST), torch_table.path, fit_samples=0)


def test_onnxruntime_profile_fills_every_instance(tiny, tmp_path):
    table = profile_space("darts", tiny, "onnxruntime", "cpu", MeasureMethod(**FAST), tmp_path / "ort.json", fit_samples=2)
    assert set(table.entries) == {i.key() for i in get_space("darts").op_instances(tiny)}
    assert table.versions["providers"] == "CPUExecutionProvider" and table.runtime == "onnxruntime"
    assert len(table.overhead["samples"]) == 2


def test_validate_table_writes_report_and_plot(torch_table, tmp_path):
    from nasdeploy.latency.validate import validate_table

    report = validate_table(torch_table, samples=3, seed=0, out_dir=tmp_path)
    m = report["metrics"]
    assert m["n"] == 3 and 0 <= m["within_10pct"] <= 1 and m["rmse_ms"] >= 0 and -1 <= m["kendall_tau"] <= 1
    assert (tmp_path / "lut_fidelity.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "lut_fidelity.json").read_text())
    assert len(saved["samples"]) == 3 and all(s["measured_ms"] > 0 for s in saved["samples"])


def test_validate_refuses_other_machine(torch_table, tmp_path):
    from nasdeploy.latency.validate import validate_table

    other = load_table(torch_table.path)
    other.fingerprint = {**other.fingerprint, "cpu_model": "Some Other CPU"}
    with pytest.raises(NasDeployError, match="measured on cpu-some-other-1t.*--allow-other-machine"):
        validate_table(other, samples=2, seed=0, out_dir=tmp_path)


def test_stem_repeat_weights(tiny, tmp_path):
    from nasdeploy.latency.stem_repeat import stem_repeat_weights

    backend = get_backend("torch", "cpu", MeasureMethod(warmup=1, repeats=5, threads=1, rounds=3))
    result = stem_repeat_weights("darts", tiny, backend, path=tmp_path / "w.json", op_names=["sep_conv_3x3", "skip_connect"], copies=3)
    assert set(result["ops"]) == {"sep_conv_3x3", "skip_connect"}
    assert sum(r["weight"] for r in result["ops"].values()) == pytest.approx(1.0)
    assert result["ops"]["sep_conv_3x3"]["delta_ms"] > result["ops"]["skip_connect"]["delta_ms"]  # 3 sep convs cost more than 3 identities
    assert result["ops"]["sep_conv_3x3"]["weight"] > 0.5
    assert json.loads((tmp_path / "w.json").read_text())["baseline_ms"] == pytest.approx(result["baseline_ms"])


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PIPELINE)}
    code = "import sys; from nasdeploy.cli import main; sys.argv = ['nasdeploy', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cli_profile_on_absent_cuda_exits_2():
    result = run_cli("profile", "--device", "cuda:0", "--space", "darts", "--preset", "tiny")
    assert result.returncode == 2, result.stderr
    assert "--device cuda:0: no CUDA device is visible here" in result.stderr and "Traceback" not in result.stderr


def fake_validation(monkeypatch, within_10pct: float) -> None:
    """validate-lut on a stand-in table whose drift-corrected ±10 % share is ``within_10pct`` (nothing measured)."""
    from types import SimpleNamespace

    import nasdeploy.latency.table as table_module
    import nasdeploy.latency.validate as validate_module

    lut = SimpleNamespace(runtime="onnxruntime", device="cpu", path=Path("t.json"))
    report = {"machine_drift_ratio": 1.0, "mismatches": [], "metrics_drift_corrected": {"within_10pct": within_10pct}}
    monkeypatch.setattr(table_module, "load_table", lambda path: lut)
    monkeypatch.setattr(table_module, "profile_command", lambda table, path: f"nasdeploy profile --out {path}")
    monkeypatch.setattr(validate_module, "validate_table", lambda *args: report)
    monkeypatch.setattr("nasdeploy.cli.profile.print_fidelity", lambda *args, **kwargs: None)


@pytest.mark.parametrize("within, args, code", [(0.0, [], 1), (0.88, [], 1), (0.9, [], 0), (0.0, ["--no-strict"], 0)])
def test_cli_validate_lut_exits_1_when_the_table_does_not_fit(monkeypatch, within, args, code):
    from typer.testing import CliRunner

    from nasdeploy.cli import app

    fake_validation(monkeypatch, within)
    result = CliRunner().invoke(app, ["validate-lut", "--table", "t.json", *args])
    assert result.exit_code == code, result.output
    assert ("this table does not fit this machine" in result.output) is (within < 0.9)


def test_cli_validate_corrupt_table_exits_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    result = run_cli("validate-lut", "--table", str(bad))
    assert result.returncode == 2 and "corrupt" in result.stderr and "Traceback" not in result.stderr


def test_cli_profile_tiny_writes_table(tmp_path):
    out = tmp_path / "cli.json"
    result = run_cli("profile", "--space", "darts", "--preset", "tiny", "--warmup", "0", "--repeats", "2", "--rounds", "1",
                     "--fit-samples", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    table = load_table(out)
    assert len(table.entries) == len(get_space("darts").op_instances(get_space("darts").default_template("tiny")))
    save_table(table, out)


def test_fit_networks_include_the_cheapest_architecture(torch_table):
    """The overhead model is pinned where tight budgets end (skips and pools), not extrapolated there."""
    from nasdeploy.latency.predictor import sum_and_count
    from nasdeploy.latency.profiler import CHEAPEST_SEED
    from nasdeploy.spaces.base import get_space

    space = get_space("darts")
    template = space.template_from_dict(torch_table.template)
    samples = torch_table.overhead["samples"]
    assert samples[0]["seed"] == CHEAPEST_SEED and len(samples) == 3
    sums = [sum_and_count(torch_table, space.arch_op_instances(space.arch_from_json(s["arch"]), template), corrected=False)[0]
            for s in samples]
    assert sums[0] == min(sums) and all(s["median_ms"] > 0 for s in samples)


def test_retest_measures_the_validation_networks_again(torch_table, tmp_path):
    """The ceiling a table is read against: the first measurement scored as the prediction of a second one."""
    from nasdeploy.latency.validate import fidelity_metrics, retest_table, validate_table

    report = validate_table(torch_table, samples=3, seed=0)
    again = retest_table(torch_table, report, tmp_path)
    first = [s["measured_ms"] for s in report["samples"]]
    assert again["first_ms"] == first and len(again["second_ms"]) == 3 and all(t > 0 for t in again["second_ms"])
    assert again["metrics"] == fidelity_metrics(first, again["second_ms"])
    ratios = sorted(b / a for a, b in zip(first, again["second_ms"]))
    assert again["machine_drift_ratio"] == pytest.approx(ratios[1])
    assert json.loads((tmp_path / "retest.json").read_text())["second_ms"] == again["second_ms"]


def test_cli_validate_lut_retest(torch_table, tmp_path):
    result = run_cli("validate-lut", "--table", str(torch_table.path), "--samples", "2", "--out", str(tmp_path), "--retest")
    fits = json.loads((tmp_path / "lut_fidelity.json").read_text())["metrics_drift_corrected"]["within_10pct"] >= 0.9
    assert result.returncode == (0 if fits else 1), result.stderr  # strict by default: 1 when the table does not fit
    assert ("does not fit this machine" in result.stderr) is not fits
    saved = json.loads((tmp_path / "retest.json").read_text())
    assert saved["metrics"]["n"] == 2 and "test-retest" in result.stdout + result.stderr  # rich writes to stderr
