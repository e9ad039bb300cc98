"""Runtime versions a table records against the ones installed here (used by the profiler and the trust checks)."""

from __future__ import annotations


def version_mismatches(stored: dict[str, str], current: dict[str, str]) -> list[str]:
    """Runtime versions (torch, onnxruntime, onnx, tensorrt, cuda, providers...) that differ from the table's."""
    return [f"{name} {current.get(name, 'absent')} here, {stored.get(name, 'not recorded')} in the table"
            for name in sorted(set(stored) | set(current)) if stored.get(name) != current.get(name)]
