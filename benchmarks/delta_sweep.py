"""ICDARTS with a fixed δ (Eq. 4.1, Table 4.7's setting): the searched network's predicted latency as δ rises.

    PYTHONPATH=pipeline python3 benchmarks/delta_sweep.py --table TABLE.json [--weights STEM_REPEAT.json]
        [--deltas 0,0.01,0.05,0.1] [--seeds 0] [--preset cpu] [--discretization xdarts] [--out runs/delta-sweep]

One ICDARTS search per (δ, seed), no budget, so nothing but δ·P(α) steers latency and no fix-up runs. P(α) is
Algorithm 3 over the search network's cells (``latency.predictor.expected_latency_darts(cell_counts=...)``); with
``--weights`` its costs are Table 4.6-style stem-repeat weights (``nasdeploy profile --method stem-repeat``), as in
Table 4.7, else the table's ms. Every searched genotype is priced by the table on the deployed template (its
overhead model included). Prints one row per run and the mean per δ; writes ``delta_sweep.json`` in ``--out``.
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


def one_search(args, delta: float, seed: int) -> dict:
    options = {"delta": delta, "discretization": args.discretization}
    if args.weights:
        options["latency_weights"] = str(args.weights)
    out = args.out / f"delta-{delta:g}-seed-{seed}"
    # the table is trusted as given: the sweep compares δ, not machines (validate the table with validate-lut)
    request = SearchRequest(space="darts", out_dir=out, table_path=args.table, preset=args.preset, seed=seed,
                            options=options, table_policy=TablePolicy(trust=True))
    metrics = get_strategy("icdarts").run(request).record.metrics
    return {"delta": delta, "seed": seed, "predicted_latency_ms": metrics["predicted_latency_ms"],
            "expected_P": metrics.get("expected_latency_ms"), "fixup_replacements": metrics["fixup_replacements"],
            "flops": metrics.get("flops"), "params": metrics.get("params"), "search_seconds": metrics.get("search_seconds")}


def summary_table(rows: list[dict], deltas: list[float]) -> Table:
    table = Table(title="ICDARTS, fixed δ (Eq. 4.1), no budget: the searched net's predicted latency (deployed template)")
    for column in ("δ", "seed", "predicted (ms)", "P(α) at the end", "FLOPs", "search (s)"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(f"{row['delta']:g}", str(row["seed"]), f"{row['predicted_latency_ms']:.3f}",
                      f"{row['expected_P']:.4g}" if row["expected_P"] is not None else "-",
                      f"{row['flops'] / 1e6:.1f}M" if row["flops"] else "-", f"{row['search_seconds'] or 0:.0f}")
    for delta in deltas:
        values = [r["predicted_latency_ms"] for r in rows if r["delta"] == delta]
        spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
        table.add_row(f"{delta:g}", "mean", f"{statistics.fmean(values):.3f}{spread}", "", "", "", style="bold")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, required=True, help="this machine's latency table for the preset's template")
    parser.add_argument("--weights", type=Path, default=None, help="stem-repeat weights JSON (Table 4.6); default: the table's ms")
    parser.add_argument("--deltas", default="0,0.01,0.05,0.1")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--discretization", default="xdarts")
    parser.add_argument("--out", type=Path, default=Path("runs/delta-sweep"))
    args = parser.parse_args()
    setup_logging()
    deltas = [float(d) for d in args.deltas.split(",")]
    rows = [one_search(args, delta, int(seed)) for seed in args.seeds.split(",") for delta in deltas]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "delta_sweep.json").write_text(json.dumps({"table": str(args.table), "weights": str(args.weights),
                                                           "preset": args.preset, "rows": rows}, indent=1))
    Console().print(summary_table(rows, deltas))


if __name__ == "__main__":
    main()
