"""Build a TensorRT engine from a validated ONNX file and check it against PyTorch (GPU only).

Tolerances (logits of the same inputs as the ONNX check):
* fp32 engines: max |diff| <= 1e-3 (TF32 is switched off, so only kernel summation order differs);
* fp16 engines are built from an fp16 ONNX of the model (``<name>.fp16.onnx``): TensorRT 11 networks are strongly
  typed, with no fp16 builder flag, and 10.x builds them the same way;
* fp16 engines: max |diff| <= 1e-2 × max |logit| (relative to the logit scale) **and** top-1 agreement
  >= 99 % on the real inputs; half precision keeps ~3 significant digits, so an absolute 1e-4 is not
  attainable, while a wrong graph breaks both conditions by far.

``tensorrt`` is imported lazily; without a GPU or the package the error names the fix.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nasdeploy.errors import NasDeployError
from nasdeploy.export.onnx_export import ParityResult, compare, parity_inputs, torch_outputs
from nasdeploy.io import atomic_write_bytes

log = logging.getLogger(__name__)

TENSORRT_HINT = "TensorRT needs an NVIDIA GPU and the tensorrt package: pip install 'nasdeploy[tensorrt]' on a CUDA machine"
FP32_ATOL = 1e-3
FP16_RTOL = 1e-2
FP16_MIN_TOP1 = 0.99


def require_tensorrt(device: str = "cuda:0"):
    """The ``tensorrt`` module, or NasDeployError with :data:`TENSORRT_HINT`."""
    from nasdeploy.hardware.devices import cuda_index

    if cuda_index(device) is None:
        raise NasDeployError(f"{TENSORRT_HINT}; device {device!r} is not a GPU: pass --device cuda:0")
    if not torch.cuda.is_available():
        raise NasDeployError(f"{TENSORRT_HINT}; no CUDA GPU is visible on this machine (device {device!r})")
    try:
        import tensorrt
    except ImportError:
        raise NasDeployError(TENSORRT_HINT) from None
    return tensorrt


def fp16_tolerance(reference: np.ndarray) -> float:
    """Absolute tolerance for fp16 logits: 1 % of the largest logit magnitude."""
    return FP16_RTOL * float(np.max(np.abs(reference))) if reference.size else FP16_RTOL


def build_engine(onnx_path: Path, engine_path: Path, fp16: bool = False, device: str = "cuda:0") -> bytes:
    """Serialise a TensorRT engine for ``onnx_path`` to ``engine_path`` (atomic); returns the plan bytes.

    ``fp16`` must come with an fp16 ONNX (:func:`fp16_onnx`): networks are strongly typed (TensorRT 11 has no fp16
    flag), so the ONNX's types are the engine's; ``fp16`` here only checks that they are.
    """
    from nasdeploy.hardware.tensorrt_backend import build_plan, engine_dtype, load_engine

    trt = require_tensorrt(device)
    logger = trt.Logger(trt.Logger.ERROR)
    with torch.cuda.device(torch.device(device)):
        data = build_plan(trt, onnx_path, logger)
        engine_dtype(trt, load_engine(trt, data, logger), "float16" if fp16 else "float32")
    atomic_write_bytes(engine_path, data)
    return data


def fp16_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path, device: str, dynamic_batch: bool = False) -> Path:
    """The model in half precision as ONNX, traced on the GPU: the source of an fp16 engine."""
    import copy

    from nasdeploy.hardware.onnx_file import export_module

    return export_module(copy.deepcopy(model), tuple(input_shape), path, torch.float16, device, dynamic_batch)


def run_engine(plan: bytes, batches: list[np.ndarray], device: str = "cuda:0") -> list[np.ndarray]:
    """Logits of a serialised engine for each input batch, on a stream of its own under ``device``'s guard."""
    from nasdeploy.hardware.tensorrt_backend import bind, enqueue, load_engine

    trt = require_tensorrt(device)
    logger = trt.Logger(trt.Logger.ERROR)
    torch_device = torch.device(device)
    outputs = []
    with torch.cuda.device(torch_device):
        engine = load_engine(trt, plan, logger)
        context = engine.create_execution_context()
        stream = torch.cuda.Stream(torch_device)
        for batch in batches:
            x, y = bind(trt, engine, context, tuple(batch.shape), torch_device)  # one input, one output (logits)
            x.copy_(torch.from_numpy(batch).to(torch_device, x.dtype))
            stream.wait_stream(torch.cuda.current_stream(torch_device))  # the copy is done before the engine reads x
            enqueue(context, stream)
            stream.synchronize()
            outputs.append(y.float().cpu().numpy())
    return outputs


def export_tensorrt(
    model: nn.Module,
    onnx_path: Path,
    engine_path: Path,
    input_shape: tuple[int, ...],
    fp16: bool = False,
    real_inputs: torch.Tensor | None = None,
    device: str = "cuda:0",
    dynamic_batch: bool = False,
) -> ParityResult:
    """Build the engine and check it against PyTorch; a failed check deletes the engine and raises."""
    engine_path = Path(engine_path)
    source = (fp16_onnx(model, input_shape, Path(onnx_path).with_suffix(".fp16.onnx"), device, dynamic_batch) if fp16
              else Path(onnx_path))
    plan = build_engine(source, engine_path, fp16, device)
    try:
        random_batches, real_batches = parity_inputs(tuple(input_shape), real_inputs)
        model = model.eval().cpu().float()
        ref_random, ref_real = torch_outputs(model, random_batches), torch_outputs(model, real_batches)
        diff_random, agree_random = compare(ref_random, run_engine(plan, random_batches, device))
        diff_real, agree_real = (None, 1.0)
        if real_batches:
            diff_real, agree_real = compare(ref_real, run_engine(plan, real_batches, device))
        worst = max(diff_random, diff_real or 0.0)
        reference = np.concatenate(ref_random + ref_real)
        atol = fp16_tolerance(reference) if fp16 else FP32_ATOL
        agreement = agree_real if real_batches else agree_random
        passed = worst <= atol and (not fp16 or agreement >= FP16_MIN_TOP1)
        result = ParityResult(
            runtime=f"tensorrt-{'fp16' if fp16 else 'fp32'}", max_abs_diff=worst, atol=atol, passed=passed,
            top1_agreement=agreement, random_inputs=sum(len(b) for b in random_batches),
            real_inputs=sum(len(b) for b in real_batches), max_abs_diff_random=diff_random,
            max_abs_diff_real=diff_real, exporter="tensorrt", opset=0,
            notes=[f"fp16 engine built from {source.name} (strongly typed); tolerance = {FP16_RTOL:g} x max|logit|, "
                   f"top-1 agreement >= {FP16_MIN_TOP1:g}" if fp16 else "fp32 engine built with TF32 off"],
        )
        if not passed:
            raise NasDeployError(
                f"TensorRT engine differs from PyTorch by max |diff| {worst:.3g} (tolerance {atol:.3g}, top-1 agreement "
                f"{agreement:.3f}); {engine_path} was removed — try without --fp16"
            )
        log.info("TensorRT engine %s (parity max |diff| %.2e <= %.2e)", engine_path, worst, atol)
        return result
    except BaseException:
        engine_path.unlink(missing_ok=True)
        raise


def tensorrt_versions() -> dict[str, Any]:
    try:
        import tensorrt
    except ImportError:
        return {}
    return {"tensorrt": tensorrt.__version__}
