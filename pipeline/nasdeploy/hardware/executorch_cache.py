"""Lowered ExecuTorch programs kept on disk for timing, keyed by what they compute, not by their weights.

Lowering a DARTS cpu-template network to XNNPACK takes 15-20 s of one core (``executorch_backend``), and the same
networks come back: every command's spot check times the same 8 networks and the table's reference networks,
``validate-lut --retest`` times its networks twice, a resumed profile meets its op entries again. XNNPACK's float32
kernels do the same work whatever values the weights hold, so a program lowered from another module with the same
exported graph and the same parameter shapes times the same. The key is therefore the exported graph's code, the
shape and dtype of every parameter, buffer and constant, the input shape, and the executorch and torch versions.

Only timing uses the cache: ``export model.pte`` lowers its own module, whose weights are the product.
``$NASDEPLOY_EXECUTORCH_CACHE=0`` turns it off; it lives in ``<cache_dir()>/executorch-programs`` and keeps the
newest ``LIMIT_BYTES`` (the oldest used programs go first).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from nasdeploy.io import atomic_write_bytes, atomic_write_text

CACHE_ENV = "NASDEPLOY_EXECUTORCH_CACHE"
LIMIT_BYTES = 2 * 1024 ** 3


def programs_dir() -> Path | None:
    """Where lowered programs are kept, or None when ``$NASDEPLOY_EXECUTORCH_CACHE`` is 0."""
    from nasdeploy.latency.table import cache_dir  # the user cache of tables and spot checks

    if os.environ.get(CACHE_ENV, "1").strip() == "0":
        return None
    return cache_dir() / "executorch-programs"


def program_key(exported, input_shape: tuple[int, ...], versions: tuple[str, ...]) -> str:
    """The key of an exported program (``torch.export``) at ``input_shape``: its graph code, the shapes and dtypes of
    its state and constants, and ``versions``; never the values of the weights."""
    digest = hashlib.sha256()
    for part in (exported.graph_module.code, repr(tuple(input_shape)), *versions):
        digest.update(part.encode())
        digest.update(b"\0")
    tensors = {**exported.state_dict, **exported.constants}
    for name in sorted(tensors):
        value = tensors[name]
        digest.update(f"{name}:{tuple(getattr(value, 'shape', ()))}:{getattr(value, 'dtype', type(value).__name__)}\0".encode())
    return digest.hexdigest()[:32]


def read_program(folder: Path, key: str) -> tuple[bytes, dict[str, int]] | None:
    """The program bytes and non-delegated ops kept under ``key``, or None; a read marks it as recently used."""
    program, notes = folder / f"{key}.pte", folder / f"{key}.json"
    try:
        buffer, non_delegated = program.read_bytes(), json.loads(notes.read_text())["non_delegated"]
    except (OSError, ValueError, KeyError, TypeError):  # absent, half-pruned or unreadable: lowered again
        return None
    os.utime(program)
    return buffer, {str(op): int(n) for op, n in non_delegated.items()}


def write_program(folder: Path, key: str, buffer: bytes, non_delegated: dict[str, int]) -> None:
    """Keep a lowered program; the notes are written last, so a program without them is never read."""
    atomic_write_bytes(folder / f"{key}.pte", buffer)
    atomic_write_text(folder / f"{key}.json", json.dumps({"non_delegated": non_delegated}))


def prune(folder: Path, limit: int = LIMIT_BYTES) -> int:
    """Remove the least recently used programs until the folder holds at most ``limit`` bytes; returns how many went."""
    try:
        programs = sorted(folder.glob("*.pte"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return 0
    kept, removed = 0, 0
    for program in programs:
        kept += program.stat().st_size
        if kept > limit:
            program.with_suffix(".json").unlink(missing_ok=True)
            program.unlink(missing_ok=True)
            removed += 1
    return removed
