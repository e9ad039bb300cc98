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

Work merged by the runtime. Ops on one tensor that start with the same weight-free computation (two ReLU-led
convolutions, two equal pools) each pay for it when timed alone; in a network exported to ONNX it is computed once
(the exporter's and ONNX Runtime's common-subexpression elimination). The features M_k(arch)
(``SearchSpace.merged_work``: thousands of input elements of such repeated work, one feature per kind of work,
``spaces.ops.MERGED_WORK_FEATURES``) add ``Σ d_k · M_k``, each kept only when it lowers the leave-one-out error (a
runtime that merges nothing, eager PyTorch, gains nothing from them). ``merged_kelems``: a repeated ReLU or pool.
Measured on ONNX Runtime, DARTS op space 3, each table refitted on its own 40 fit networks with and without it,
Kendall τ on 100 random networks (against two timing passes): 2-vCPU Xeon VM, four tables 0.838 / 0.853 / 0.841 /
0.861 → 0.896 / 0.876 / 0.874 / 0.888 (leave-one-out 3.8 → 3.0 % on the first); 2-core EPYC VM, its committed table
0.897 → 0.904 (leave-one-out 3.0 → 2.6 %). ``merged_shift_kelems``: a second factorized reduce on one input also
shares the first one's shifted copy (pad and slice), which on ONNX Runtime's NCHWc layout is a layout round trip
(ReorderOutput, Pad, Slice, ReorderInput): on three fresh Xeon tables d = −1.6 to −1.9 µs per thousand elements,
five to seven times the ReLU's −0.24 to −0.35. Found by regressing validation residuals on the node counts of ONNX
Runtime's optimised graphs (a factorized reduce's Concat per instance, its Pad/Slice/reorders per distinct input).
τ on 100 random networks, live on those three tables 0.940 / 0.931 / 0.921 (the same measurements without the feature
0.904 / 0.894 / 0.905); refitted on earlier tables, Xeon 0.916 / 0.893 / 0.885 → 0.926 / 0.923 / 0.909, the EPYC VM's
committed table 0.895 → 0.925.

Per-instance corrections. An op timed alone can cost something else inside a network: on ONNX Runtime a
45-100 µs MobileNet pays ~5 µs of ``session.run`` per isolated op, and a 1x1-spatial expand-6 block whose
weights stay in L2 when timed alone loads them from L3 in the network (+11 µs where its entry says +2 µs).
When the samples carry each network's op-instance counts (at least MIN_CORRECTION_SAMPLES networks, chosen by
a D-optimal design over those counts: :func:`d_optimal_picks`), the model adds one correction ``κ_i`` per instance,

    T(arch) ≈ a + b · Σ_i n_i (L_i + κ_i) + c · N(arch),

fitted by ridge regression (the κ pulled towards 0, i.e. towards the isolated entries). The ridge weight is chosen
from a grid that includes "no corrections". When at least MIN_RANDOM_SAMPLES of the samples are marked ``random``
(drawn uniformly, like the networks predictions are for, next to the D-optimal ones), it is the weight with the lowest
leave-one-out error on those: the D-optimal networks are the space's extremes, and their leave-one-out error, dominated
by high-leverage networks, picked weights that ranked random networks worse (measured, 20 of a table's validation
networks added as random fit networks, Kendall τ on the other 80, mean of 5 draws, 2-vCPU Xeon VM: five ORT DARTS
tables 0.897/0.871/0.868/0.891/0.869 → 0.889/0.875/0.882/0.891/0.882; an ORT MobileNet table 0.737 → 0.835, within
±10 % 77 → 91 %). Otherwise (older tables, recalibration sets) the one-standard-error rule on the leave-one-out error
of all samples (Breiman et al. 1984; Hastie et al., *Elements of Statistical Learning* §7.10): the strongest ridge
whose leave-one-out mean squared error is within one standard error of the lowest. The plain minimum overfits the
D-optimal fit networks: on the EPYC VM's ORT DARTS table it picked 1e-4 (τ 0.865, RMSE 2.75 % on 100 random networks) where 0.1, within one standard error of
it, predicts them better (τ 0.889, RMSE 2.23 %). ``predictor.op_latency_ms`` returns ``L_i + κ_i``, so sums, Algorithm 3 and the
layer-wise expectation all use the in-network costs.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from nasdeploy.spaces.ops import MERGED_WORK_FEATURES

FEATURES = ("sum_ms", "n_ops") + MERGED_WORK_FEATURES
OPTIONAL_FEATURES = MERGED_WORK_FEATURES  # kept only when they lower the leave-one-out error


