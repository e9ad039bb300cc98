"""Atomic file writes and checked reads: nothing already written is lost, corrupt files fail clearly."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from nasdeploy.errors import NasDeployError


def save_figure(fig: Any, path: Path | str, dpi: int = 100) -> Path:
    """A matplotlib figure as a PNG file, tight layout, written atomically; the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    Under torchrun only rank 0 writes (``distributed.is_main_process``): the ranks hold the same state, and one
    writer per file keeps replicas on a shared file system from racing.
    """
    from nasdeploy.distributed import is_main_process

    if not is_main_process():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path | str, what: str = "JSON file") -> Any:
    """Read JSON, turning a missing or corrupt file into a one-line NasDeployError."""
    path = Path(path)
    if not path.is_file():
        raise NasDeployError(f"{what} not found: {path}; check the path")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NasDeployError(f"{what} {path} is corrupt ({exc.__class__.__name__}: {exc}); delete or regenerate it") from None


def atomic_torch_save(obj: Any, path: Path | str) -> None:
    """``torch.save`` through a temporary file, so a kill mid-write never leaves a broken checkpoint."""
    import io as _io

    import torch

    buffer = _io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path | str, what: str = "checkpoint") -> Any:
    """``torch.load`` with a clear one-line error for a missing or corrupt file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise NasDeployError(f"{what} not found: {path}; check the path or drop --resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for truncated/corrupt files
        raise NasDeployError(f"{what} {path} is corrupt or unreadable ({exc.__class__.__name__}); delete it and start again") from None
