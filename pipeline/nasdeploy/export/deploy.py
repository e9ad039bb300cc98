"""The ``nasdeploy export`` flow: trained checkpoint -> ONNX (+ TensorRT) with parity -> re-measure -> report.

One function per step; :func:`export_checkpoint` runs them in order and returns the report dict.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nasdeploy.errors import NasDeployError
from nasdeploy.export.measure import method_from_dict, module_measurement, onnx_measurement
from nasdeploy.export.onnx_export import FP32_ATOL, export_onnx
from nasdeploy.export.report import build_report, write_report
from nasdeploy.hardware import MeasureMethod
from nasdeploy.spaces.record import ArchitectureRecord

log = logging.getLogger(__name__)

RUNTIMES = ("onnxruntime", "tensorrt", "torch")


@dataclass
class ExportOptions:
    budget_ms: float | None = None  # None: the budget the architecture was searched for
    table: Path | None = None  # LUT for the prediction; None: the prediction stored by the search
    runtime: str = "onnxruntime"  # where the deployed net is re-measured
    device: str = "cpu"
    tensorrt: bool = False
    fp16: bool = False
    exporter: str = "legacy"
    dynamic_batch: bool = False
    atol: float = FP32_ATOL
    real_inputs: int = 32  # dataset images checked for parity
    data: str | None = None  # None: the dataset the model was trained on
    compare: list[tuple[str, str]] = field(default_factory=list)  # extra (runtime, device) measurements
    method: dict[str, Any] | None = None  # MeasureMethod fields overriding the table's method (else the defaults)


def real_batch(data_spec: str, input_size: int, count: int) -> torch.Tensor:
    """The first ``count`` test images of ``data_spec`` (no augmentation): the real parity inputs."""
    from nasdeploy.train.data import load_dataset

    dataset, _ = load_dataset(data_spec, train=False, input_size=input_size)
    count = min(count, len(dataset))
    return torch.stack([dataset[i][0] for i in range(count)])


def predicted_latency(record: ArchitectureRecord, table_path: Path | None) -> tuple[float | None, dict[str, Any] | None, str | None]:
    """(LUT-predicted ms, the table's method, table path) — from ``table_path`` or the search's own record."""
    if table_path is None:
        return record.metrics.get("predicted_latency_ms"), None, record.metrics.get("table")
    from nasdeploy.latency.predictor import predict_latency_ms
    from nasdeploy.latency.table import load_table

    table = load_table(table_path, space=record.space, template=record.template)
    predicted = predict_latency_ms(table, record.arch, record.search_space, record.template)
    return predicted, dict(table.method), str(table_path)


def measure_target(onnx_path: Path, model, input_shape, runtime: str, device: str,
                   method: MeasureMethod) -> dict[str, Any]:
    if runtime == "torch":
        return module_measurement(model, input_shape, "torch", device, method).to_dict()
    return onnx_measurement(onnx_path, runtime, device, method, input_shape).to_dict()


def export_checkpoint(checkpoint: Path | str, onnx_name: str | Path, out_dir: Path | str, options: ExportOptions) -> dict[str, Any]:
    """Export, validate, re-measure and report; writes OUT/<onnx_name>, [engine], report.json, report.md."""
    from nasdeploy.train.trainer import load_trained_model

    if options.runtime not in RUNTIMES:
        raise NasDeployError(f"unknown runtime {options.runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    out_dir = Path(out_dir)
    model, payload = load_trained_model(checkpoint)
    record = ArchitectureRecord.from_json(payload["record"], source=str(checkpoint))
    input_shape = tuple(payload["input_shape"])
    data_spec = options.data or payload["data"]["spec"]
    real = real_batch(data_spec, input_shape[-1], options.real_inputs)

    onnx_path = out_dir / Path(onnx_name).name
    parity = [export_onnx(model, input_shape, onnx_path, options.atol, real, options.exporter, options.dynamic_batch).to_dict()]
    files = {"onnx": str(onnx_path), "checkpoint": str(checkpoint)}
    if options.tensorrt or options.runtime == "tensorrt":
        from nasdeploy.export.tensorrt_export import export_tensorrt

        engine_path = onnx_path.with_suffix(".fp16.engine" if options.fp16 else ".engine")
        parity.append(export_tensorrt(model, onnx_path, engine_path, input_shape, options.fp16, real, options.device).to_dict())
        files["tensorrt_engine"] = str(engine_path)

    predicted, table_method, table_name = predicted_latency(record, options.table)
    dtype = "float16" if options.fp16 and options.runtime == "tensorrt" else None
    overrides = {**(options.method or {}), "batch": input_shape[0]}
    if dtype is not None:
        overrides["dtype"] = dtype
    method = method_from_dict(table_method, **overrides)
    log.info("re-measuring %s on %s/%s (%d runs after %d warm-up)", onnx_path.name, options.runtime, options.device,
             method.repeats, method.warmup)
    measurement = measure_target(onnx_path, model, input_shape, options.runtime, options.device, method)
    comparisons = [measure_target(onnx_path, model, input_shape, runtime, device,
                                  method_from_dict(method.to_dict(), dtype="float32"))
                   for runtime, device in options.compare if (runtime, device) != (options.runtime, options.device)]
    budget = options.budget_ms if options.budget_ms is not None else record.metrics.get("latency_budget_ms")
    report = build_report(
        name=out_dir.name, files=files, budget_ms=budget, predicted_ms=predicted, measurement=measurement,
        parity=parity, model_metrics=payload.get("metrics", {}), comparisons=comparisons, table=table_name,
        extra={"space": record.space, "arch": record.to_json()["arch"], "input_shape": list(input_shape)},
    )
    json_path, md_path = write_report(report, out_dir)
    files.update({"report_json": str(json_path), "report_md": str(md_path)})
    return report
