"""Export a module to a temporary ONNX file so ONNX Runtime and TensorRT can measure it.

torch 2.14 still ships the TorchScript-based exporter (``dynamo=False``): it exports a DARTS cell in
well under a second, while the dynamo exporter takes several seconds per module, too slow for the
hundreds of op instances of a latency table. Opset 17 is read by ONNX Runtime >= 1.14 and TensorRT >= 8.6.
"""

from __future__ import annotations

import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

OPSET = 17


def export_module(module: nn.Module, input_shape: tuple[int, ...], path: Path, dtype: torch.dtype = torch.float32,
                  device: str = "cpu", dynamic_batch: bool = False) -> Path:
    """Write ``module`` (eval mode, fixed input shape) as ONNX to ``path``; an fp16 graph is traced on a GPU
    ``device`` (half kernels are a GPU's, and the graph's types are what a strongly typed TensorRT network uses)."""
    module = module.eval().to(device, dtype)
    x = torch.randn(*input_shape, dtype=dtype, device=device)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
        torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["output"], dynamic_axes=axes)
    return path


@contextmanager
def temporary_onnx(module: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
                   device: str = "cpu") -> Iterator[Path]:
    """``module`` exported to an ONNX file that is deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="nasdeploy-onnx-") as folder:
        yield export_module(module, input_shape, Path(folder) / "module.onnx", dtype, device)
