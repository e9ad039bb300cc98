"""The ``nasdeploy export`` flow: trained checkpoint -> ONNX (+ TensorRT) with parity -> re-measure -> report.

One function per step; :func:`export_checkpoint` runs them in order and returns the report dict.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from nasdeploy.errors import NasDeployError
from nasdeploy.io import read_json
from nasdeploy.export.measure import method_from_dict, module_measurement, onnx_measurement
from nasdeploy.export import pte_export
from nasdeploy.export.onnx_export import FP32_ATOL, export_onnx
from nasdeploy.export.report import build_report, write_report
from nasdeploy.hardware import BACKENDS, MeasureMethod
from nasdeploy.hardware.base import Availability
from nasdeploy.hardware.runtimes import probe_runtimes
from nasdeploy.spaces.record import ArchitectureRecord

log = logging.getLogger(__name__)

@dataclass
class ExportOptions:
    budget_ms: float | None = None  # None: the budget the architecture was searched for
    table: Path | None = None  # LUT for the prediction; None: the prediction stored by the search
    runtime: str | None = None  # where the deployed net is re-measured; None: tensorrt with --tensorrt, else the device's best
    device: str = "cpu"
    tensorrt: bool = False
    fp16: bool = False
    exporter: str = "legacy"
    dynamic_batch: bool = False
    format: str | None = None  # "onnx" | "pte" (ExecuTorch); None: the file name's suffix decides
    atol: float = FP32_ATOL
    real_inputs: int = 32  # dataset images checked for parity
    data: str | None = None  # None: the dataset the model was trained on
    # extra measurements: (runtime, device) run that runtime's default way, (runtime, device, execution) another way
    compare: list[tuple[str, ...]] = field(default_factory=list)
    method: dict[str, Any] | None = None  # MeasureMethod fields overriding the table's method (else the defaults)
    table_policy: Any = None  # latency.trust.TablePolicy for the prediction's table (None: the defaults)


def target_runtime(options: ExportOptions) -> str:
    """The runtime the deployed net is re-measured on: ``options.runtime`` (checked present), tensorrt with
    --tensorrt, else the device's best present runtime (``hardware.runtimes.resolve_runtime``, as search and run)."""
    from nasdeploy.hardware.runtimes import resolve_runtime

    if options.runtime is None and options.tensorrt:
        return "tensorrt"  # checked by require_tensorrt before any work
    return resolve_runtime(options.device, options.runtime).runtime


def file_sha256(path: Path | str) -> str | None:
    """Hex SHA-256 of a file (None if absent): ties a report to the exact checkpoint it was made from."""
    import hashlib

    path = Path(path)
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def real_batch(data_spec: str, input_size: int, count: int) -> torch.Tensor:
    """The first ``count`` test images of ``data_spec`` (no augmentation): the real parity inputs."""
    from nasdeploy.train.data import load_dataset

    dataset, _ = load_dataset(data_spec, train=False, input_size=input_size)
    count = min(count, len(dataset))
    return torch.stack([dataset[i][0] for i in range(count)])


def predicted_latency(record: ArchitectureRecord, table_path: Path | None, policy=None) -> dict[str, Any]:
    """The LUT prediction in today's ms, from ``table_path`` or else the search's own table, after that table's spot check
    (which measures the machine's drift and scales the prediction by it; a refused table stops here).

    Keys: ``predicted_ms``, ``predicted_table_ms`` (as profiled), ``speed_ratio``, ``method`` (the table's), ``table``,
    ``spot_check``. When no table is here any more, the search's recorded prediction, unchecked.
    """
    from nasdeploy.latency.predictor import predict_latency_ms
    from nasdeploy.latency.trust import TablePolicy, spot_check

    table = given_table(record, table_path) if table_path is not None else searched_table(record)
    if table is None:
        name = record.metrics.get("table")
        return {"predicted_ms": record.metrics.get("predicted_latency_ms"), "predicted_table_ms": None, "speed_ratio": None,
                "method": recorded_method(name), "table": name, "spot_check": None}
    check = spot_check(table, policy or TablePolicy())
    return {"predicted_ms": predict_latency_ms(table, record.arch, record.search_space, record.template),
            "predicted_table_ms": predict_latency_ms(table, record.arch, record.search_space, record.template, scaled=False),
            "speed_ratio": table.speed_ratio, "method": dict(table.method), "table": str(table.path), "spot_check": check}


