"""Device strings ("cpu", "cuda", "cuda:N"): parse them and fail at once, with the fix, when one is absent."""

from __future__ import annotations

import os
import re

from nasdeploy.errors import NasDeployError

# One thread on CPU by default: small ops are then additive (a table sum predicts the network) and
# measurements are not disturbed by the other core; pass --threads N to profile a multi-threaded setup.
DEFAULT_CPU_THREADS = 1


def default_threads() -> int:
    return DEFAULT_CPU_THREADS


def cuda_index(device: str) -> int | None:
    """``None`` for "cpu", N for "cuda"/"cuda:N"; a malformed device string is a user error."""
    device = device.strip().lower()
    if device == "cpu":
        return None
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if not match:
        raise NasDeployError(f"cannot read device {device!r}; write cpu or cuda:N, e.g. --device cuda:0")
    return int(match.group(1) or 0)


def visible_devices() -> list[str]:
    """``cpu`` and every CUDA device torch sees here (after ``CUDA_VISIBLE_DEVICES``), each with its name."""
    import torch

    if not torch.cuda.is_available():
        return ["cpu"]
    return ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]


def require_device(device: str) -> int | None:
    """Check that ``device`` exists here before any work; returns its CUDA index (``None`` for CPU).

    The error is one line naming the visible devices and the fix, so every command fails the same way.
    """
    index = cuda_index(device)
    if index is None:
        return None
    import torch

    visible = ", ".join(visible_devices())
    if not torch.cuda.is_available():
        why = "this torch has no CUDA build" if torch.version.cuda is None else "torch.cuda.is_available() is False"
        masked = os.environ.get("CUDA_VISIBLE_DEVICES")
        why += f", CUDA_VISIBLE_DEVICES={masked!r}" if masked is not None else ""
        raise NasDeployError(f"--device {device}: no CUDA device is visible here ({why}); visible devices: {visible}; "
                             "pass --device cpu, or run on a host with an NVIDIA GPU and a CUDA build of torch")
    count = torch.cuda.device_count()
    if index >= count:
        raise NasDeployError(f"--device {device}: no such CUDA device here; visible devices: {visible}; "
                             f"pass one of cuda:0..cuda:{count - 1} (or unset CUDA_VISIBLE_DEVICES to see more)")
    return index
