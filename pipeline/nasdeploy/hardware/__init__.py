"""Backends (torch, onnxruntime, tensorrt, executorch) that measure modules and ONNX graphs, and device fingerprints."""

from __future__ import annotations

from nasdeploy.hardware.base import BACKENDS, Backend, MeasureMethod, Timing
from nasdeploy.hardware import executorch_backend, onnxruntime_backend, tensorrt_backend, torch_backend  # noqa: F401  (register)
from nasdeploy.hardware.fingerprint import fingerprint, fingerprint_id


def get_backend(runtime: str, device: str, method: MeasureMethod | None = None) -> Backend:
    """The backend for ``runtime`` on ``device``; NasDeployError naming the fix if either is absent here."""
    return BACKENDS.get(runtime)(device, method or MeasureMethod())


__all__ = ["BACKENDS", "Backend", "MeasureMethod", "Timing", "fingerprint", "fingerprint_id", "get_backend"]
