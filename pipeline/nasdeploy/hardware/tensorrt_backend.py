"""TensorRT 10.x / 11.x: build an engine from ONNX (GPU only), time ``execute_async_v3`` with CUDA events.

Written against the TensorRT 10 and 11 Python API and **not run here** (no machine of this project can install
TensorRT; README, GPU section). What it relies on: networks are strongly typed (types come from the ONNX, so an fp16
engine comes from an fp16 ONNX; ``BuilderFlag.FP16`` is deprecated in 10.12 and gone in 11); a dynamic input needs an
optimisation profile; output shapes are read from the execution context once input shapes are set; every
``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3`` returns False on failure; ``execute_async_v3`` on
the legacy default stream makes TensorRT add synchronisations, so it runs on a stream of its own; objects are made
and run under the device guard of ``cuda:N``. ``tensorrt`` is imported lazily so the rest of nasdeploy works without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from nasdeploy.errors import NasDeployError
from nasdeploy.hardware.base import BACKENDS, Availability, Backend, MeasureMethod, Timing
from nasdeploy.hardware.devices import cuda_index, require_device
from nasdeploy.hardware.onnx_file import temporary_onnx
from nasdeploy.hardware.timing import time_cuda

INSTALL_HINT = "pip install 'nasdeploy[tensorrt]' on a host with an NVIDIA GPU"


def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise NasDeployError(f"TensorRT is not installed; {INSTALL_HINT}, or use --runtime onnxruntime") from None
    return tensorrt


def builder_problem(trt, device: str) -> str:
    """Why TensorRT cannot build on ``device`` ("" when it can): importable is not enough (libraries, driver)."""
    import torch

    try:
        with torch.cuda.device(require_device(device)):
            builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as exc:  # any failure of the library means the runtime is not usable here
        return f"tensorrt {trt.__version__} cannot create a builder on {device} ({type(exc).__name__}: {exc})"
    return "" if builder is not None else f"tensorrt {trt.__version__} returned no builder on {device}"


ENGINE_SUFFIXES = (".engine", ".plan")  # a serialised engine is measured as written, never rebuilt
MAX_BATCH = 64  # the largest batch a dynamic-batch engine's optimisation profile admits (unless asked for more)


def network_flags(trt) -> int:
    """Strongly typed where the flag exists (TensorRT >= 9.1; in 11 the only mode): tensor types are the ONNX's."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def profile_shapes(network_shape: tuple[int, ...], measured: tuple[int, ...] | None,
                   max_batch: int = MAX_BATCH) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) of an input with dynamic (-1) dimensions: 1 .. max(max_batch, measured), tuned at ``measured``."""
    measured = measured or tuple(1 if d < 0 else d for d in network_shape)
    low = tuple(1 if d < 0 else d for d in network_shape)
    opt = tuple(m if d < 0 else d for d, m in zip(network_shape, measured))
    high = tuple(max(max_batch, m) if d < 0 else d for d, m in zip(network_shape, measured))
    return low, opt, high


def check(ok: Any, what: str) -> None:
    """TensorRT reports these failures by return value, not by exception."""
    if not ok:
        raise NasDeployError(f"TensorRT {what} failed; see the TensorRT log above (run with -v), or export again")


def build_plan(trt, onnx_path: Path, logger, input_shape: tuple[int, ...] | None = None) -> bytes:
    """A serialised engine for ``onnx_path``: fp32 with TF32 off (parity 1e-3), fp16 when the ONNX is fp16."""
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise NasDeployError(f"TensorRT cannot parse {onnx_path}: {errors}; export again with another opset")
    config = builder.create_builder_config()
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    dynamic = [network.get_input(i) for i in range(network.num_inputs) if any(d < 0 for d in network.get_input(i).shape)]
    if dynamic:
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            profile.set_shape(tensor.name, *profile_shapes(tuple(tensor.shape), input_shape))
        check(config.add_optimization_profile(profile) >= 0, "add_optimization_profile")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise NasDeployError(f"TensorRT could not build an engine from {onnx_path}; see the TensorRT log")
    return bytes(plan)


def load_engine(trt, plan: bytes, logger):
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:
        raise NasDeployError("TensorRT cannot load this engine (built by another TensorRT version or for another GPU); "
                             "export it again on this machine")
    return engine


def bind(trt, engine, context, input_shape: tuple[int, ...], device) -> list:
    """Buffers for every I/O tensor: inputs at ``input_shape``, outputs at the shapes the context then reports."""
    import torch

    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    for name in inputs:
        check(context.set_input_shape(name, tuple(input_shape)), f"set_input_shape({name}, {tuple(input_shape)})")
    buffers = []
    for name in inputs + [n for n in names if n not in inputs]:
        shape = tuple(context.get_tensor_shape(name))
        dtype = torch.float16 if engine.get_tensor_dtype(name) == trt.DataType.HALF else torch.float32
        buffers.append(torch.randn(shape, device=device, dtype=dtype) if name in inputs else torch.empty(shape, device=device, dtype=dtype))
        check(context.set_tensor_address(name, buffers[-1].data_ptr()), f"set_tensor_address({name})")
    return buffers


def engine_dtype(trt, engine, asked: str) -> str:
    """The engine's input type ("float16" | "float32"); fp16 asked of an fp32 engine is refused: a strongly typed
    network cannot be made half precision by a flag, only by an fp16 ONNX."""
    first_input = next(engine.get_tensor_name(i) for i in range(engine.num_io_tensors)
                       if engine.get_tensor_mode(engine.get_tensor_name(i)) == trt.TensorIOMode.INPUT)
    found = "float16" if engine.get_tensor_dtype(first_input) == trt.DataType.HALF else "float32"
    if asked == "float16" and found != "float16":
        raise NasDeployError("an fp16 TensorRT engine comes from an fp16 ONNX (TensorRT 11 has no fp16 builder flag): "
                             "nasdeploy export --tensorrt --fp16 writes one, or measure with --dtype float32")
    return found


def enqueue(context, stream) -> None:
    check(context.execute_async_v3(stream.cuda_stream), "execute_async_v3")


@BACKENDS.register("tensorrt")
class TensorRTBackend(Backend):
    name = "tensorrt"
    preference = {"cuda": 0}

    @classmethod
    def availability(cls, device: str) -> Availability:
        if cuda_index(device) is None:
            return Availability(cls.name, False, None, "TensorRT runs only on NVIDIA GPUs", "use --device cuda:N")
        try:
            trt = import_tensorrt()
        except NasDeployError:
            return Availability(cls.name, False, None, "tensorrt is not installed", INSTALL_HINT)
        problem = builder_problem(trt, device)
        if problem:
            return Availability(cls.name, False, trt.__version__, problem, INSTALL_HINT)
        return Availability(cls.name, True, trt.__version__, install=INSTALL_HINT)

    def __init__(self, device: str, method: MeasureMethod):
        super().__init__(device, method)
        if cuda_index(device) is None:
            raise NasDeployError("TensorRT runs only on NVIDIA GPUs; use --device cuda:N, or --runtime torch/onnxruntime on cpu")
        self.trt = import_tensorrt()
        self.cuda_index = require_device(device)
        if method.dtype not in ("float32", "float16"):
            raise NasDeployError(f"TensorRT backend builds float32 or float16 engines, not {method.dtype!r}; pick one with --dtype")
        self.logger = self.trt.Logger(self.trt.Logger.ERROR)
        self.method.clock = "cuda-event"

    def measure_onnx(self, onnx_path: Path, input_shape: tuple[int, ...]) -> Timing:
        """An ONNX file is built here (its types decide fp32/fp16); an ``.engine`` file is measured as written."""
        import torch

        with torch.cuda.device(self.cuda_index):
            if Path(onnx_path).suffix in ENGINE_SUFFIXES:
                plan = Path(onnx_path).read_bytes()
            else:
                plan = build_plan(self.trt, onnx_path, self.logger, input_shape)
            return self.measure_plan(plan, input_shape)

    def measure_plan(self, plan: bytes, input_shape: tuple[int, ...]) -> Timing:
        import torch

        device = torch.device("cuda", self.cuda_index)
        with torch.cuda.device(device):
            engine = load_engine(self.trt, plan, self.logger)
            self.method.dtype = engine_dtype(self.trt, engine, self.method.dtype)  # what was measured, recorded
            context = engine.create_execution_context()
            buffers = bind(self.trt, engine, context, input_shape, device)
            stream = torch.cuda.Stream(device)  # not the legacy default stream: no implicit synchronisations
            stream.wait_stream(torch.cuda.current_stream(device))  # the random inputs are written
            with torch.cuda.stream(stream):  # CUDA events record on this stream
                timing = time_cuda(lambda: enqueue(context, stream), self.method, self.cuda_index)
            del buffers  # the engine read and wrote them until here
            return timing

    def measure_module(self, module: nn.Module, input_shape: tuple[int, ...]) -> Timing:
        from nasdeploy.hardware.torch_backend import torch_dtype

        with temporary_onnx(module, input_shape, torch_dtype(self.method.dtype), f"cuda:{self.cuda_index}") as path:
            return self.measure_onnx(path, input_shape)

    def versions(self) -> dict[str, str]:
        import torch

        return {"tensorrt": self.trt.__version__, "torch": torch.__version__, "cuda": str(torch.version.cuda)}
