"""LUT fidelity: predicted vs measured end-to-end latency of random architectures on the table's own backend."""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nasdeploy.errors import NasDeployError
from nasdeploy.hardware import fingerprint, fingerprint_id, get_backend
from nasdeploy.io import atomic_write_json
from nasdeploy.latency.predictor import predict_latency_ms
from nasdeploy.latency.profiler import measure_networks, network_input_shape, reference_for, stored_method
from nasdeploy.latency.rounds import rounds_taken
from nasdeploy.latency.table import LatencyTable
from nasdeploy.latency.trust import anchor_records, drift_ratio as drift_ratio_of
from nasdeploy.spaces.base import get_space

log = logging.getLogger(__name__)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ-b rank correlation (ties counted as neither concordant nor discordant)."""
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denominator if denominator else 0.0


def fidelity_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Share within ±5 % / ±10 % of measured, RMSE in ms and in % of measured, Kendall τ."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    rel = (p - m) / m
    return {
        "n": int(len(m)),
        "within_5pct": float(np.mean(np.abs(rel) <= 0.05)),
        "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
        "rmse_ms": float(np.sqrt(np.mean((p - m) ** 2))),
        "rmse_pct": float(np.sqrt(np.mean(rel**2)) * 100.0),
        "mean_error_pct": float(np.mean(rel) * 100.0),
        "max_abs_error_pct": float(np.max(np.abs(rel)) * 100.0),
        "kendall_tau": kendall_tau(p.tolist(), m.tolist()),
    }


def check_same_machine(table: LatencyTable, allow_other_machine: bool) -> None:
    here = fingerprint_id(fingerprint(table.device, table.method.get("threads")))
    there = fingerprint_id(table.fingerprint)
    if here == there:
        return
    message = f"table {table.path} was measured on {there}, this machine is {here}"
    if not allow_other_machine:
        raise NasDeployError(f"{message}; validate it on that machine, profile this one, or pass --allow-other-machine")
    log.warning("%s; measured latencies will not match the table", message)


def table_backend(table: LatencyTable, allow_other_machine: bool = False):
    """What measuring networks on ``table``'s own terms takes: (space, template, method, backend, input shape).

    Refuses a table from another machine unless ``allow_other_machine``.
    """
    check_same_machine(table, allow_other_machine)
    space = get_space(table.space)
    template = space.template_from_dict(table.template)
    method = stored_method(table)
    backend = get_backend(table.runtime, table.device, method)
    return space, template, method, backend, network_input_shape(template, table.batch)


# a table fits this machine when at least this share of random networks is predicted within ±10 % after drift correction
FIT_SHARE = 0.9


def fits_machine(report: dict[str, Any]) -> bool:
    """The verdict ``validate-lut`` reports (and exits 1 on): the drift-corrected ±10 % share reaches FIT_SHARE."""
    return report["metrics_drift_corrected"]["within_10pct"] >= FIT_SHARE


def validate_table(table: LatencyTable, samples: int = 50, seed: int = 0, out_dir: Path | str | None = None,
                   allow_other_machine: bool = False) -> dict[str, Any]:
    """Sample ``samples`` architectures (seeds ``seed``..), predict and measure each; write JSON and a scatter PNG."""
    space, template, method, backend, shape = table_backend(table, allow_other_machine)
    archs = [space.sample(template, random.Random(seed + i)) for i in range(samples)]
    records = [{"seed": seed + i, "predicted_ms": predict_latency_ms(table, arch, space, template, scaled=False),
                "arch": space.arch_to_json(arch)} for i, arch in enumerate(archs)]
    # the table's reference networks (latency.trust), timed again alongside: how much the machine changed since profiling
    anchors = anchor_records(table)
    records += anchors
    archs += [space.arch_from_json(r["arch"]) for r in anchors]
    networks = [lambda arch=arch: space.build(arch, template) for arch in archs]
    records = measure_networks(backend, networks, shape, records, f"validate {table.runtime} {table.device}",
                               reference_for(backend, space, template, table.batch))
    rows = [dict(r, measured_ms=r["median_ms"]) for r in records[:samples]]
    drift_ratio = drift_ratio_of(records[samples:]) or 1.0
    predicted = [r["predicted_ms"] for r in rows]
    measured = [r["measured_ms"] for r in rows]
    from nasdeploy.latency.trust import table_mismatches

    report = {
        "table": str(table.path) if table.path else None,
        "space": table.space, "runtime": table.runtime, "device": table.device,
        "fingerprint": fingerprint(table.device, method.threads), "method": method.to_dict(),
        # what makes the table one from another machine or setup ([] when it was profiled here, as now)
        "mismatches": table_mismatches(table, backend.versions()),
        "metrics": fidelity_metrics(predicted, measured),
        # the reference networks now vs at profiling time: >1 means the machine is slower now than when profiled;
        # commands scale the table's predictions by it (latency.trust), so the drift-corrected metrics are what they see
        "machine_drift_ratio": drift_ratio,
        # how many rounds each network got: more than method.rounds when rounds often landed slow (latency.rounds)
        "rounds_rule": rounds_taken(records, method.rounds, method.max_rounds),
        "drift_anchors": records[samples:],
        "metrics_drift_corrected": fidelity_metrics([p * drift_ratio for p in predicted], measured),
        "samples": rows,
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        atomic_write_json(out_dir / "lut_fidelity.json", report)
        report["plot"] = str(scatter_plot(rows, report["metrics"], out_dir / "lut_fidelity.png", title=f"{table.runtime} on {table.device}"))
        atomic_write_json(out_dir / "lut_fidelity.json", report)
    return report


def retest_table(table: LatencyTable, report: dict[str, Any], out_dir: Path | str | None = None) -> dict[str, Any]:
    """The networks of a ``validate_table`` report measured a second time, scored like a table: the first
    measurement as the "prediction" of the second (test-retest).

    What a perfect table could show on this machine as it is now: on a shared VM the same networks measured
    minutes apart differ by several per cent, and no table can predict them closer than they predict themselves.
    Written to ``out_dir/retest.json`` when given.
    """
    space, template, _, backend, shape = table_backend(table, allow_other_machine=True)  # validate_table checked it
    rows = report["samples"]
    networks = [lambda arch=space.arch_from_json(r["arch"]): space.build(arch, template) for r in rows]
    again = measure_networks(backend, networks, shape, [{} for _ in rows], f"retest {table.runtime} {table.device}",
                             reference_for(backend, space, template, table.batch))
    first, second = [r["measured_ms"] for r in rows], [r["median_ms"] for r in again]
    result = {
        "table": report.get("table"), "metrics": fidelity_metrics(first, second),
        # the second measurement over the first: how much the machine moved between them
        "machine_drift_ratio": float(np.median(np.array(second) / np.array(first))),
        "first_ms": first, "second_ms": second,
    }
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / "retest.json", result)
    return result


def scatter_plot(rows: list[dict], metrics: dict[str, float], path: Path, title: str = "") -> Path:
    """Predicted vs measured latency with the y = x line and the ±10 % band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nasdeploy.io import save_figure

    measured = np.array([r["measured_ms"] for r in rows])
    predicted = np.array([r["predicted_ms"] for r in rows])
    lo, hi = min(measured.min(), predicted.min()) * 0.9, max(measured.max(), predicted.max()) * 1.1
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    line = np.linspace(lo, hi, 2)
    ax.fill_between(line, line * 0.9, line * 1.1, color="tab:green", alpha=0.15, label="±10 %")
    ax.plot(line, line, color="tab:green", lw=1)
    ax.scatter(measured, predicted, s=14, color="tab:blue")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="measured latency (ms)", ylabel="predicted latency (ms)")
    ax.set_title(f"{title}\n{metrics['within_10pct']:.0%} within ±10 %, RMSE {metrics['rmse_pct']:.1f} %, τ {metrics['kendall_tau']:.2f}", fontsize=9)
    ax.legend(loc="upper left")
    save_figure(fig, path)
    return path


