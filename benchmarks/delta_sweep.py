"""ICDARTS with a fixed δ (Eq. 4.1, Table 4.7's setting): the searched network's predicted latency as δ rises.

    PYTHONPATH=pipeline python3 benchmarks/delta_sweep.py --table TABLE.json [--weights STEM_REPEAT.json|table-4.6]
        [--deltas 0.01,0.05,0.1] [--seeds 0,1,2] [--preset cpu] [--discretization xdarts] [--set epochs=8 ...]
        [--out runs/delta-sweep]

One ICDARTS search per (δ, seed), no budget, so nothing but δ·P(α) steers latency and no fix-up runs. P(α) is
Algorithm 3 over the search network's cells (``latency.predictor.expected_latency_darts(cell_counts=...)``); with
``--weights`` its costs are Table 4.6-style stem-repeat weights (``nasdeploy profile --method stem-repeat``), as in
Table 4.7, else the table's ms. Every searched genotype is priced by the table on the deployed template (its
overhead model included). Each run's row is written to ``--out`` as ``row-delta-D-seed-S.json`` and the summary
reads every row there, so seeds can run as separate processes into one folder (``--summary-only`` prints it
again). Prints one row per run, then per δ the mean ± sample standard deviation and the range over seeds, and
whether the means fall as δ rises; writes ``delta_sweep.json`` in ``--out``.

Why several seeds and more epochs than the cpu preset's 3: with one seed and 24 α steps the penalty's pull is
smaller than the run-to-run scatter of the accuracy terms (δ 0.01 → 1.509 ms, 0.05 → 1.566, 0.1 → 1.353 at seed 0).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nasdeploy.latency.trust import TablePolicy
from nasdeploy.progress import setup_logging
from nasdeploy.search.base import SearchRequest, get_strategy


def extra_settings(pairs: list[str]) -> dict[str, str]:
    """``--set key=value`` pairs (strategy settings, parsed and type-checked by the strategy)."""
    return dict(pair.split("=", 1) for pair in pairs)


def one_search(args, delta: float, seed: int) -> dict:
    options = {**extra_settings(args.set), "delta": delta, "discretization": args.discretization}
    if args.weights:
        options["latency_weights"] = str(args.weights)
    out = args.out / f"delta-{delta:g}-seed-{seed}"
    # the table is trusted as given: the sweep compares δ, not machines (validate the table with validate-lut)
    request = SearchRequest(space="darts", out_dir=out, table_path=args.table, preset=args.preset, seed=seed,
                            options=options, table_policy=TablePolicy(trust=True))
    metrics = get_strategy("icdarts").run(request).record.metrics
    row = {"delta": delta, "seed": seed, "predicted_latency_ms": metrics["predicted_latency_ms"],
           "expected_P": metrics.get("expected_latency_ms"), "fixup_replacements": metrics["fixup_replacements"],
           "flops": metrics.get("flops"), "params": metrics.get("params"), "search_seconds": metrics.get("search_seconds"),
           "settings": options}
    row["P_start"] = start_penalty(out)
    (args.out / f"row-delta-{delta:g}-seed-{seed}.json").write_text(json.dumps(row, indent=1))
    return row


def start_penalty(run_dir: Path) -> float | None:
    """P(α_0), Algorithm 3 at the initial α (the search log's ``latency_control.p0``): how far α moved is P's change."""
    log = run_dir / "search_log.json"
    return json.loads(log.read_text()).get("latency_control", {}).get("p0") if log.exists() else None


def collect_rows(out: Path) -> list[dict]:
    rows = [json.loads(path.read_text()) for path in sorted(out.glob("row-delta-*-seed-*.json"))]
    for row in rows:
        if row.get("P_start") is None:  # rows written before the column existed
            row["P_start"] = start_penalty(out / f"delta-{row['delta']:g}-seed-{row['seed']}")
    return sorted(rows, key=lambda r: (r["delta"], r["seed"]))


def per_delta(rows: list[dict]) -> list[dict]:
    """Mean, sample standard deviation and range of the predicted latency per δ, δ ascending."""
    stats = []
    for delta in sorted({r["delta"] for r in rows}):
        values = [r["predicted_latency_ms"] for r in rows if r["delta"] == delta]
        stats.append({"delta": delta, "n": len(values), "mean": statistics.fmean(values),
                      "stdev": statistics.stdev(values) if len(values) > 1 else 0.0, "min": min(values), "max": max(values)})
    return stats


def falls_with_delta(stats: list[dict]) -> bool:
    """Whether the mean predicted latency falls (strictly) at every step up in δ."""
    return all(b["mean"] < a["mean"] for a, b in zip(stats, stats[1:]))


def summary_table(rows: list[dict]) -> Table:
    table = Table(title="ICDARTS, fixed δ (Eq. 4.1), no budget: the searched net's predicted latency (deployed template)")
    for column in ("δ", "seed", "predicted (ms)", "P(α₀) → P(α) at the end", "FLOPs", "search (s)"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(f"{row['delta']:g}", str(row["seed"]), f"{row['predicted_latency_ms']:.3f}",
                      f"{row['P_start']:.4g} → {row['expected_P']:.4g}" if None not in (row.get("P_start"), row["expected_P"]) else "-",
                      f"{row['flops'] / 1e6:.1f}M" if row["flops"] else "-", f"{row['search_seconds'] or 0:.0f}")
    for s in per_delta(rows):
        table.add_row(f"{s['delta']:g}", f"mean of {s['n']}", f"{s['mean']:.3f} ± {s['stdev']:.3f}",
                      f"range {s['min']:.3f}-{s['max']:.3f}", "", "", style="bold")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, required=True, help="this machine's latency table for the preset's template")
    parser.add_argument("--weights", type=Path, default=None, help="stem-repeat weights JSON (Table 4.6); default: the table's ms")
    parser.add_argument("--deltas", default="0.01,0.05,0.1")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an ICDARTS setting for every run, e.g. epochs=8 (repeatable)")
    parser.add_argument("--summary-only", action="store_true", help="print the summary of the rows already in --out")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--discretization", default="xdarts")
    parser.add_argument("--out", type=Path, default=Path("runs/delta-sweep"))
    args = parser.parse_args()
    setup_logging()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        for seed in args.seeds.split(","):
            for delta in (float(d) for d in args.deltas.split(",")):
                one_search(args, delta, int(seed))
    rows = collect_rows(args.out)
    stats = per_delta(rows)
    (args.out / "delta_sweep.json").write_text(json.dumps({"table": str(args.table), "weights": str(args.weights),
                                                           "preset": args.preset, "rows": rows, "per_delta": stats,
                                                           "falls_with_delta": falls_with_delta(stats)}, indent=1))
    console = Console()
    console.print(summary_table(rows))
    console.print(f"mean predicted latency falls at every step up in δ: {'yes' if falls_with_delta(stats) else 'NO'}")


if __name__ == "__main__":
    main()
