"""Parse the human units the CLI accepts: latency budgets ("22ms") and FLOPs budgets ("320M")."""

from __future__ import annotations

import re

from nasdeploy.errors import NasDeployError

_LATENCY_UNITS = {"": 1.0, "ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3}
_FLOPS_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def _split(text: str) -> tuple[float, str] | None:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-zA-Zµ]*)\s*", text)
    if not match:
        return None
    return float(match.group(1)), match.group(2).lower()


def parse_latency(text: str) -> float:
    """Milliseconds from ``"22ms"``, ``"22"`` (ms), ``"0.5s"`` or ``"800us"``."""
    parsed = _split(str(text))
    if parsed is None or parsed[1] not in _LATENCY_UNITS or parsed[0] <= 0:
        raise NasDeployError(f"cannot read latency budget {text!r}; write a positive number with ms, s or us, e.g. 22ms")
    return parsed[0] * _LATENCY_UNITS[parsed[1]]


def parse_flops(text: str) -> float:
    """Multiply-adds from ``"320M"``, ``"1.2G"``, ``"5e8"`` (a trailing 'FLOPs'/'MACs' is ignored)."""
    cleaned = re.sub(r"(?i)(flops|macs)$", "", str(text).strip())
    parsed = _split(cleaned)
    if parsed is None or parsed[1] not in _FLOPS_UNITS or parsed[0] <= 0:
        raise NasDeployError(f"cannot read FLOPs budget {text!r}; write a positive number with K, M or G, e.g. 320M")
    return parsed[0] * _FLOPS_UNITS[parsed[1]]
