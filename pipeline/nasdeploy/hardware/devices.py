"""Device strings ("cpu", "cuda", "cuda:N"): parse them and fail at once, with the fix, when one is absent."""

from __future__ import annotations

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


def require_device(device: str) -> int | None:
    """Check that ``device`` exists here; returns its CUDA index (``None`` for CPU)."""
    index = cuda_index(device)
    if index is None:
        return None
    import torch

    if not torch.cuda.is_available():
        raise NasDeployError(
            f"no CUDA device {device!r} on this machine (torch.cuda.is_available() is False); "
            "use --device cpu, or run on a host with an NVIDIA GPU and a CUDA build of torch"
        )
    count = torch.cuda.device_count()
    if index >= count:
        raise NasDeployError(f"no CUDA device {device!r}: this machine has {count} GPU(s), cuda:0..cuda:{count - 1}; pick one of those")
    return index
