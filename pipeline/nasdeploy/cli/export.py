"""``nasdeploy export`` (checkpoint -> validated ONNX/TensorRT + report) and ``nasdeploy measure`` (any ONNX file)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from nasdeploy.cli.app import app
from nasdeploy.cli.table_policy import recalibrate_option, table_policy, tolerance_option, trust_option
from nasdeploy.progress import console, setup_logging


@app.command()
def export(
    onnx_path: Optional[Path] = typer.Argument(None, help="Where to write the model, e.g. model.onnx, or model.pte for an "
                                               "ExecuTorch (XNNPACK) program re-measured on ExecuTorch (default: model.onnx in "
                                               "--out-dir, else in exports/<checkpoint folder>/)."),
    checkpoint: Optional[Path] = typer.Option(None, help="model.pt written by 'nasdeploy train' (default: the trained model of "
                                              "the latest search or run folder under runs/, retrained first if it never was)."),
    budget: Optional[str] = typer.Option(None, help="Latency budget, e.g. 22ms (default: the one searched for)."),
    table: Optional[Path] = typer.Option(None, help="Latency table for the prediction (default: the search's prediction)."),
    runtime: Optional[str] = typer.Option(None, help="Runtime to re-measure on: onnxruntime | tensorrt | torch | executorch "
                                          "(default: tensorrt with --tensorrt, else the device's best present)."),
    device: str = typer.Option("cpu", help="cpu | cuda:N."),
    tensorrt: bool = typer.Option(False, "--tensorrt", help="Also build a TensorRT engine on --device cuda:N, check its parity "
                                  "(fp32: max abs diff ≤ 1e-3) and re-measure it there. GPU only."),
    fp16: bool = typer.Option(False, "--fp16", help="Build the TensorRT engine in fp16 (tolerance 1e-2 × max |logit|, top-1 ≥ 99 %)."),
    strict: bool = typer.Option(False, "--strict", help="Exit with code 1 when the measured median latency exceeds the budget."),
    out_dir: Optional[Path] = typer.Option(None, help="Folder for report.json, report.md and the TensorRT engine "
                                           "(default: the ONNX file's folder)."),
    exporter: str = typer.Option("legacy", help="torch.onnx exporter: legacy (TorchScript, opset 17) | dynamo (opset 18)."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Export with a dynamic batch axis."),
    format: Optional[str] = typer.Option(None, "--format", help="onnx | pte (default: from the file name's suffix)."),
    atol: float = typer.Option(1e-4, help="fp32 parity tolerance: max |ONNX Runtime − PyTorch| on logits."),
    data: Optional[str] = typer.Option(None, help="Dataset for the real parity inputs (default: the training data)."),
    compare_torch: bool = typer.Option(True, help="Also measure the PyTorch module on the same device for comparison "
                                       "(on a GPU: as CUDA-graph replays and eager)."),
    warmup: Optional[int] = typer.Option(None, help="Untimed runs before timing (default: the table's method, else 10)."),
    repeats: Optional[int] = typer.Option(None, help="Timed runs (default: the table's method, else 50)."),
    spot_check_tolerance: float = tolerance_option(),
    recalibrate: bool = recalibrate_option(),
    trust_table: bool = trust_option(),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also log debug detail."),
) -> None:
    """Export the inference graph to ONNX_PATH, prove parity, re-measure on the target runtime and write report.json/.md
    beside it (or in --out-dir).

    Without --checkpoint, exports the trained model of the latest search or run folder under runs/; an
    architecture that was never retrained is retrained first with its preset's recipe (tiny, cpu) or, for
    the paper preset, export stops naming the 'nasdeploy train' command to run.
    """
    from nasdeploy.errors import NasDeployError
    from nasdeploy.export.deploy import ExportOptions, export_checkpoint, torch_comparisons
    from nasdeploy.export.report import summary_table
    from nasdeploy.hardware.devices import require_device
    from nasdeploy.units import parse_latency

    setup_logging(verbose)
    require_device(device)  # before any work, even the retraining an export without --checkpoint may start
    policy = table_policy(spot_check_tolerance, recalibrate, trust_table)
    if checkpoint is None:
        from nasdeploy.export.latest import latest_trained_model

        checkpoint, found = latest_trained_model()
        default_folder = Path("exports") / found.name
        console.print(f"checkpoint: {checkpoint} (the latest search, {found.arch})")
    else:
        default_folder = Path("exports") / (checkpoint.resolve().parent.name or "model")
    if strict and budget is None:
        _require_searched_budget(checkpoint)
    options = ExportOptions(
        budget_ms=parse_latency(budget) if budget else None, table=table, runtime=runtime, device=device,
        tensorrt=tensorrt, fp16=fp16, exporter=exporter, dynamic_batch=dynamic_batch, format=format, atol=atol, data=data,
        compare=torch_comparisons(device) if compare_torch else [],
        method={k: v for k, v in {"warmup": warmup, "repeats": repeats}.items() if v is not None}, table_policy=policy,
    )
    onnx_path = onnx_path or (out_dir or default_folder) / "model.onnx"
    folder = out_dir or onnx_path.parent
    report = export_checkpoint(checkpoint, onnx_path, folder, options)
    console.print(summary_table(report))
    console.print(f"model: {onnx_path}; report: {folder / 'report.json'} and {folder / 'report.md'}")
    if strict and report["budget_ms"] is None:
        raise NasDeployError("--strict needs a latency budget, and none was given or searched for; pass --budget, e.g. --budget 22ms")
    if strict and report["within_budget"] is False:
        console.print(f"[bold red]measured {report['measured_median_ms']:.3f} ms exceeds the budget {report['budget_ms']:.4g} ms (--strict)[/]")
        raise typer.Exit(code=1)


def _require_searched_budget(checkpoint: Path) -> None:
    """--strict without --budget: the checkpoint's searched budget must exist (checked before exporting)."""
    from nasdeploy.errors import NasDeployError
    from nasdeploy.io import load_checkpoint

    payload = load_checkpoint(checkpoint, "trained model")
    record = payload.get("record", {}) if isinstance(payload, dict) else {}
    if (record.get("metrics") or {}).get("latency_budget_ms") is None:
        raise NasDeployError(f"--strict needs a latency budget and {checkpoint} was not searched under one; pass --budget, e.g. --budget 22ms")