def recorded_method(table_name: str | None) -> dict[str, Any] | None:
    """The measurement method a table file records, even when the file no longer reads as a whole table."""
    if not table_name or not Path(table_name).is_file():
        return None
    try:
        return read_json(table_name, "latency table").get("method")
    except (NasDeployError, AttributeError):
        return None


def given_table(record: ArchitectureRecord, table_path: Path):
    from nasdeploy.latency.table import load_table

    return load_table(table_path, space=record.space, template=record.template)


def searched_table(record: ArchitectureRecord):
    """The table the search predicted with, when it is still here and still reads; else None (logged)."""
    from nasdeploy.latency.table import load_table

    name = record.metrics.get("table")
    if not name or not Path(name).is_file():
        if name:
            log.warning("latency table %s is not here any more: the search's prediction is reported without a spot check", name)
        return None
    try:
        return load_table(name, space=record.space, template=record.template)
    except NasDeployError as exc:
        log.warning("the search's prediction is reported without a spot check: %s", exc)
        return None


def torch_comparisons(device: str) -> list[tuple[str, ...]]:
    """torch on ``device`` as it runs by default (CUDA graphs on a GPU) and, on a GPU, eager as well, so a report
    shows both ways the same network runs in PyTorch."""
    from nasdeploy.hardware.devices import cuda_index

    return [("torch", device)] + ([("torch", device, "eager")] if cuda_index(device) is not None else [])


def comparison_plan(compare: list[tuple[str, ...]], target: str, device: str,
                    probe: Callable[[str, list[str]], Mapping[str, Availability]] = probe_runtimes):
    """(the comparisons to measure as (runtime, device, execution), the ones skipped): a comparison whose runtime is
    absent on its device is skipped with its reason and fix (logged, a line in the report), never an error: it is not
    what is deployed. One that repeats the target measurement is dropped."""
    wanted, skipped = [], []
    for runtime, where, *how in compare:
        execution = how[0] if how else "auto"
        if (runtime, where, execution) == (target, device, "auto"):
            continue
        fact = probe(where, [runtime])[runtime]
        if fact.present:
            wanted.append((runtime, where, execution))
            continue
        skipped.append({"runtime": runtime, "device": where, "reason": f"{fact.missing}; {fact.install}"})
        log.warning("comparison %s on %s skipped: %s", runtime, where, skipped[-1]["reason"])
    return wanted, skipped


def measure_target(onnx_path: Path, model, input_shape, runtime: str, device: str,
                   method: MeasureMethod) -> dict[str, Any]:
    if onnx_path.suffix == ".pte" and runtime == "executorch":  # the program export wrote is the one measured
        from nasdeploy.export.pte_export import pte_measurement

        return pte_measurement(onnx_path, device, method, input_shape).to_dict()
    if not BACKENDS.get(runtime).measures_onnx:  # torch, executorch: the module itself, in that runtime
        return module_measurement(model, input_shape, runtime, device, method).to_dict()
    return onnx_measurement(onnx_path, runtime, device, method, input_shape).to_dict()


def deployed_file(files: dict[str, str], runtime: str, onnx_path: Path) -> Path:
    """The file the target runtime runs: the engine or ``.pte`` the export wrote and checked (not a rebuild), else the
    ONNX file."""
    if runtime == pte_export.RUNTIME and "pte" in files:
        return Path(files["pte"])
    return Path(files.get(f"{runtime}_engine", onnx_path))


