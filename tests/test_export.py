"""Export: ONNX parity for DARTS and MobileNet networks, loud failures, measurement, reports, --strict."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from nasdeploy.errors import NasDeployError
from nasdeploy.export.measure import measure_onnx, method_from_dict, onnx_measurement, parse_shape
from nasdeploy.export.onnx_export import export_onnx, onnx_input_shape, ort_outputs
from nasdeploy.export.report import build_report, relative_error, report_markdown
from nasdeploy.hardware import MeasureMethod

REPO = Path(__file__).resolve().parents[1]
FAST = MeasureMethod(warmup=2, repeats=5)


def conv_net(classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes),
    )
    # non-trivial BN statistics so ONNX Runtime's BN folding changes the float summation order
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return net.eval()


def digits_batch(n: int = 16, size: int = 32) -> torch.Tensor:
    from nasdeploy.train.data import load_dataset

    ds, _ = load_dataset("digits", train=False, input_size=size)
    return torch.stack([ds[i][0] for i in range(n)])


# ---------------------------------------------------------------- ONNX export and parity


def test_export_plain_network_parity(tmp_path):
    net = conv_net()
    path = tmp_path / "net.onnx"
    result = export_onnx(net, (1, 3, 32, 32), path, real_inputs=digits_batch())
    assert path.is_file()
    onnx.checker.check_model(str(path))
    assert result.passed and result.max_abs_diff <= 1e-4 and result.atol == 1e-4
    assert result.real_inputs == 16 and result.random_inputs == 4 and result.top1_agreement == 1.0
    # independent re-check of the written file
    x = digits_batch(1).numpy()
    ort = ort_outputs(path, [x])[0]
    assert np.abs(ort - net(torch.from_numpy(x)).detach().numpy()).max() <= 1e-4
    assert onnx_input_shape(path) == (1, 3, 32, 32)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left over


def test_dynamic_batch_export(tmp_path):
    path = tmp_path / "dyn.onnx"
    result = export_onnx(conv_net(), (1, 3, 32, 32), path, real_inputs=digits_batch(8), dynamic_batch=True)
    assert result.passed and result.real_inputs == 8
    assert onnx_input_shape(path, batch=4) == (4, 3, 32, 32)
    assert ort_outputs(path, [digits_batch(5).numpy()])[0].shape == (5, 10)


def test_failing_parity_raises_and_writes_nothing(tmp_path):
    """Tolerance 0: ONNX Runtime folds BN into the convs, so float rounding differs from PyTorch."""
    path = tmp_path / "net.onnx"
    with pytest.raises(NasDeployError, match=r"max \|diff\| .* > tolerance 0 .*was not written") as info:
        export_onnx(conv_net(), (1, 3, 32, 32), path, atol=0.0, real_inputs=digits_batch(4))
    assert "\n" not in str(info.value)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_failing_parity_keeps_previous_file(tmp_path):
    path = tmp_path / "net.onnx"
    export_onnx(conv_net(), (1, 3, 32, 32), path)
    before = path.read_bytes()
    with pytest.raises(NasDeployError):
        export_onnx(conv_net(), (1, 3, 32, 32), path, atol=0.0)
    assert path.read_bytes() == before


def test_onnx_input_shape_errors(tmp_path):
    with pytest.raises(NasDeployError, match="not found"):
        onnx_input_shape(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(NasDeployError, match="not a readable ONNX file"):
        onnx_input_shape(bad)
    path = tmp_path / "net.onnx"
    export_onnx(conv_net(), (1, 3, 32, 32), path)
    with pytest.raises(NasDeployError, match="static batch of 1"):
        onnx_input_shape(path, batch=8)


def test_parse_shape_and_method():
    assert parse_shape("1,3,224,224") == (1, 3, 224, 224)
    assert parse_shape(None) is None
    with pytest.raises(NasDeployError):
        parse_shape("1,3,a")
    method = method_from_dict({"warmup": 3, "repeats": 7, "threads": 1, "unknown": 1}, batch=2)
    assert (method.warmup, method.repeats, method.batch) == (3, 7, 2)


def test_measure_onnx_records_method_and_device(tmp_path):
    path = tmp_path / "net.onnx"
    export_onnx(conv_net(), (1, 3, 32, 32), path)
    timing = measure_onnx(path, "onnxruntime", "cpu", FAST)  # the design contract: a Timing
    assert len(timing.samples_ms) == 5 and timing.median > 0
    result = onnx_measurement(path, "onnxruntime", "cpu", FAST).to_dict()
    assert result["n"] == 5 and result["input_shape"] == [1, 3, 32, 32]
    assert 0 < result["p10_ms"] <= result["median_ms"] <= result["p90_ms"]
    assert result["method"]["threads"] == 1 and result["fingerprint"]["logical_cores"] >= 1
    assert "onnxruntime" in result["versions"]
    assert result["round_medians_ms"] == [result["median_ms"]]


def test_measurement_keeps_the_best_of_the_methods_rounds(tmp_path):
    """Re-measured like the table's entries (latency.rounds): every round's median kept, the smallest one reported."""
    path = tmp_path / "net.onnx"
    export_onnx(conv_net(), (1, 3, 32, 32), path)
    result = onnx_measurement(path, "onnxruntime", "cpu", MeasureMethod(warmup=2, repeats=5, rounds=3)).to_dict()
    assert len(result["round_medians_ms"]) == 3 and result["method"]["rounds"] == 3
    assert result["median_ms"] == min(result["round_medians_ms"]) and result["n"] == 5


def test_report_fields_and_relative_error():
    assert relative_error(11.0, 10.0) == pytest.approx(0.1)
    assert relative_error(None, 10.0) is None
    measurement = {"median_ms": 2.0, "p90_ms": 2.5, "runtime": "onnxruntime", "device": "cpu",
                   "method": {"warmup": 1, "repeats": 2, "threads": 1, "dtype": "float32", "batch": 1},
                   "fingerprint": {"cpu_model": "x", "logical_cores": 2}, "versions": {"onnxruntime": "1"}}
    parity = [{"runtime": "onnxruntime-cpu", "max_abs_diff": 1e-7, "atol": 1e-4, "passed": True, "top1_agreement": 1.0}]
    report = build_report("n", {"onnx": "m.onnx"}, 1.5, 1.8, measurement, parity,
                          {"test_accuracy": 0.9, "flops": 1000, "params": 10})
    assert report["within_budget"] is False
    assert report["relative_prediction_error"] == pytest.approx(-0.1)
    for key in ("budget_ms", "predicted_latency_ms", "measured_median_ms", "measured_p90_ms", "parity", "flops",
                "params", "test_accuracy", "fingerprint", "versions", "method"):
        assert key in report
    markdown = report_markdown(report)
    assert "OVER budget" in markdown and "1.800 ms" in markdown


# ---------------------------------------------------------------- searched architectures (need nasdeploy.spaces)


def darts_record():
    from nasdeploy.spaces.base import get_space
    from nasdeploy.spaces.darts import Genotype
    from nasdeploy.spaces.ops import OP_SPACES
    from nasdeploy.spaces.record import ArchitectureRecord

    space = get_space("darts")
    template = space.default_template("tiny", C=4, layers=3, input_size=16)  # small: fast on 2 CPU cores
    ops = [op for op in OP_SPACES[template.op_space] if op not in ("none", "random")]
    # a fixed hand-written cell: node j takes input 0 and node/input j + 1, cycling through the op space
    cell = [[(ops[(2 * j) % len(ops)], 0), (ops[(2 * j + 1) % len(ops)], j + 1)] for j in range(template.nodes)]
    concat = list(range(2, template.nodes + 2))
    genotype = Genotype(normal=cell, normal_concat=concat, reduce=cell, reduce_concat=concat)
    return ArchitectureRecord("darts", template, genotype, {"predicted_latency_ms": 1.0, "latency_budget_ms": 2.0})


def mobilenet_record():
    from nasdeploy.spaces.base import get_space
    from nasdeploy.spaces.mobilenet import LayerwiseArch, layer_layouts
    from nasdeploy.spaces.record import ArchitectureRecord

    space = get_space("mobilenet")
    template = space.default_template("tiny")
    layouts = layer_layouts(template)
    choices = [layout.choices[i % len(layout.choices)] for i, layout in enumerate(layouts)]
    return ArchitectureRecord("mobilenet", template, LayerwiseArch(choices), {"predicted_latency_ms": 1.0})


@pytest.mark.parametrize("make_record", [darts_record, mobilenet_record], ids=["darts", "mobilenet"])
def test_searched_architectures_export_with_parity(tmp_path, make_record):
    record = make_record()
    model = record.build().eval()
    size = record.template.input_size
    path = tmp_path / "arch.onnx"
    result = export_onnx(model, (1, 3, size, size), path, real_inputs=digits_batch(4, size))
    assert path.is_file() and result.passed and result.max_abs_diff <= 1e-4
    onnx.checker.check_model(str(path))
    graph_outputs = onnx.load(str(path)).graph.output
    assert len(graph_outputs) == 1  # eval graph: logits only, no auxiliary head


# ---------------------------------------------------------------- the export command on a trained checkpoint


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    from nasdeploy.train.trainer import TrainConfig, train_architecture

    out = tmp_path_factory.mktemp("trained")
    config = TrainConfig(epochs=1, batch_size=16, max_batches=2, threads=1)
    train_architecture(darts_record(), "digits", config, out)
    return out / "model.pt"


def _export_args(checkpoint: Path, out_dir: Path, budget: str) -> list[str]:
    return ["export", str(out_dir / "model.onnx"), "--checkpoint", str(checkpoint), "--budget", budget, "--strict",
            "--no-compare-torch", "--warmup", "2", "--repeats", "5"]


def test_export_command_report_and_strict_exit_codes(tmp_path, trained_checkpoint):
    from nasdeploy.cli import app

    runner = CliRunner()
    tight = runner.invoke(app, _export_args(trained_checkpoint, tmp_path / "tight", "0.001ms"))
    assert tight.exit_code == 1, tight.output
    assert "exceeds the budget" in tight.output
    loose = runner.invoke(app, _export_args(trained_checkpoint, tmp_path / "loose", "100s"))
    assert loose.exit_code == 0, loose.output
    report = json.loads((tmp_path / "loose" / "report.json").read_text())
    assert report["within_budget"] is True and report["budget_ms"] == 100000.0
    assert report["parity"][0]["passed"] and report["parity"][0]["max_abs_diff"] <= 1e-4
    assert report["predicted_latency_ms"] == 1.0  # the search's own prediction (no --table)
    assert report["relative_prediction_error"] == pytest.approx((1.0 - report["measured_median_ms"]) / report["measured_median_ms"])
    assert report["measured_p90_ms"] >= report["measured_median_ms"] > 0 and report["method"]["repeats"] == 5
    assert report["params"] > 0 and 0 <= report["test_accuracy"] <= 1
    assert report["fingerprint"]["cpu_model"] and report["versions"]["onnxruntime"]
    assert report["checkpoint_sha256"] and report["runtime"] == "onnxruntime" and report["device"] == "cpu"
    markdown = (tmp_path / "loose" / "report.md").read_text()
    assert "within budget" in markdown and f"{report['measured_median_ms']:.3f} ms" in markdown
    assert (tmp_path / "loose" / "model.onnx").is_file() and (tmp_path / "loose" / "report.md").is_file()


def test_export_with_torch_comparison(tmp_path, trained_checkpoint):
    from nasdeploy.export.deploy import ExportOptions, export_checkpoint

    options = ExportOptions(budget_ms=50.0, compare=[("torch", "cpu")], method=FAST.to_dict())
    report = export_checkpoint(trained_checkpoint, tmp_path / "onnx" / "net.onnx", tmp_path / "reports", options)
    assert (tmp_path / "onnx" / "net.onnx").is_file() and (tmp_path / "reports" / "report.json").is_file()
    assert not (tmp_path / "onnx" / "report.json").exists()
    assert [c["runtime"] for c in report["comparisons"]] == ["torch"]
    assert report["comparisons"][0]["median_ms"] > 0 and report["measurement"]["n"] == 5


def test_absent_comparison_runtimes_are_skipped_with_a_line_not_an_error(tmp_path, trained_checkpoint):
    """``run --device cuda:0`` on a torch-only GPU host compares with runtimes that are not there: here onnxruntime's
    CUDA provider (a CPU build) and TensorRT on cpu are as absent as they would be there."""
    from nasdeploy.export.deploy import ExportOptions, export_checkpoint

    compare = [("torch", "cpu"), ("onnxruntime", "cuda:0"), ("tensorrt", "cpu")]
    if torch.cuda.is_available():
        compare = [("torch", "cpu"), ("tensorrt", "cpu")]
    options = ExportOptions(budget_ms=50.0, compare=compare, method=FAST.to_dict())
    report = export_checkpoint(trained_checkpoint, tmp_path / "net.onnx", tmp_path, options)
    assert [(c["runtime"], c["device"]) for c in report["comparisons"]] == [("torch", "cpu")]
    skipped = {(s["runtime"], s["device"]): s["reason"] for s in report["skipped_comparisons"]}
    assert set(skipped) == set(compare[1:])
    assert "only on NVIDIA GPUs" in skipped[("tensorrt", "cpu")]
    markdown = (tmp_path / "report.md").read_text()
    assert "| comparison (tensorrt, cpu) | skipped: TensorRT runs only on NVIDIA GPUs" in markdown


def test_comparison_plan_decides_on_availability_facts():
    from nasdeploy.export.deploy import comparison_plan
    from nasdeploy.hardware.base import Availability

    present = {"torch"}
    probe = lambda device, names: {n: Availability(n, n in present, missing="absent here", install="pip install it")  # noqa: E731
                                   for n in names}
    wanted, skipped = comparison_plan([("tensorrt", "cuda:0"), ("onnxruntime", "cuda:0"), ("torch", "cuda:0")],
                                      "torch", "cuda:0", probe)
    assert wanted == [] and [s["runtime"] for s in skipped] == ["tensorrt", "onnxruntime"]
    assert skipped[0]["reason"] == "absent here; pip install it"
    present.add("onnxruntime")
    wanted, skipped = comparison_plan([("onnxruntime", "cuda:0"), ("torch", "cuda:0")], "tensorrt", "cuda:0", probe)
    assert wanted == [("onnxruntime", "cuda:0", "auto"), ("torch", "cuda:0", "auto")] and skipped == []


def test_a_gpu_run_compares_every_other_runtime_and_torch_both_ways():
    from nasdeploy.export.deploy import comparison_plan
    from nasdeploy.hardware.base import Availability
    from nasdeploy.pipeline import run_comparisons

    assert run_comparisons("cpu", "onnxruntime") == [("torch", "cpu")]
    planned = run_comparisons("cuda:0", "torch")
    assert planned == [("tensorrt", "cuda:0"), ("onnxruntime", "cuda:0"), ("torch", "cuda:0"), ("torch", "cuda:0", "eager")]
    everything = lambda device, names: {n: Availability(n, True) for n in names}  # noqa: E731
    wanted, skipped = comparison_plan(planned, "torch", "cuda:0", everything)
    assert wanted == [("tensorrt", "cuda:0", "auto"), ("onnxruntime", "cuda:0", "auto"), ("torch", "cuda:0", "eager")]
    assert skipped == []


def test_cli_user_error_exits_2(tmp_path):
    env = {"PYTHONPATH": str(REPO / "pipeline")}
    import os

    proc = subprocess.run([sys.executable, "-c", "from nasdeploy.cli import main; main()", "measure", str(tmp_path / "none.onnx")],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert proc.returncode == 2
    assert "ONNX file not found" in proc.stderr


def test_measure_command_json(tmp_path):
    from nasdeploy.cli import app

    path = tmp_path / "net.onnx"
    export_onnx(conv_net(), (1, 3, 32, 32), path)
    result = CliRunner().invoke(app, ["measure", str(path), "--repeats", "5", "--warmup", "1", "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["input_shape"] == [1, 3, 32, 32] and saved["n"] == 5 and saved["runtime"] == "onnxruntime"


def test_measure_command_on_torchvision_mobilenet_v3_small(tmp_path):
    """Any ONNX file: torchvision's MobileNetV3-Small (random weights, nothing downloaded), exported here."""
    import torchvision

    from nasdeploy.cli import app

    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(weights=None).eval()
    path = tmp_path / "mobilenet_v3_small.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's deprecation notice
        torch.onnx.export(net, (torch.randn(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17,
                          input_names=["images"], output_names=["logits"])
    result = CliRunner().invoke(app, ["measure", str(path), "--warmup", "2", "--repeats", "5", "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert "mobilenet_v3_small.onnx" in result.output and "median" in result.output
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["input_shape"] == [1, 3, 224, 224] and saved["n"] == 5
    assert saved["method"]["warmup"] == 2 and saved["method"]["threads"] == 1  # the profiler's single-thread method
    assert 0 < saved["p10_ms"] <= saved["median_ms"] <= saved["p90_ms"]
    assert saved["fingerprint"]["logical_cores"] >= 1 and saved["versions"]["onnxruntime"]
    # a 56 M multiply-add network at 224 px cannot run in under 0.1 ms on a CPU core, nor take seconds
    assert 0.1 < saved["median_ms"] < 2000


def test_strict_follows_searched_budget_and_needs_one(tmp_path, trained_checkpoint):
    from nasdeploy.cli import app

    args = ["export", str(tmp_path / "model.onnx"), "--checkpoint", str(trained_checkpoint), "--strict", "--no-compare-torch",
            "--warmup", "1", "--repeats", "3"]
    result = CliRunner().invoke(app, args + ["--out-dir", str(tmp_path / "searched")])
    assert (tmp_path / "model.onnx").is_file() and not (tmp_path / "searched" / "model.onnx").exists()
    report = json.loads((tmp_path / "searched" / "report.json").read_text())
    assert report["budget_ms"] == 2.0  # the budget stored by the search
    assert result.exit_code == (0 if report["measured_median_ms"] <= 2.0 else 1), result.output

    payload = torch.load(trained_checkpoint, weights_only=False)
    del payload["record"]["metrics"]["latency_budget_ms"]
    unbudgeted = tmp_path / "unbudgeted.pt"
    torch.save(payload, unbudgeted)
    result = CliRunner().invoke(app, args[:3] + [str(unbudgeted)] + args[4:] + ["--out-dir", str(tmp_path / "none")])
    assert isinstance(result.exception, NasDeployError) and "--strict needs a latency budget" in str(result.exception)
    assert not (tmp_path / "none").exists()  # refused before exporting anything


def test_export_without_a_path_writes_model_onnx_in_the_out_dir(tmp_path, trained_checkpoint):
    from nasdeploy.cli import app

    result = CliRunner().invoke(app, ["export", "--checkpoint", str(trained_checkpoint), "--out-dir", str(tmp_path / "out"),
                                      "--no-compare-torch", "--warmup", "1", "--repeats", "3"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.onnx", "report.json", "report.md"]


def test_fp16_and_tensorrt_flags_fail_before_exporting(tmp_path, trained_checkpoint):
    from nasdeploy.cli import app

    base = ["export", str(tmp_path / "x" / "model.onnx"), "--checkpoint", str(trained_checkpoint)]
    fp16 = CliRunner().invoke(app, base + ["--fp16"])
    assert isinstance(fp16.exception, NasDeployError) and "add --tensorrt" in str(fp16.exception)
    trt = CliRunner().invoke(app, base + ["--tensorrt"])  # device cpu: never a TensorRT target
    assert isinstance(trt.exception, NasDeployError) and "TensorRT needs an NVIDIA GPU" in str(trt.exception)
    assert "--device cuda:0" in str(trt.exception) and "\n" not in str(trt.exception)
    assert not (tmp_path / "x").exists()


def test_search_table_method_is_reused_for_measurement(tmp_path):
    from nasdeploy.export.deploy import predicted_latency

    table = tmp_path / "table.json"
    table.write_text(json.dumps({"method": {"warmup": 3, "repeats": 7, "threads": 1}}))
    record = darts_record()
    record.metrics["table"] = str(table)
    found = predicted_latency(record, None)
    assert (found["predicted_ms"], found["method"]["repeats"], found["table"]) == (1.0, 7, str(table))
    assert found["spot_check"] is None  # a file that does not read as a table: the search's prediction, unchecked
    record.metrics["table"] = str(tmp_path / "gone.json")
    assert predicted_latency(record, None)["method"] is None  # table gone: the default method


# ---------------------------------------------------------------- TensorRT


def test_tensorrt_needs_gpu_message():
    from nasdeploy.export.tensorrt_export import TENSORRT_HINT, require_tensorrt

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present; the no-GPU message is not reachable here")
    with pytest.raises(NasDeployError, match="TensorRT needs an NVIDIA GPU"):
        require_tensorrt("cuda:0")
    assert "pip install 'nasdeploy[tensorrt]'" in TENSORRT_HINT


@pytest.mark.gpu
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_tensorrt_engine_parity(tmp_path, fp16):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    pytest.importorskip("tensorrt", reason="tensorrt package not installed")
    from nasdeploy.export.tensorrt_export import export_tensorrt

    net = conv_net()
    onnx_path = tmp_path / "net.onnx"
    export_onnx(net, (1, 3, 32, 32), onnx_path)
    engine = tmp_path / "net.engine"
    result = export_tensorrt(net, onnx_path, engine, (1, 3, 32, 32), fp16=fp16, real_inputs=digits_batch(16))
    assert engine.is_file() and result.passed and result.max_abs_diff <= result.atol


def test_tensorrt_profile_shapes_cover_the_measured_batch():
    from nasdeploy.hardware.tensorrt_backend import MAX_BATCH, profile_shapes

    assert profile_shapes((-1, 3, 32, 32), (8, 3, 32, 32)) == ((1, 3, 32, 32), (8, 3, 32, 32), (MAX_BATCH, 3, 32, 32))
    assert profile_shapes((-1, 3, 32, 32), (128, 3, 32, 32))[2] == (128, 3, 32, 32)
    assert profile_shapes((-1, 3, 32, 32), None) == ((1, 3, 32, 32), (1, 3, 32, 32), (MAX_BATCH, 3, 32, 32))


def test_tensorrt_networks_are_strongly_typed_where_the_flag_exists_and_failures_are_checked():
    from types import SimpleNamespace

    from nasdeploy.hardware.tensorrt_backend import check, network_flags

    assert network_flags(SimpleNamespace(NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=1))) == 2
    assert network_flags(SimpleNamespace(NetworkDefinitionCreationFlag=SimpleNamespace())) == 0
    check(True, "execute_async_v3")
    with pytest.raises(NasDeployError, match="TensorRT execute_async_v3 failed"):
        check(False, "execute_async_v3")


def test_dynamic_batch_onnx_for_an_engine_has_a_symbolic_batch(tmp_path):
    import onnx

    from nasdeploy.hardware.onnx_file import export_module

    path = export_module(nn.Conv2d(3, 4, 3), (2, 3, 8, 8), tmp_path / "dyn.onnx", dynamic_batch=True)
    batch = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value
    fixed = export_module(nn.Conv2d(3, 4, 3), (2, 3, 8, 8), tmp_path / "fixed.onnx")
    assert onnx.load(str(fixed)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


@pytest.mark.gpu
def test_tensorrt_measures_the_engine_file_it_is_given(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    pytest.importorskip("tensorrt", reason="tensorrt package not installed")
    from nasdeploy.export.tensorrt_export import build_engine
    from nasdeploy.hardware import MeasureMethod, get_backend
    from nasdeploy.hardware.onnx_file import export_module

    onnx_path = export_module(nn.Conv2d(3, 4, 3), (1, 3, 16, 16), tmp_path / "c.onnx", dynamic_batch=True)
    build_engine(onnx_path, tmp_path / "c.engine")
    backend = get_backend("tensorrt", "cuda:0", MeasureMethod(warmup=2, repeats=5))
    for batch in (1, 8):  # a dynamic-batch engine re-measured at another batch (optimisation profile)
        assert len(backend.measure_onnx(tmp_path / "c.engine", (batch, 3, 16, 16)).samples_ms) == 5


def test_run_summary_keeps_torch_graph_and_eager_apart():
    from nasdeploy.pipeline import medians_by_runtime

    report = {"runtime": "onnxruntime", "measured_median_ms": 1.0, "comparisons": [
        {"runtime": "torch", "device": "cuda:0", "median_ms": 2.5, "method": {"execution": "cuda-graph"}},
        {"runtime": "torch", "device": "cuda:0", "median_ms": 17.0, "method": {"execution": "eager"}}]}
    assert medians_by_runtime(report) == ({"onnxruntime": 1.0, "torch": 2.5}, 17.0)
    on_cpu = {"runtime": "onnxruntime", "measured_median_ms": 1.0,
              "comparisons": [{"runtime": "torch", "device": "cpu", "median_ms": 9.0, "method": {"execution": "eager"}}]}
    assert medians_by_runtime(on_cpu) == ({"onnxruntime": 1.0, "torch": 9.0}, None)