def fit_overhead(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Least-squares ``a + b·sum_ms + c·n_ops`` on samples ``{"sum_ms", "n_ops", "measured_ms"}``.

    Samples that also carry ``counts`` (op-instance key -> occurrences) may add per-instance corrections
    (see the module docstring); ``loo_rmse_pct`` is the leave-one-out error of the model kept.
    """
    y = np.array([s["measured_ms"] for s in samples], dtype=float)
    columns = {name: np.array([s.get(name, 0.0) for s in samples], dtype=float) for name in FEATURES}
    used = useful_features(columns, y, [name for name in FEATURES if np.ptp(columns[name]) > 1e-12])
    coef = {"intercept": 0.0, **{name: 0.0 for name in FEATURES}}
    if len(samples) > len(used) and used:
        design = np.column_stack([np.ones(len(y))] + [columns[name] for name in used])
        solution, *_ = np.linalg.lstsq(design, y, rcond=None)
        coef["intercept"] = float(solution[0])
        coef.update({name: float(value) for name, value in zip(used, solution[1:])})
    if coef["sum_ms"] <= 0:  # degenerate fit: keep the table's scale, absorb the rest in the intercept
        coef = {"intercept": float(np.mean(y - columns["sum_ms"])), "sum_ms": 1.0, "n_ops": 0.0}
        used = ["sum_ms"]
    predicted = np.array([apply_overhead(coef, s["sum_ms"], s["n_ops"], merged_of(s)) for s in samples])
    residual = y - predicted
    model = {
        "model": "measured_ms = intercept + sum_ms * sum of entries + n_ops * number of ops + merged_* * merged work",
        "coef": coef,
        "fitted_features": used,
        "rmse_ms": float(np.sqrt(np.mean(residual**2))),
        "max_abs_error_pct": float(np.max(np.abs(residual) / y) * 100.0),
        "loo_rmse_pct": loo_rmse_pct(np.column_stack([np.ones(len(y))] + [columns[n] for n in used]), y),
        "samples": list(samples),
    }
    if all("counts" in s for s in samples):
        add_corrections(model, samples, used)
    return model


def useful_features(columns: dict[str, np.ndarray], y: np.ndarray, varying: list[str]) -> list[str]:
    """``varying`` without each optional feature whose leave-one-out error is no lower than the model's without it."""
    def loo(names: list[str]) -> float:
        value = loo_rmse_pct(np.column_stack([np.ones(len(y))] + [columns[n] for n in names]), y)
        return np.inf if value is None else value

    used = list(varying)
    for name in OPTIONAL_FEATURES:
        if name in used and not loo(used) < loo([n for n in used if n != name]):
            used.remove(name)
    return used


MIN_CORRECTION_SAMPLES = 10
MIN_RANDOM_SAMPLES = 10  # random fit networks needed to choose the ridge weight on them alone
# ridge weights tried for the per-instance corrections (penalty lam·1e4·κ² against squared ms residuals: one
# correction of 1 % of a network's latency costs as much as a 1 %·sqrt(lam·1e4) residual), from the strongest to the
# weakest: the order the one-standard-error rule reads them in ("no corrections" comes before them all)
CORRECTION_LAMBDAS = (1.0, 0.1, 0.01, 1e-3, 3e-4, 1e-4)


def loo_errors(design: np.ndarray, y: np.ndarray, penalty: np.ndarray | None = None) -> np.ndarray | None:
    """Leave-one-out relative errors of (ridge) least squares, from the hat matrix; None if too few samples."""
    if len(y) <= design.shape[1] and penalty is None:
        return None
    gram_inverse = np.linalg.pinv(design.T @ design + (np.diag(penalty) if penalty is not None else 0.0))
    hat = design @ gram_inverse @ design.T
    coef = gram_inverse @ design.T @ y
    leverage = np.clip(np.diag(hat), None, 1 - 1e-9)
    return (y - design @ coef) / (1 - leverage) / y


def loo_rmse_pct(design: np.ndarray, y: np.ndarray, penalty: np.ndarray | None = None) -> float | None:
    """Leave-one-out relative RMSE (%) of (ridge) least squares; None if too few samples."""
    errors = loo_errors(design, y, penalty)
    return None if errors is None else float(np.sqrt(np.mean(errors**2)) * 100.0)


def one_standard_error_choice(candidates: list[tuple[Any, np.ndarray]]) -> tuple[Any, float]:
    """The one-standard-error rule (ESL §7.10): among ``(choice, leave-one-out errors)`` ordered from the simplest
    model to the most flexible, the first whose mean squared error is within one standard error of the lowest.
    Returns that choice and its leave-one-out RMSE (%)."""
    mse = [float(np.mean(e**2)) for _, e in candidates]
    best = int(np.argmin(mse))
    errors = candidates[best][1]
    threshold = mse[best] + float(np.std(errors**2) / np.sqrt(len(errors)))
    pick = next(i for i, value in enumerate(mse) if value <= threshold)
    return candidates[pick][0], float(np.sqrt(mse[pick]) * 100.0)


def lowest_error_choice(candidates: list[tuple[Any, np.ndarray]]) -> Any:
    """The choice whose leave-one-out errors have the lowest mean square (the first of equals)."""
    return candidates[int(np.argmin([float(np.mean(e**2)) for _, e in candidates]))][0]


def add_corrections(model: dict[str, Any], samples: Sequence[dict[str, Any]], used: list[str]) -> None:
    """Per-instance corrections κ (ms, in entry units), with the ridge weight the one-standard-error rule picks
    among CORRECTION_LAMBDAS and "none" (see the module docstring); none when that is the pick."""
    keys = sorted({k for s in samples for k in s["counts"]})
    counts = np.array([[s["counts"].get(k, 0) for k in keys] for s in samples], dtype=float)
    varying = [i for i in range(len(keys)) if np.ptp(counts[:, i]) > 0]
    # Ridge keeps the corrections determined with fewer networks than instances (each κ is pulled towards its isolated
    # entry); whether they help is decided by the leave-one-out error alone.
    if not varying or len(samples) < MIN_CORRECTION_SAMPLES or model["loo_rmse_pct"] is None:
        return
    y = np.array([s["measured_ms"] for s in samples], dtype=float)
    base = np.column_stack([np.ones(len(y))] + [np.array([s.get(name, 0.0) for s in samples], dtype=float) for name in used])
    design = np.column_stack([base, counts[:, varying]])

    def penalty(lam: float) -> np.ndarray:
        return np.r_[np.zeros(base.shape[1]), np.full(len(varying), lam * 1e4)]

    candidates = [(None, loo_errors(base, y))] + [(lam, loo_errors(design, y, penalty(lam))) for lam in CORRECTION_LAMBDAS]
    drawn = np.array([bool(s.get("random")) for s in samples])
    if drawn.sum() >= MIN_RANDOM_SAMPLES:
        lam = lowest_error_choice([(choice, errors[drawn]) for choice, errors in candidates])
        loo_pct = float(np.sqrt(np.mean(dict(candidates)[lam] ** 2)) * 100.0)
        model["correction_choice"] = f"lowest leave-one-out error on the {int(drawn.sum())} random fit networks"
    else:
        lam, loo_pct = one_standard_error_choice(candidates)
        model["correction_choice"] = "one-standard-error rule on all fit networks"
    model["loo_rmse_pct_without_corrections"] = model["loo_rmse_pct"]
    if lam is None:
        return
    solution = np.linalg.pinv(design.T @ design + np.diag(penalty(lam))) @ design.T @ y
    coef = {"intercept": float(solution[0]), **{name: 0.0 for name in FEATURES}}
    coef.update({name: float(v) for name, v in zip(used, solution[1:base.shape[1]])})
    if coef["sum_ms"] <= 0:
        return
    deltas = solution[base.shape[1]:]
    corrections = {keys[i]: float(d / coef["sum_ms"]) for i, d in zip(varying, deltas)}
    residual = y - design @ solution
    model.update(coef=coef, corrections=corrections, correction_lambda=lam, loo_rmse_pct=loo_pct,
                 rmse_ms=float(np.sqrt(np.mean(residual**2))), max_abs_error_pct=float(np.max(np.abs(residual) / y) * 100.0),
                 model="measured_ms = intercept + sum_ms * sum of (entry + correction) + n_ops * number of ops"
                       " + merged_* * merged work")


def apply_overhead(coef: dict[str, float], sum_ms, n_ops, merged: Mapping[str, float] | None = None):
    """``a + b·S + c·N + Σ d_k·M_k`` with ``merged`` the merged-work features (``SearchSpace.merged_work``); works on
    floats and on torch tensors (for expected latencies). Tables fitted before a merged-work feature have no ``d_k``."""
    extra = sum(coef.get(name, 0.0) * value for name, value in (merged or {}).items())
    return coef["intercept"] + coef["sum_ms"] * sum_ms + coef["n_ops"] * n_ops + extra


def merged_of(sample: Mapping[str, Any]) -> dict[str, float]:
    """A fit sample's merged-work features (0 where it lacks one)."""
    return {name: sample.get(name, 0.0) for name in MERGED_WORK_FEATURES}


def d_optimal_picks(features: np.ndarray, count: int, start: Sequence[int] = (), ridge: float = 1e-3) -> list[int]:
    """Greedy D-optimal design: ``count`` rows of ``features`` (candidates × features) that make the least-squares
    fit on them best determined, after the rows ``start``.

    Each step adds the candidate whose features are least explained by those already chosen (largest xᵀM⁻¹x,
    M = ridge·I + Σ x xᵀ), which multiplies det(M) by the most; M⁻¹ is kept by Sherman-Morrison updates. With one
    feature per op instance (its count times its entry), the chosen networks vary every instance's count as
    independently as the pool allows, so few networks pin the per-instance corrections.
    """
    x = np.asarray(features, dtype=float)
    inverse = np.eye(x.shape[1]) / ridge
    chosen: list[int] = []

    def take(i: int) -> None:
        nonlocal inverse
        v = inverse @ x[i]
        inverse = inverse - np.outer(v, v) / (1.0 + x[i] @ v)
        chosen.append(int(i))

    for i in start:
        take(i)
    while len(chosen) < min(count, len(x)):
        gain = np.einsum("ij,jk,ik->i", x, inverse, x)
        gain[chosen] = -np.inf
        take(int(np.argmax(gain)))
    return chosen
