"""The deployment report: budget vs LUT prediction vs measured latency, parity, accuracy, cost, device.

``report.json`` is the machine-readable record; ``report.md`` and :func:`summary_table` the human view.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from rich.table import Table

from nasdeploy.io import atomic_write_json, atomic_write_text
from nasdeploy.latency.rounds import STATISTIC_TEXT

REPORT_SCHEMA_VERSION = 1


def relative_error(predicted_ms: float | None, measured_ms: float | None) -> float | None:
    """(predicted − measured) / measured: negative when the table under-predicts."""
    if predicted_ms is None or measured_ms is None or measured_ms <= 0:
        return None
    return (predicted_ms - measured_ms) / measured_ms


def within_budget(measured_ms: float | None, budget_ms: float | None) -> bool | None:
    if measured_ms is None or budget_ms is None:
        return None
    return measured_ms <= budget_ms


def build_report(
    name: str,
    files: dict[str, str],
    budget_ms: float | None,
    predicted_ms: float | None,
    measurement: dict[str, Any],
    parity: list[dict[str, Any]],
    model_metrics: dict[str, Any],
    comparisons: list[dict[str, Any]] | None = None,
    table: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report dict; ``measurement`` is :meth:`Measurement.to_dict` on the target runtime."""
    measured = measurement.get("median_ms")
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "name": name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "files": files,
        "budget_ms": budget_ms,
        "predicted_latency_ms": predicted_ms,
        "table": table,
        "measured_median_ms": measured,
        "measured_p90_ms": measurement.get("p90_ms"),
        "relative_prediction_error": relative_error(predicted_ms, measured),
        "within_budget": within_budget(measured, budget_ms),
        "runtime": measurement.get("runtime"),
        "device": measurement.get("device"),
        "method": measurement.get("method"),
        "fingerprint": measurement.get("fingerprint"),
        "versions": measurement.get("versions"),
        "measurement": measurement,
        "comparisons": comparisons or [],
        "parity": parity,
        "test_accuracy": model_metrics.get("test_accuracy"),
        "flops": model_metrics.get("flops"),
        "params": model_metrics.get("params"),
        "data": model_metrics.get("data"),
        **(extra or {}),
    }


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f} ms"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:+.1f} %"


def _count(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}{unit}"
    return f"{value:.0f}{unit}"


def drift_note(report: dict[str, Any]) -> str:
    """`` (table 0.702 ms × drift 1.031)`` when the prediction was scaled by the machine's measured drift."""
    ratio, table_ms = report.get("speed_ratio"), report.get("predicted_table_ms")
    if ratio is None or table_ms is None:
        return ""
    return f" (table {table_ms:.3f} ms × drift {ratio:.3f}: the machine runs {100 * (ratio - 1):+.1f} % vs when profiled)"


def where(measured: dict[str, Any]) -> str:
    """``torch, cuda:0, cuda-graph``: the runtime, the device and, for torch on a GPU, how the module ran."""
    execution = (measured.get("method") or {}).get("execution")
    shown = execution if execution in ("cuda-graph", "eager") and measured.get("device") != "cpu" else None
    return ", ".join(str(part) for part in (measured.get("runtime"), measured.get("device"), shown) if part)


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs shared by the Markdown report and the terminal table."""
    budget_state = {True: "within budget", False: "OVER budget", None: "no budget"}[report.get("within_budget")]
    rows = [
        ("test accuracy", "—" if report.get("test_accuracy") is None else f"{report['test_accuracy'] * 100:.2f} %"),
        ("latency budget", _ms(report.get("budget_ms"))),
        ("LUT-predicted latency", _ms(report.get("predicted_latency_ms")) + drift_note(report)),
        (f"measured median ({where(report)})", _ms(report.get("measured_median_ms"))),
        ("measured p90", _ms(report.get("measured_p90_ms"))),
        ("prediction error (pred − meas) / meas", _pct(report.get("relative_prediction_error"))),
        ("budget check", budget_state),
        ("latency table spot check", (report.get("spot_check") or {}).get("summary") or "— (no table behind the prediction)"),
    ]
    for other in report.get("comparisons", []):
        rows.append((f"measured median ({where(other)})", _ms(other.get("median_ms"))))
    for absent in report.get("skipped_comparisons", []):
        rows.append((f"comparison ({absent['runtime']}, {absent['device']})", f"skipped: {absent['reason']}"))
    for parity in report.get("parity", []):
        verdict = "pass" if parity["passed"] else "FAIL"
        rows.append((f"parity {parity['runtime']} vs torch", f"max abs diff {parity['max_abs_diff']:.2e} ≤ {parity['atol']:.1e}: {verdict}"
                     f", top-1 agreement {parity['top1_agreement'] * 100:.1f} %"))
    rows += [("FLOPs (multiply-adds)", _count(report.get("flops"))), ("parameters", _count(report.get("params")))]
    method = report.get("method") or {}
    rows.append(("method", f"warm-up {method.get('warmup')}, {method.get('repeats')} runs, {method.get('threads')} thread(s), "
                           f"{method.get('dtype')}, batch {method.get('batch')}, {rounds_text(report.get('measurement') or {}, method)}"))
    fp = report.get("fingerprint") or {}
    rows.append(("device", (fp.get("gpu") or {}).get("name") or f"{fp.get('cpu_model')} ({fp.get('logical_cores')} cores)"))
    return rows


def rounds_text(measurement: dict[str, Any], method: dict[str, Any]) -> str:
    """"best of 3 round(s)", or "median fast round of 9 (unsteady machine)" when the rounds rule took more
    (latency.rounds)."""
    taken = len(measurement.get("round_medians_ms") or []) or method.get("rounds", 1)
    if measurement.get("round_statistic") in ("fast", "median"):
        return f"{STATISTIC_TEXT[measurement['round_statistic']]} of {taken} (unsteady machine)"
    return f"best of {taken} round(s)"


def summary_table(report: dict[str, Any], title: str | None = None) -> Table:
    table = Table(title=title or f"nasdeploy export: {report.get('name')}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for label, value in summary_rows(report):
        style = "bold red" if value == "OVER budget" else ("bold green" if value == "within budget" else None)
        table.add_row(label, value, style=style)
    return table


def report_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Deployment report: {report.get('name')}", "", f"Created {report.get('created')}.", "",
             "| quantity | value |", "|---|---|"]
    lines += [f"| {label} | {value.replace('|', chr(92) + '|')} |" for label, value in summary_rows(report)]
    lines += ["", "## Files", ""] + [f"- {kind}: `{path}`" for kind, path in (report.get("files") or {}).items()]
    lines += ["", "## Versions", ""] + [f"- {k}: {v}" for k, v in (report.get("versions") or {}).items()]
    if report.get("table"):
        lines += ["", f"Latency table: `{report['table']}`."]
    lines += ["", "Relative prediction error is (LUT-predicted − measured median) / measured median; "
              "latencies are medians of the runs listed under method, on the device above.", ""]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: Path | str) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    atomic_write_json(json_path, report)
    atomic_write_text(md_path, report_markdown(report))
    return json_path, md_path
