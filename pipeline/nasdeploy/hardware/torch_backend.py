"""PyTorch on CPU (eager, wall or thread clock, fixed thread count) or CUDA (CUDA-graph replays by default, or eager;
CUDA events + synchronize)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from nasdeploy.errors import NasDeployError
from nasdeploy.hardware.base import BACKENDS, Availability, Backend, MeasureMethod, Timing
from nasdeploy.hardware.devices import cuda_index, default_threads, require_device
from nasdeploy.hardware.timing import host_clock, resolve_execution, time_cuda, time_cuda_graph, time_host

CUDA_TORCH_HINT = "on a host with an NVIDIA GPU: pip install torch --index-url https://download.pytorch.org/whl/cu130"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise NasDeployError(f"unknown dtype {name!r}; choose one of: {', '.join(DTYPES)}") from None


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with exactly ``threads`` intra-op threads, restoring the previous setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@BACKENDS.register("torch")
class TorchBackend(Backend):
    """``module(x)`` in eval mode under ``torch.inference_mode``."""

    name = "torch"
    preference = {"cuda": 2, "cpu": 1}
    measures_onnx = False

    @classmethod
    def availability(cls, device: str) -> Availability:
        version = torch.__version__
        if cuda_index(device) is None:
            return Availability(cls.name, True, version)
        try:
            require_device(device)
        except NasDeployError:
            if torch.version.cuda is None:
                return Availability(cls.name, False, version, f"torch {version} is a CPU build", CUDA_TORCH_HINT)
            return Availability(cls.name, False, version, f"no {device} visible to torch {version} (CUDA {torch.version.cuda})",
                                "a host with an NVIDIA GPU (nvidia-smi lists it; check CUDA_VISIBLE_DEVICES)")
        return Availability(cls.name, True, version, label="CUDA graphs")

    def __init__(self, device: str, method: MeasureMethod):
        super().__init__(device, method)
        self.cuda_index = require_device(device)
        self.threads = method.threads or default_threads()
        self.method.threads = self.threads
        self.dtype = torch_dtype(method.dtype)
        self.method.clock = "cuda-event" if self.cuda_index is not None else host_clock(method, on_cpu=True)
        self.method.execution = resolve_execution(method.execution, on_gpu=self.cuda_index is not None)  # recorded
        if self.cuda_index is None and self.dtype == torch.float16:
            raise NasDeployError("float16 on the torch CPU backend is not a deployment setting; use --dtype float32 or a cuda device")

    @property
    def torch_device(self) -> torch.device:
        return torch.device("cpu") if self.cuda_index is None else torch.device("cuda", self.cuda_index)

    def measure_module(self, module: nn.Module, input_shape: tuple[int, ...]) -> Timing:
        module = module.eval().to(self.torch_device, self.dtype)
        x = torch.randn(*input_shape, device=self.torch_device, dtype=self.dtype)
        with torch_threads(self.threads), torch.inference_mode():
            run = lambda: module(x)  # noqa: E731
            if self.cuda_index is None:
                return time_host(run, self.method, self.method.clock)
            if self.method.execution == "cuda-graph":
                return time_cuda_graph(run, self.method, self.cuda_index)  # x is allocated once: a static input
            return time_cuda(run, self.method, self.cuda_index)

    def measure_onnx(self, onnx_path: Path, input_shape: tuple[int, ...]) -> Timing:
        raise NasDeployError("the torch runtime measures modules, not ONNX files; use --runtime onnxruntime or tensorrt for an .onnx file")

    def versions(self) -> dict[str, str]:
        found = {"torch": torch.__version__}
        if self.cuda_index is not None:
            found["cuda"] = str(torch.version.cuda)
            found["cudnn"] = str(torch.backends.cudnn.version())
        return found
