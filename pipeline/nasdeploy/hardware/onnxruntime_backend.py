"""ONNX Runtime: the CPU execution provider on "cpu"; CUDA (and TensorRT, when installed) providers on "cuda:N"."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from torch import nn

from nasdeploy.errors import NasDeployError
from nasdeploy.hardware.base import BACKENDS, Availability, Backend, MeasureMethod, Timing
from nasdeploy.hardware.devices import cuda_index, default_threads, require_device
from nasdeploy.hardware.onnx_file import temporary_onnx
from nasdeploy.hardware.timing import host_clock, time_host

GPU_INSTALL = "pip uninstall -y onnxruntime && pip install onnxruntime-gpu"
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16}


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise NasDeployError("onnxruntime is not installed; pip install onnxruntime (or onnxruntime-gpu for CUDA)") from None
    return onnxruntime


@BACKENDS.register("onnxruntime")
class OnnxRuntimeBackend(Backend):
    """``session.run`` timed on the host (it returns once outputs are on the host, so GPU work is included)."""

    name = "onnxruntime"
    preference = {"cuda": 1, "cpu": 0}

    @classmethod
    def availability(cls, device: str) -> Availability:
        on_gpu = cuda_index(device) is not None
        install = GPU_INSTALL if on_gpu else "pip install onnxruntime"
        try:
            ort = _onnxruntime()
        except NasDeployError:
            return Availability(cls.name, False, None, "onnxruntime is not installed", install)
        if not on_gpu:
            return Availability(cls.name, True, ort.__version__, install=install)
        providers = ort.get_available_providers()
        if "CUDAExecutionProvider" not in providers:
            return Availability(cls.name, False, ort.__version__, f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                                f"(providers: {', '.join(providers)})", install)
        return Availability(cls.name, True, ort.__version__, install=install, label="CUDAExecutionProvider")

    def __init__(self, device: str, method: MeasureMethod):
        super().__init__(device, method)
        self.ort = _onnxruntime()
        self.cuda_index = require_device(device)
        self.threads = method.threads or default_threads()
        self.method.threads = self.threads
        if method.dtype not in NUMPY_DTYPES:
            raise NasDeployError(f"onnxruntime backend measures {', '.join(NUMPY_DTYPES)}, not {method.dtype!r}; pick one with --dtype")
        self.providers = self._providers()
        self.method.clock = host_clock(method, on_cpu=self.cuda_index is None)

    def _providers(self) -> list:
        if self.cuda_index is None:
            return ["CPUExecutionProvider"]
        available = self.ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise NasDeployError(
                f"onnxruntime has no CUDA execution provider (has: {', '.join(available)}); "
                f"{GPU_INSTALL}, or use --runtime torch"
            )
        options = {"device_id": self.cuda_index}
        providers: list = [("CUDAExecutionProvider", options), "CPUExecutionProvider"]
        if "TensorrtExecutionProvider" in available:
            providers.insert(0, ("TensorrtExecutionProvider", options))
        return providers

    def session(self, onnx_path: Path):
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        return self.ort.InferenceSession(str(onnx_path), options, providers=self.providers)

    def measure_onnx(self, onnx_path: Path, input_shape: tuple[int, ...]) -> Timing:
        return self.timed_session(onnx_path, input_shape)()

    def timed_session(self, onnx_path: Path, input_shape: tuple[int, ...]) -> Callable[[], Timing]:
        """A session on ``onnx_path`` (loaded now; the file may go) and the measurement of one call to it."""
        session = self.session(onnx_path)
        x = np.random.default_rng(0).standard_normal(input_shape).astype(NUMPY_DTYPES[self.method.dtype])
        feeds = {session.get_inputs()[0].name: x}
        return lambda: time_host(lambda: session.run(None, feeds), self.method, self.method.clock)

    def prepare(self, module: nn.Module, input_shape: tuple[int, ...]) -> Callable[[], Timing]:
        """Exported and loaded once; each call times the same session (a round of the profiler)."""
        from nasdeploy.hardware.torch_backend import torch_dtype

        with temporary_onnx(module, input_shape, torch_dtype(self.method.dtype)) as path:
            return self.timed_session(path, input_shape)

    def measure_module(self, module: nn.Module, input_shape: tuple[int, ...]) -> Timing:
        return self.prepare(module, input_shape)()

    def versions(self) -> dict[str, str]:
        import onnx
        import torch

        return {"onnxruntime": self.ort.__version__, "onnx": onnx.__version__, "torch": torch.__version__,
                "providers": ",".join(p if isinstance(p, str) else p[0] for p in self.providers)}
