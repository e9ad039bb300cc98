"""TensorRT: build an engine from ONNX (GPU only), time ``execute_async_v3`` with CUDA events.

``tensorrt`` is imported lazily so the rest of nasdeploy works without it.
"""

from __future__ import annotations

from pathlib import Path

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

    def build_engine(self, onnx_path: Path):
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(Path(onnx_path).read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise NasDeployError(f"TensorRT cannot parse {onnx_path}: {errors}; check the ONNX opset or export again")
        config = builder.create_builder_config()
        if self.method.dtype == "float16":
            config.set_flag(trt.BuilderFlag.FP16)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise NasDeployError(f"TensorRT could not build an engine from {onnx_path}; see the TensorRT log above")
        return trt.Runtime(self.logger).deserialize_cuda_engine(serialized)

    def measure_onnx(self, onnx_path: Path, input_shape: tuple[int, ...]) -> Timing:
        import torch

        trt = self.trt
        engine = self.build_engine(onnx_path)
        context = engine.create_execution_context()
        device = torch.device("cuda", self.cuda_index)
        buffers = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(engine.get_tensor_shape(name))
            dtype = torch.float16 if engine.get_tensor_dtype(name) == trt.DataType.HALF else torch.float32
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT and any(d < 0 for d in shape):
                context.set_input_shape(name, input_shape)
                shape = tuple(input_shape)
            buffers.append(torch.randn(shape, device=device, dtype=dtype))
            context.set_tensor_address(name, buffers[-1].data_ptr())
        stream = torch.cuda.current_stream(device)
        return time_cuda(lambda: context.execute_async_v3(stream.cuda_stream), self.method, self.cuda_index)

    def measure_module(self, module: nn.Module, input_shape: tuple[int, ...]) -> Timing:
        with temporary_onnx(module, input_shape) as path:
            return self.measure_onnx(path, input_shape)

    def versions(self) -> dict[str, str]:
        import torch

        return {"tensorrt": self.trt.__version__, "torch": torch.__version__, "cuda": str(torch.version.cuda)}
