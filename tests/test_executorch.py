"""ExecuTorch (XNNPACK) runtime: timing, versions, non-delegated ops, the absent-runtime line, .pte export.

Tests marked ``executorch`` need the mobile extra (``pip install -e '.[mobile]'``) and skip with that reason without it;
the absent-runtime tests hide the package from the import system, so they run everywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from nasdeploy.errors import NasDeployError
from nasdeploy.hardware import MeasureMethod

REPO = Path(__file__).resolve().parents[1]
FAST = MeasureMethod(warmup=2, repeats=5)


def executorch_present() -> bool:
    try:
        import executorch.runtime  # noqa: F401
    except ImportError:
        return False
    return True


needs_executorch = pytest.mark.skipif(not executorch_present(), reason="executorch not installed: pip install -e '.[mobile]'")


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    net[1].running_mean.uniform_(-1, 1)  # non-trivial statistics: folding BN into the conv changes float rounding
    net[1].running_var.uniform_(0.5, 2)
    return net


class WithCumsum(nn.Module):
    """A conv XNNPACK takes, then a cumulative sum it does not (it runs on ExecuTorch's portable kernels)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return torch.cumsum(self.conv(x), dim=1)


# ---------------------------------------------------------------- the backend


@pytest.mark.executorch
@needs_executorch
def test_conv_net_is_timed_with_the_method_and_versions_recorded():
    from nasdeploy.hardware import get_backend

    backend = get_backend("executorch", "cpu", MeasureMethod(warmup=2, repeats=5))
    timing = backend.measure_module(conv_net(), (1, 3, 16, 16))
    assert len(timing.samples_ms) == 5 and timing.median > 0
    assert backend.method.threads == 1 and backend.method.clock == "thread"
    versions = backend.versions()
    assert versions["executorch"].startswith("1.5") and versions["executorch_backend"] == "xnnpack"
    assert versions["executorch_threads"] == "1" and versions["torch"] == torch.__version__


@pytest.mark.executorch
@needs_executorch
def test_thread_pool_is_set_and_read_back():
    from executorch.extension.pybindings import portable_lib

    from nasdeploy.hardware import get_backend

    get_backend("executorch", "cpu", MeasureMethod(threads=2))
    assert portable_lib._threadpool_get_thread_count() == 2
    backend = get_backend("executorch", "cpu", MeasureMethod())
    assert portable_lib._threadpool_get_thread_count() == 1 and backend.threads == 1


@pytest.mark.executorch
@needs_executorch
def test_non_delegated_ops_are_kept_and_logged(caplog):
    from nasdeploy.hardware import get_backend

    backend = get_backend("executorch", "cpu", FAST)
    backend.prepare(conv_net(), (1, 3, 16, 16))
    assert backend.program_notes() == {}
    with caplog.at_level("WARNING"):
        run = backend.prepare(WithCumsum(), (1, 3, 16, 16))
    assert backend.program_notes() == {"non_delegated": {"aten_cumsum_default": 1}}
    assert "XNNPACK did not take aten_cumsum_default in WithCumsum" in caplog.text
    assert run().median > 0  # the fallback still runs, and is timed


@pytest.mark.executorch
@needs_executorch
def test_profiler_stores_non_delegated_ops_per_entry(tmp_path):
    from nasdeploy.hardware import get_backend
    from nasdeploy.latency.profiler import measure_entries, non_delegated_ops
    from nasdeploy.latency.table import LatencyTable
    from nasdeploy.progress import progress_bar
    from nasdeploy.spaces.base import OpInstance

    class Space:  # two op instances: one XNNPACK takes, one it does not
        def build_op(self, inst):
            return WithCumsum() if inst.op == "cumsum" else nn.Conv2d(3, 8, 3, padding=1)

    conv, cumsum = OpInstance("conv", 3, 8, 8, 8, 1), OpInstance("cumsum", 3, 8, 8, 8, 1)
    backend = get_backend("executorch", "cpu", FAST)
    table = LatencyTable("test", {}, "executorch", "cpu", {}, backend.versions(), FAST.to_dict(), path=tmp_path / "t.json")
    with progress_bar() as bar:
        measure_entries(table, Space(), [conv, cumsum], backend, 0, 100, bar, bar.add_task("ops", total=2, info=""), {})
    assert table.entries[cumsum.key()]["non_delegated"] == {"aten_cumsum_default": 1}
    assert "non_delegated" not in table.entries[conv.key()] and table.entries[conv.key()]["n"] == 5
    assert non_delegated_ops(table) == {"aten_cumsum_default": [cumsum.key()]}
    table.overhead = {"samples": [{"median_ms": 1.0}, {"median_ms": 2.0, "non_delegated": {"aten_cumsum_default": 2}}]}
    assert non_delegated_ops(table) == {"aten_cumsum_default": [cumsum.key(), "fit network 1"]}


# ---------------------------------------------------------------- without the extra


def hide_executorch(monkeypatch):
    """As if the mobile extra were not installed: ``import executorch`` fails (nothing is uninstalled)."""
    for name in [n for n in sys.modules if n == "executorch" or n.startswith("executorch.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "executorch", None)


def test_absent_executorch_is_one_line_naming_the_extra(monkeypatch):
    from nasdeploy.hardware.executorch_backend import ExecuTorchBackend
    from nasdeploy.hardware.runtimes import resolve_runtime

    hide_executorch(monkeypatch)
    fact = ExecuTorchBackend.availability("cpu")
    assert not fact.present and fact.install == "pip install -e '.[mobile]'"
    with pytest.raises(NasDeployError) as raised:
        resolve_runtime("cpu", "executorch")
    assert "\n" not in str(raised.value) and "pip install -e '.[mobile]'" in str(raised.value)
    with pytest.raises(NasDeployError, match=r"executorch is not installed .*\.\[mobile\]"):
        ExecuTorchBackend("cpu", MeasureMethod())


def test_executorch_is_cpu_only_and_never_a_default():
    from nasdeploy.hardware.executorch_backend import ExecuTorchBackend
    from nasdeploy.hardware.runtimes import deployment_order

    fact = ExecuTorchBackend.availability("cuda:0")
    assert not fact.present and "CPUs only" in fact.missing
    assert "executorch" not in deployment_order("cpu") and "executorch" not in deployment_order("cuda:0")


# ---------------------------------------------------------------- .pte export and measurement


def digits_batch(n: int = 8, size: int = 16) -> torch.Tensor:
    from nasdeploy.train.data import load_dataset

    dataset, _ = load_dataset("digits", train=False, input_size=size)
    return torch.stack([dataset[i][0] for i in range(n)])


@pytest.mark.executorch
@needs_executorch
def test_pte_export_checks_parity_on_real_inputs_and_measures(tmp_path):
    from nasdeploy.export.pte_export import export_pte, pte_measurement

    path = tmp_path / "net.pte"
    net = nn.Sequential(conv_net()[:3], nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    result = export_pte(net, (1, 3, 16, 16), path, real_inputs=digits_batch())
    assert path.is_file() and result.passed and result.max_abs_diff <= result.atol == 1e-4
    assert result.real_inputs == 8 and result.random_inputs == 4 and result.notes == []
    measured = pte_measurement(path, method=FAST)
    assert measured.input_shape == (1, 3, 16, 16) and measured.timing.median > 0 and len(measured.timing.samples_ms) == 5
    assert measured.versions["executorch_backend"] == "xnnpack" and measured.method.threads == 1


@pytest.mark.executorch
@needs_executorch
def test_pte_export_names_ops_xnnpack_did_not_take(tmp_path, caplog):
    from nasdeploy.export.pte_export import export_pte

    with caplog.at_level("WARNING"):
        result = export_pte(WithCumsum().eval(), (1, 3, 8, 8), tmp_path / "cumsum.pte")
    assert result.passed and result.notes == ["not delegated to XNNPACK (portable kernels): aten_cumsum_default x1"]
    assert "aten_cumsum_default" in caplog.text


@pytest.mark.executorch
@needs_executorch
def test_failing_pte_parity_writes_nothing(tmp_path):
    from nasdeploy.export.pte_export import export_pte

    path = tmp_path / "net.pte"
    with pytest.raises(NasDeployError, match=r"ExecuTorch differs from PyTorch by max \|diff\| .* > tolerance 0 .*not written") as info:
        export_pte(conv_net(), (1, 3, 16, 16), path, atol=0.0, real_inputs=digits_batch(4))
    assert "\n" not in str(info.value) and not path.exists() and list(tmp_path.iterdir()) == []


def test_export_format_comes_from_the_suffix_or_the_option():
    from nasdeploy.export.pte_export import export_format, pte_name

    assert export_format("model.pte") == "pte" and export_format("model.onnx") == "onnx"
    assert export_format("model.onnx", "pte") == "pte" and pte_name("model.onnx") == "model.pte"
    with pytest.raises(NasDeployError, match="unknown export format 'tflite'"):
        export_format("model.onnx", "tflite")


def test_pte_runs_on_executorch_only():
    from nasdeploy.export.pte_export import pte_runtime

    with pytest.raises(NasDeployError, match="runs on --runtime executorch, not onnxruntime"):
        pte_runtime("onnxruntime", False, "cpu")
    with pytest.raises(NasDeployError, match="not tensorrt"):
        pte_runtime(None, True, "cpu")
    with pytest.raises(NasDeployError, match="absent on cuda:0: ExecuTorch's XNNPACK backend runs on CPUs only"):
        pte_runtime(None, False, "cuda:0")


def test_measure_pte_without_the_extra_is_one_line_exit_2(tmp_path):
    """The real command line in a process where ``import executorch`` fails, as without the extra."""
    import os
    import subprocess

    (tmp_path / "model.pte").write_bytes(b"never read: the runtime is checked first")
    code = "import sys; sys.modules['executorch'] = None; from nasdeploy.cli import main; main()"
    env = {**os.environ, "PYTHONPATH": str(REPO / "pipeline")}
    proc = subprocess.run([sys.executable, "-c", code, "measure", str(tmp_path / "model.pte")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["error: a .pte program runs on ExecuTorch, absent on cpu: executorch is not installed; "
                     "pip install -e '.[mobile]', or export model.onnx"]


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    from test_export import darts_record

    from nasdeploy.train.trainer import TrainConfig, train_architecture

    out = tmp_path_factory.mktemp("trained")
    train_architecture(darts_record(), "digits", TrainConfig(epochs=1, batch_size=16, max_batches=2, threads=1), out)
    return out / "model.pt"


@pytest.mark.executorch
@needs_executorch
def test_export_command_writes_a_pte_with_parity_and_remeasures_it(tmp_path, trained_checkpoint):
    import json

    from typer.testing import CliRunner

    from nasdeploy.cli import app

    out = tmp_path / "pte"
    args = ["export", str(out / "model.pte"), "--checkpoint", str(trained_checkpoint), "--budget", "100s", "--out-dir", str(out),
            "--warmup", "2", "--repeats", "5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert (out / "model.pte").is_file() and not (out / "model.onnx").exists() and report["files"]["pte"] == str(out / "model.pte")
    assert report["parity"][0]["runtime"] == "executorch-xnnpack" and report["parity"][0]["passed"]
    assert report["parity"][0]["real_inputs"] == 32 and report["parity"][0]["max_abs_diff"] <= 1e-4
    assert report["runtime"] == "executorch" and report["versions"]["executorch_backend"] == "xnnpack"
    assert report["measurement"]["n"] == 5 and report["measured_median_ms"] > 0
    assert report["predicted_latency_ms"] == 1.0 and report["budget_ms"] == 100000.0 and report["within_budget"] is True
    assert [c["runtime"] for c in report["comparisons"]] == ["torch"]
    markdown = (out / "report.md").read_text()
    assert "| measured median (executorch, cpu) |" in markdown and "| parity executorch-xnnpack vs torch |" in markdown


@pytest.mark.executorch
@needs_executorch
def test_pte_export_skips_onnx_comparisons_with_a_line(tmp_path, trained_checkpoint):
    from nasdeploy.export.deploy import ExportOptions, export_checkpoint

    options = ExportOptions(budget_ms=50.0, format="pte", compare=[("onnxruntime", "cpu"), ("torch", "cpu")],
                            method=FAST.to_dict())
    report = export_checkpoint(trained_checkpoint, tmp_path / "net.onnx", tmp_path, options)
    assert (tmp_path / "net.pte").is_file() and [c["runtime"] for c in report["comparisons"]] == ["torch"]
    assert report["skipped_comparisons"] == [{"runtime": "onnxruntime", "device": "cpu",
                                              "reason": "a .pte export writes no ONNX file; export model.onnx to compare"}]


@pytest.mark.executorch
@needs_executorch
def test_onnx_export_on_executorch_writes_and_measures_the_pte_beside_it(tmp_path, trained_checkpoint, monkeypatch):
    """What ``nasdeploy run --runtime executorch`` exports: the ONNX file (ONNX Runtime compares on it) and, beside it,
    the .pte with its own parity; the .pte written is the program measured, not a new lowering."""
    from nasdeploy.export import deploy, pte_export
    from nasdeploy.export.deploy import ExportOptions, export_checkpoint

    measured = []
    real_measurement = pte_export.pte_measurement
    monkeypatch.setattr(pte_export, "pte_measurement", lambda path, *a, **k: measured.append(path) or real_measurement(path, *a, **k))
    options = ExportOptions(budget_ms=50.0, runtime="executorch", compare=[("onnxruntime", "cpu")], method=FAST.to_dict())
    report = export_checkpoint(trained_checkpoint, tmp_path / "net.onnx", tmp_path, options)
    assert (tmp_path / "net.onnx").is_file() and (tmp_path / "net.pte").is_file()
    assert report["files"]["pte"] == str(tmp_path / "net.pte") and measured == [tmp_path / "net.pte"]
    assert [p["runtime"] for p in report["parity"]] == ["onnxruntime-cpu", "executorch-xnnpack"]
    assert all(p["passed"] and p["max_abs_diff"] <= 1e-4 and p["real_inputs"] == 32 for p in report["parity"])
    assert report["runtime"] == "executorch" and report["versions"]["executorch_backend"] == "xnnpack"
    assert report["measurement"]["n"] == 5 and [c["runtime"] for c in report["comparisons"]] == ["onnxruntime"]
    assert deploy.deployed_file(report["files"], "onnxruntime", tmp_path / "net.onnx") == tmp_path / "net.onnx"


@pytest.mark.executorch
@needs_executorch
def test_lowering_in_a_process_pool_gives_the_same_programs(monkeypatch):
    """``prepare_all`` lowers in spawned processes, then loads and times: same program bytes as lowering here, the
    non-delegated ops kept per program. The program cache is off (the workers inherit the variable): with it, an
    earlier test's WithCumsum, other weights, same graph, would come back."""
    from nasdeploy.hardware import get_backend
    from nasdeploy.hardware.executorch_backend import lower, lower_all
    from nasdeploy.hardware.executorch_cache import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, "0")
    shape = (1, 3, 8, 8)
    modules = [(conv_net(), shape), (WithCumsum().eval(), shape)]
    pooled = lower_all(modules, workers=2)
    assert [p.buffer for p in pooled] == [lower(m, s).buffer for m, s in modules]
    assert [p.non_delegated for p in pooled] == [{}, {"aten_cumsum_default": 1}]
    backend = get_backend("executorch", "cpu", FAST)
    ready = backend.prepare_all([(conv_net, shape), (lambda: WithCumsum().eval(), shape)])
    assert [notes for _, notes in ready] == [{}, {"non_delegated": {"aten_cumsum_default": 1}}]
    assert all(measure().median > 0 for measure, _ in ready)


@pytest.mark.executorch
@needs_executorch
def test_lowering_many_tensors_in_a_pool_needs_no_descriptor_per_tensor():
    """Modules reach the workers as plain pickles: sent as nn.Modules, torch shared each tensor through a file
    descriptor, and a batch of DARTS cpu networks ran out of them. Under a 256-descriptor limit, 2 networks of 300
    tensors each (600 > 256) still lower."""
    import resource

    from nasdeploy.hardware.executorch_backend import lower_all

    def wide() -> nn.Module:
        return nn.Sequential(*[nn.Linear(4, 4) for _ in range(150)]).eval()  # 300 tensors

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    try:
        programs = lower_all([(wide(), (1, 4)), (wide(), (1, 4))], workers=2)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(programs) == 2 and all(len(p.buffer) > 0 for p in programs)


def test_lowering_workers_follow_the_cores_or_the_variable(monkeypatch):
    from nasdeploy.hardware.executorch_backend import WORKERS_ENV, lowering_workers

    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert lowering_workers(1) == 1 and 1 <= lowering_workers(100) <= 100
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert lowering_workers(100) == 3 and lowering_workers(2) == 2
    monkeypatch.setenv(WORKERS_ENV, "many")
    with pytest.raises(NasDeployError, match="NASDEPLOY_EXECUTORCH_WORKERS='many' is not a number"):
        lowering_workers(4)


@pytest.mark.executorch
@pytest.mark.slow
@needs_executorch
def test_run_on_executorch_end_to_end_writes_a_checked_pte(tmp_path):
    """``nasdeploy run --runtime executorch --preset tiny``: an ExecuTorch table, a search on it, a retrained net exported
    as model.onnx and model.pte (both parity-checked), the .pte measured against the prediction and the budget, ONNX
    Runtime and torch beside it (minutes: every network measured is lowered to XNNPACK first)."""
    import json

    from typer.testing import CliRunner

    from nasdeploy.cli import app
    from nasdeploy.pipeline import STAGES

    out = tmp_path / "run"
    args = ["run", "--runtime", "executorch", "--preset", "tiny", "--out", str(out), "--table-root", str(tmp_path / "tables")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    state = json.loads((out / "run.json").read_text())
    assert [state["stages"][s]["status"] for s in STAGES] == ["done"] * 4 and state["settings"]["runtime"] == "executorch"
    table = json.loads((out / "profile" / "table.json").read_text())
    assert table["runtime"] == "executorch" and table["versions"]["executorch_threads"] == "1"
    report = json.loads((out / "export" / "report.json").read_text())
    assert report["files"]["pte"] == str(out / "export" / "model.pte") and (out / "export" / "model.pte").is_file()
    assert [p["runtime"] for p in report["parity"]] == ["onnxruntime-cpu", "executorch-xnnpack"]
    assert all(p["passed"] for p in report["parity"]) and report["runtime"] == "executorch"
    summary = state["summary"]
    assert summary["runtime"] == "executorch" and summary["measured_median_ms"] > 0 and summary["predicted_latency_ms"] > 0
    assert summary["budget_ms"] > 0 and summary["within_budget"] in (True, False)
    assert summary["onnxruntime_median_ms"] > 0 and summary["torch_median_ms"] > 0
    assert summary["other_parity"][0]["runtime"] == "executorch-xnnpack" and summary["other_parity"][0]["max_abs_diff"] <= 1e-4
    assert "measured median (executorch, cpu)" in result.output and "parity max |executorch-xnnpack − torch|" in result.output
    assert state["stages"]["export"]["outputs"]["pte"] == str(out / "export" / "model.pte")


# ---------------------------------------------------------------- the program cache (timing only)


def exported(module: nn.Module, shape: tuple[int, ...]):
    with torch.no_grad():
        return torch.export.export(module.eval(), (torch.randn(*shape),))


def test_program_key_is_the_graph_and_shapes_not_the_weights():
    from nasdeploy.hardware.executorch_cache import program_key

    shape, versions = (1, 3, 8, 8), ("1.5.1", "2.14.1", "xnnpack")
    other_weights = conv_net()
    with torch.no_grad():
        other_weights[0].weight.add_(1.0)
    key = program_key(exported(conv_net(), shape), shape, versions)
    assert program_key(exported(other_weights, shape), shape, versions) == key
    assert program_key(exported(WithCumsum(), shape), shape, versions) != key  # another graph
    assert program_key(exported(conv_net(), (1, 3, 16, 16)), (1, 3, 16, 16), versions) != key  # another shape
    assert program_key(exported(conv_net(), shape), shape, ("1.6.0", "2.14.1", "xnnpack")) != key  # another runtime
    wider = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    assert program_key(exported(wider, shape), shape, versions) != key  # the same code, other parameter shapes


def test_program_cache_keeps_the_newest_and_skips_half_written_programs(tmp_path):
    import os

    from nasdeploy.hardware.executorch_cache import prune, read_program, write_program

    for age, key in enumerate(["new", "mid", "old"]):
        write_program(tmp_path, key, b"x" * 100, {"aten_cumsum_default": age})
        os.utime(tmp_path / f"{key}.pte", (1000 - age, 1000 - age))
    assert read_program(tmp_path, "old") == (b"x" * 100, {"aten_cumsum_default": 2})  # a read marks it used now
    assert prune(tmp_path, limit=250) == 1 and not (tmp_path / "mid.pte").exists() and not (tmp_path / "mid.json").exists()
    assert read_program(tmp_path, "new") is not None and read_program(tmp_path, "old") is not None
    (tmp_path / "new.json").unlink()  # a program whose notes were never written is lowered again, not read
    assert read_program(tmp_path, "new") is None


@pytest.mark.executorch
@needs_executorch
def test_timing_programs_come_from_the_cache_and_exports_lower_their_own(tmp_path, monkeypatch):
    from nasdeploy.export.pte_export import export_pte
    from nasdeploy.hardware import executorch_backend
    from nasdeploy.hardware.executorch_backend import lower_all

    monkeypatch.setenv("NASDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    shape = (1, 3, 8, 8)
    first = lower_all([(conv_net(), shape), (WithCumsum().eval(), shape)])
    assert [p.cached for p in first] == [False, False] and len(list((tmp_path / "cache").rglob("*.pte"))) == 2
    other_weights = conv_net()
    with torch.no_grad():
        other_weights[0].weight.add_(1.0)

    def no_lowering(exported):
        raise AssertionError("lowered again although the program cache had it")

    real_lowering = executorch_backend.lower_exported
    monkeypatch.setattr(executorch_backend, "lower_exported", no_lowering)
    again = lower_all([(other_weights, shape), (WithCumsum().eval(), shape)])
    assert [p.cached for p in again] == [True, True] and [p.buffer for p in again] == [p.buffer for p in first]
    assert again[1].non_delegated == {"aten_cumsum_default": 1}
    # an export's program carries its own weights: parity against the module whose graph is cached still holds
    monkeypatch.setattr(executorch_backend, "lower_exported", real_lowering)
    parity = export_pte(other_weights, shape, tmp_path / "net.pte")
    assert parity.passed and parity.max_abs_diff <= 1e-4
    monkeypatch.setenv("NASDEPLOY_EXECUTORCH_CACHE", "0")
    assert [p.cached for p in lower_all([(conv_net(), shape)])] == [False]
