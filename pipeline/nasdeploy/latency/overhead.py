"""The overhead model: from the sum of a network's table entries to its measured end-to-end latency.

Isolated op timings miss what a whole network adds (cell sums and concatenations, Python dispatch
between modules, memory traffic) and include what it does not pay (one framework call, or one
ONNX Runtime ``session.run``, per op). We model the network latency as

    T(arch) ≈ a + b · S(arch) + c · N(arch)

with S the sum of the arch's op entries in ms and N its number of (non-zero-cost) op instances,
fitted by least squares on a handful of sampled networks measured end to end with the same backend
and method. A feature constant across the samples (N is fixed in a DARTS template) is dropped, its
effect absorbed by ``a``. If the fitted slope ``b`` is not positive (samples too alike to tell), the
model falls back to ``b = 1`` with the mean residual as ``a``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

FEATURES = ("sum_ms", "n_ops")


def fit_overhead(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Least-squares ``a + b·sum_ms + c·n_ops`` on samples ``{"sum_ms", "n_ops", "measured_ms"}``."""
    y = np.array([s["measured_ms"] for s in samples], dtype=float)
    columns = {name: np.array([s[name] for s in samples], dtype=float) for name in FEATURES}
    used = [name for name in FEATURES if np.ptp(columns[name]) > 1e-12]
    coef = {"intercept": 0.0, **{name: 0.0 for name in FEATURES}}
    if len(samples) > len(used) and used:
        design = np.column_stack([np.ones(len(y))] + [columns[name] for name in used])
        solution, *_ = np.linalg.lstsq(design, y, rcond=None)
        coef["intercept"] = float(solution[0])
        coef.update({name: float(value) for name, value in zip(used, solution[1:])})
    if coef["sum_ms"] <= 0:  # degenerate fit: keep the table's scale, absorb the rest in the intercept
        coef = {"intercept": float(np.mean(y - columns["sum_ms"])), "sum_ms": 1.0, "n_ops": 0.0}
        used = ["sum_ms"]
    predicted = np.array([apply_overhead(coef, s["sum_ms"], s["n_ops"]) for s in samples])
    residual = y - predicted
    return {
        "model": "measured_ms = intercept + sum_ms * sum of entries + n_ops * number of ops",
        "coef": coef,
        "fitted_features": used,
        "rmse_ms": float(np.sqrt(np.mean(residual**2))),
        "max_abs_error_pct": float(np.max(np.abs(residual) / y) * 100.0),
        "samples": list(samples),
    }


def apply_overhead(coef: dict[str, float], sum_ms, n_ops):
    """``a + b·S + c·N``; works on floats and on torch tensors (for expected latencies)."""
    return coef["intercept"] + coef["sum_ms"] * sum_ms + coef["n_ops"] * n_ops