def fidelity_table(reports: list[tuple[str, dict]], title: str = "latency table fidelity (predicted vs measured end to end)"):
    """A rich table with one row per (name, ``validate_table`` report)."""
    from rich.table import Table

    rows = Table(title=title)
    for column in ("backend", "n", "±5 %", "±10 %", "RMSE (%)", "mean err (%)", "Kendall τ", "drift", "drift-corr. ±5 / ±10 %",
                   "drift-corr. RMSE (%)", "plot"):
        rows.add_column(column, justify="left" if column in ("backend", "plot") else "right", overflow="fold")
    for name, report in reports:
        m = report["metrics"]
        c = report.get("metrics_drift_corrected", m)
        rows.add_row(name, str(m["n"]), f"{m['within_5pct']:.0%}", f"{m['within_10pct']:.0%}",
                     f"{m['rmse_pct']:.1f}", f"{m['mean_error_pct']:+.1f}", f"{m['kendall_tau']:.3f}",
                     f"{report.get('machine_drift_ratio', 1.0) - 1:+.1%}", f"{c['within_5pct']:.0%} / {c['within_10pct']:.0%}",
                     f"{c['rmse_pct']:.1f}", str(report.get("plot", "")))
    return rows


def measure_architecture(table: LatencyTable, record, allow_other_machine: bool = False) -> dict[str, Any]:
    """One searched architecture (an ``ArchitectureRecord``) predicted and measured on ``table``'s own backend.

    The network is built on the table's template (the one its latency was predicted for) and timed with
    the table's stored method, rounds included, as ``validate-lut`` times its samples.
    """
    if record.space != table.space:
        raise NasDeployError(f"the architecture is from the {record.space} space, the table {table.path} from {table.space}; "
                             "pass a table profiled for that space")
    space, template, _, backend, shape = table_backend(table, allow_other_machine)
    predicted = predict_latency_ms(table, record.arch, space, template)
    [measured] = measure_networks(backend, [lambda: space.build(record.arch, template)], shape, [{}],
                                  f"measure {table.runtime} {table.device}", reference_for(backend, space, template, table.batch))
    median = measured["median_ms"]
    return {
        "table": str(table.path) if table.path else None, "runtime": table.runtime, "device": table.device,
        # predicted in today's ms: the table's prediction times the drift its spot check measured (1 without one)
        "predicted_ms": predicted, "predicted_table_ms": predict_latency_ms(table, record.arch, space, template, scaled=False),
        "speed_ratio": table.speed_ratio, "measured_median_ms": median, "measured_p10_ms": measured["p10_ms"],
        "measured_p90_ms": measured["p90_ms"], "rounds": measured["rounds"],
        "prediction_error": (predicted - median) / median if median > 0 else math.nan,
        "budget_ms": record.metrics.get("latency_budget_ms"),
        "method": backend.method.to_dict(), "versions": backend.versions(),
        "fingerprint": fingerprint(table.device, backend.method.threads), "arch": space.arch_to_json(record.arch),
    }