@app.command()
def measure(
    model: Path = typer.Argument(..., help="ONNX file to measure, a .pte (ExecuTorch), or a searched arch.json (with --table)."),
    table: Optional[Path] = typer.Option(None, help="With an arch.json: the latency table whose backend and method measure it."),
    allow_other_machine: bool = typer.Option(False, help="With an arch.json: measure even if the table was profiled on another machine."),
    runtime: Optional[str] = typer.Option(None, help="onnxruntime | tensorrt (default: the device's best present that runs ONNX); "
                                          "a .pte runs on executorch."),
    device: str = typer.Option("cpu", help="cpu | cuda:N."),
    batch: Optional[int] = typer.Option(None, help="Batch size for a graph with a dynamic batch axis."),
    input_shape: Optional[str] = typer.Option(None, help="Input shape, e.g. 1,3,224,224 (default: read from the graph)."),
    warmup: int = typer.Option(10, help="Untimed runs first."),
    repeats: int = typer.Option(50, help="Timed runs."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (default 1, as the profiler)."),
    dtype: str = typer.Option("float32", help="float32 | float16."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the measurement as JSON here."),
    spot_check_tolerance: float = tolerance_option(),
    recalibrate: bool = recalibrate_option(),
    trust_table: bool = trust_option(),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also log debug detail."),
) -> None:
    """Measure any ONNX file with the profiler's method and print median/p10/p90 with device and versions.

    Given a searched ``arch.json`` and ``--table``, builds the architecture on the table's template and
    measures it on the table's own backend and method, next to its LUT-predicted latency.
    """
    from nasdeploy.errors import NasDeployError
    from nasdeploy.export.measure import ONNX_RUNTIMES, onnx_measurement, parse_shape
    from nasdeploy.hardware import MeasureMethod
    from nasdeploy.hardware.devices import require_device
    from nasdeploy.hardware.runtimes import resolve_runtime
    from nasdeploy.io import atomic_write_json

    setup_logging(verbose)
    require_device(device)  # before any work
    if model.suffix == ".json":
        measure_arch(model, table, json_out, allow_other_machine, table_policy(spot_check_tolerance, recalibrate, trust_table))
        return
    if runtime is not None and runtime not in ONNX_RUNTIMES and model.suffix != ".pte":
        raise NasDeployError(f"measure takes an ONNX file, so --runtime is one of {', '.join(ONNX_RUNTIMES)}, not {runtime!r}")
    if warmup < 0 or repeats < 1 or (batch is not None and batch < 1):
        raise NasDeployError("--warmup must be >= 0, --repeats and --batch >= 1; e.g. --warmup 10 --repeats 50")
    shape = parse_shape(input_shape)
    if shape is not None and batch is not None:
        shape = (batch,) + shape[1:]
    method = MeasureMethod(warmup=warmup, repeats=repeats, threads=threads, dtype=dtype, batch=batch or 1)
    if model.suffix == ".pte":  # an ExecuTorch program runs on ExecuTorch only
        from nasdeploy.export.pte_export import pte_measurement, pte_runtime

        pte_runtime(runtime, False, device)
        result = pte_measurement(model, device, method, shape).to_dict()
    else:
        result = onnx_measurement(model, resolve_runtime(device, runtime, needs_onnx=True).runtime, device, method, shape).to_dict()
    console.print(measurement_table(model, result))
    if json_out is not None:
        atomic_write_json(json_out, {"model": str(model), **result})
        console.print(f"wrote {json_out}")


def measure_arch(arch_path: Path, table_path: Optional[Path], json_out: Optional[Path], allow_other_machine: bool = False,
                 policy=None) -> None:
    """``nasdeploy measure arch.json --table T``: the table's spot check, then predicted vs measured on its backend."""
    from nasdeploy.errors import NasDeployError
    from nasdeploy.hardware.devices import require_device
    from nasdeploy.io import atomic_write_json
    from nasdeploy.latency.table import load_table
    from nasdeploy.latency.trust import TablePolicy, spot_check
    from nasdeploy.latency.validate import check_same_machine, measure_architecture
    from nasdeploy.spaces.record import ArchitectureRecord

    if table_path is None:
        raise NasDeployError(f"{arch_path} is an architecture: pass --table LUT.json to measure it on that table's backend")
    record = ArchitectureRecord.load(arch_path)
    lut = load_table(table_path, space=record.space)
    require_device(lut.device)  # measured on the table's device, which must be here
    check_same_machine(lut, allow_other_machine)  # refused before the spot check measures anything
    check = spot_check(lut, policy or TablePolicy())
    result = {**measure_architecture(lut, record, allow_other_machine), "spot_check": check}
    table = Table(title=f"latency of {arch_path}", show_header=False)
    table.add_row("runtime / device", f"{result['runtime']} / {result['device']}")
    table.add_row("LUT-predicted (ms)", f"{result['predicted_ms']:.4f} (table {result['predicted_table_ms']:.4f} × drift "
                  f"{result['speed_ratio']:.3f})")
    table.add_row("measured median (ms)", f"{result['measured_median_ms']:.4f} (p10 {result['measured_p10_ms']:.4f}, "
                  f"p90 {result['measured_p90_ms']:.4f})")
    table.add_row("prediction error", f"{100 * result['prediction_error']:+.1f} %")
    if result["budget_ms"] is not None:
        within = "within" if result["measured_median_ms"] <= result["budget_ms"] else "OVER"
        table.add_row("budget (ms)", f"{result['budget_ms']:.4g} (measured {within})")
    table.add_row("latency table", f"{table_path}: {check['summary']}")
    console.print(table)
    if json_out is not None:
        atomic_write_json(json_out, {"model": str(arch_path), **result})
        console.print(f"wrote {json_out}")


def measurement_table(model: Path, result: dict) -> Table:
    table = Table(title=f"latency of {model.name}", show_header=False)
    table.add_row("runtime / device", f"{result['runtime']} / {result['device']}")
    table.add_row("input shape", "×".join(str(d) for d in result["input_shape"]))
    for key in ("median_ms", "p10_ms", "p90_ms", "iqr_ms", "mean_ms"):
        table.add_row(key.replace("_ms", " (ms)"), f"{result[key]:.4f}")
    m = result["method"]
    table.add_row("method", f"warm-up {m['warmup']}, {m['repeats']} runs, {m['threads']} thread(s), {m['dtype']}")
    fp = result["fingerprint"]
    table.add_row("device", (fp.get("gpu") or {}).get("name") or f"{fp.get('cpu_model')} ({fp.get('logical_cores')} cores)")
    table.add_row("versions", ", ".join(f"{k} {v}" for k, v in result["versions"].items()))
    return table
