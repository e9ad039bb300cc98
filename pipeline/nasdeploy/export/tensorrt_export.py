"""Build a TensorRT engine from a validated ONNX file and check it against PyTorch (GPU only).

Tolerances (logits of the same inputs as the ONNX check):
* fp32 engines: max |diff| <= 1e-3 (TF32 is switched off, so only kernel summation order differs);
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
    """Serialise a TensorRT engine for ``onnx_path`` to ``engine_path`` (atomic); returns the plan bytes."""
    trt = require_tensorrt(device)
    logger = trt.Logger(trt.Logger.ERROR)
    with torch.cuda.device(torch.device(device)):
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(Path(onnx_path).read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise NasDeployError(f"TensorRT cannot parse {onnx_path}: {errors}; export again with another opset")
        config = builder.create_builder_config()
        config.clear_flag(trt.BuilderFlag.TF32)
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        input_tensor = network.get_input(0)
        if any(d < 0 for d in input_tensor.shape):
            shape = tuple(1 if d < 0 else d for d in input_tensor.shape)
            profile = builder.create_optimization_profile()
            big = tuple(64 if d < 0 else d for d in input_tensor.shape)
            profile.set_shape(input_tensor.name, shape, shape, big)
            config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise NasDeployError(f"TensorRT could not build an engine from {onnx_path}; see the TensorRT log")
    data = bytes(plan)
    atomic_write_bytes(engine_path, data)
    return data


def run_engine(plan: bytes, batches: list[np.ndarray], device: str = "cuda:0") -> list[np.ndarray]:
    """Logits of a serialised engine for each input batch (buffers are torch CUDA tensors)."""
    trt = require_tensorrt(device)
    logger = trt.Logger(trt.Logger.ERROR)
    torch_device = torch.device(device)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    input_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    output_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
    stream = torch.cuda.current_stream(torch_device)  # same stream as the input copies
    outputs = []
    for batch in batches:
        x = torch.from_numpy(batch).to(torch_device).contiguous()
        context.set_input_shape(input_name, tuple(x.shape))
        out_dtype = torch.float16 if engine.get_tensor_dtype(output_name) == trt.DataType.HALF else torch.float32
        if engine.get_tensor_dtype(input_name) == trt.DataType.HALF:
            x = x.half()
        y = torch.empty(tuple(context.get_tensor_shape(output_name)), device=torch_device, dtype=out_dtype)
        context.set_tensor_address(input_name, x.data_ptr())
        context.set_tensor_address(output_name, y.data_ptr())
        context.execute_async_v3(stream.cuda_stream)
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
) -> ParityResult:
    """Build the engine and check it against PyTorch; a failed check deletes the engine and raises."""
    engine_path = Path(engine_path)
    plan = build_engine(onnx_path, engine_path, fp16, device)
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
            notes=[f"fp16 tolerance = {FP16_RTOL:g} x max|logit|, top-1 agreement >= {FP16_MIN_TOP1:g}" if fp16
                   else "fp32 engine built with TF32 off"],
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