def export_checkpoint(checkpoint: Path | str, onnx_path: str | Path, out_dir: Path | str | None, options: ExportOptions) -> dict[str, Any]:
    """Export, validate, re-measure and report: the ONNX file at ``onnx_path``; the TensorRT engine, report.json and
    report.md in ``out_dir``, or beside the ONNX file when ``out_dir`` is None. On runtime executorch the ``.pte`` is
    written beside the ONNX file (parity-checked too) and is what is re-measured; a ``.pte`` name (or format pte)
    writes only the ``.pte``."""
    from nasdeploy.hardware.devices import require_device
    from nasdeploy.train.trainer import load_trained_model

    require_device(options.device)  # before any work
    pte = pte_export.export_format(onnx_path, options.format) == "pte"
    runtime = pte_export.pte_runtime(options.runtime, options.tensorrt, options.device) if pte else target_runtime(options)
    wants_engine = options.tensorrt or runtime == "tensorrt"
    if options.fp16 and not wants_engine:
        raise NasDeployError("--fp16 applies to the TensorRT engine; add --tensorrt (GPU), or drop --fp16")
    if wants_engine:  # fail before any work, not after the ONNX export
        from nasdeploy.export.tensorrt_export import require_tensorrt

        require_tensorrt(options.device)
    if options.budget_ms is not None and options.budget_ms <= 0:
        raise NasDeployError(f"latency budget must be positive, got {options.budget_ms} ms; pass e.g. --budget 22ms")
    onnx_path = Path(onnx_path)
    out_dir = onnx_path.parent if out_dir is None else Path(out_dir)
    model, payload = load_trained_model(checkpoint)
    record = ArchitectureRecord.from_json(payload["record"], source=str(checkpoint))
    input_shape = tuple(payload["input_shape"])
    data_spec = options.data or payload["data"]["spec"]
    real = real_batch(data_spec, input_shape[-1], options.real_inputs)
    # the prediction's table is spot-checked (drift and shape) before anything is exported: a refused table stops here
    prediction = predicted_latency(record, options.table, options.table_policy)
    predicted, table_method, table_name = prediction["predicted_ms"], prediction["method"], prediction["table"]

    if pte:  # --format pte with an .onnx name writes the .pte beside where the ONNX file would go
        onnx_path = onnx_path.with_name(pte_export.pte_name(onnx_path))
        parity = [pte_export.export_pte(model, input_shape, onnx_path, options.atol, real).to_dict()]
    else:
        parity = [export_onnx(model, input_shape, onnx_path, options.atol, real, options.exporter, options.dynamic_batch).to_dict()]
    files = {"pte" if pte else "onnx": str(onnx_path), "checkpoint": str(checkpoint)}
    if runtime == pte_export.RUNTIME and not pte:  # the program ExecuTorch runs, beside the ONNX file (as a TensorRT engine)
        pte_path = onnx_path.with_name(pte_export.pte_name(onnx_path))
        parity.append(pte_export.export_pte(model, input_shape, pte_path, options.atol, real).to_dict())
        files["pte"] = str(pte_path)
    if wants_engine:
        from nasdeploy.export.tensorrt_export import export_tensorrt

        engine_path = out_dir / f"{onnx_path.stem}{'.fp16' if options.fp16 else ''}.engine"
        parity.append(export_tensorrt(model, onnx_path, engine_path, input_shape, options.fp16, real, options.device,
                                      options.dynamic_batch).to_dict())
        files["tensorrt_engine"] = str(engine_path)
        if options.fp16:
            files["tensorrt_fp16_onnx"] = str(onnx_path.with_suffix(".fp16.onnx"))  # the engine's source

    dtype = "float16" if options.fp16 and runtime == "tensorrt" else None
    overrides = {**(options.method or {}), "batch": input_shape[0]}
    if dtype is not None:
        overrides["dtype"] = dtype
    method = method_from_dict(table_method, **overrides)
    deployed = deployed_file(files, runtime, onnx_path)
    log.info("re-measuring %s on %s/%s (%d runs after %d warm-up, %d rounds as in the table: their best, or %s rounds and "
             "their median fast round if the machine is unsteady; latency.rounds)", deployed.name, runtime, options.device,
             method.repeats, method.warmup, method.rounds, method.max_rounds or method.rounds)
    measurement = measure_target(deployed, model, input_shape, runtime, options.device, method)
    wanted, skipped = comparison_plan(options.compare, runtime, options.device)
    if pte:  # no ONNX file was written to compare on
        wanted, skipped = pte_export.without_onnx(wanted, skipped)
    comparisons = [measure_target(onnx_path, model, input_shape, other, device,
                                  method_from_dict(method.to_dict(), dtype="float32", execution=execution))
                   for other, device, execution in wanted]
    budget = options.budget_ms if options.budget_ms is not None else record.metrics.get("latency_budget_ms")
    report = build_report(
        name=out_dir.name, files=files, budget_ms=budget, predicted_ms=predicted, measurement=measurement,
        parity=parity, model_metrics=payload.get("metrics", {}), comparisons=comparisons, table=table_name,
        extra={"space": record.space, "arch": record.to_json()["arch"], "input_shape": list(input_shape),
               "checkpoint_sha256": file_sha256(checkpoint), "spot_check": prediction["spot_check"],
               "predicted_table_ms": prediction["predicted_table_ms"], "speed_ratio": prediction["speed_ratio"],
               "skipped_comparisons": skipped},
    )
    json_path, md_path = write_report(report, out_dir)
    files.update({"report_json": str(json_path), "report_md": str(md_path)})
    return report
