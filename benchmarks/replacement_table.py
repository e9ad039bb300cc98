"""Does the latency controller meet a tight budget, or does the greedy fix-up? One row per strategy × preset × seed.

    PYTHONPATH=pipeline python3 benchmarks/replacement_table.py [--presets tiny,cpu] [--seeds 0,1,2]
        [--strategies icdarts,hicdarts-v1,hicdarts-v2,pcp-darts,ss-pcp-darts] [--set key=value ...]
        [--controller-off] [--out runs/replacement-table]

For each strategy and preset the budget is the tight one of issue 27: the cheapest network the strategy can output
plus 25 % of the way to the median of 32 random architectures of the space (``latency.predictor.tight_budget_ms``,
random draws with seed 0, so every seed of a strategy and preset searches for the same budget). Each search runs on
the embedded digits with the preset's settings (``--set`` changes one for every run; ``--controller-off`` sets
``latency_control=off``: the penalty is zero and only the fix-up meets the budget). A row is the budget, the
α-only latency (the genotype α discretises to, before any fix-up; hierarchical: the micro phase's, then γ-only, the
macro phase's before its fix-up) and the fix-up's replacements (hierarchical: the fix-up of the micro result before
the macro phase + the macro phase's). It passes when the replacements are at most 2.

Latencies are predicted from a latency table priced by a fixed cost model (``COST``, the tests' hand-made table:
ms per op ∝ its input activations, separable convolutions dearest, pools and skips cheapest), one per space and
preset, written under OUT/tables. Predictions, not timings: the table is deterministic and the figures do not
depend on the machine's load. Writes OUT/replacement_table.json (every row, with the settings that ran).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nasdeploy.latency.predictor import sampled_latencies_ms, tight_budget_ms
from nasdeploy.latency.table import LatencyTable, save_table
from nasdeploy.latency.trust import TablePolicy
from nasdeploy.progress import setup_logging
from nasdeploy.search.base import SearchRequest, get_strategy
from nasdeploy.search.context import build_context
from nasdeploy.spaces.base import get_space

# ms per op ∝ (1 + its input activations / 1000); the tests' hand-made tables (tests/test_icdarts_search.py)
COST = {"sep_conv_3x3": 3.0, "sep_conv_5x5": 5.0, "dil_conv_3x3": 1.5, "dil_conv_5x5": 2.5,
        "max_pool_3x3": 0.2, "avg_pool_3x3": 0.25, "skip_connect": 0.05, "identity": 0.05}
OTHER_COST = 0.5  # stem, preprocessing, classifier, macro skips' preprocessing
STRATEGIES = {  # row name: (strategy, space, settings)
    "icdarts": ("icdarts", "darts", {}),
    "hicdarts-v1": ("hierarchical-icdarts", "darts_macro", {"version": 1}),
    "hicdarts-v2": ("hierarchical-icdarts", "darts_macro", {"version": 2}),
    "pcp-darts": ("pcp-darts", "darts", {}),
    "ss-pcp-darts": ("ss-pcp-darts", "darts", {}),
}
FRACTION = 0.25  # of the way from the cheapest network to the random median
RANDOM_SAMPLES, RANDOM_SEED = 32, 0
MAX_REPLACEMENTS = 2


def cost_table(space_name: str, preset: str, path: Path) -> Path:
    """The cost model's latency table for the preset's template of ``space_name`` (no overhead model)."""
    space = get_space(space_name)
    template = space.default_template(preset)
    table = LatencyTable(space=space_name, template=template.to_dict(), runtime="torch", device="cpu", fingerprint={},
                         versions={}, method={"warmup": 1, "repeats": 1, "threads": 1, "dtype": "float32", "batch": 1})
    for inst in space.op_instances(template):
        ms = COST.get(inst.op, OTHER_COST) * (1 + inst.c_in * inst.h * inst.w / 1000)
        table.add(inst, {"median_ms": ms, "p10_ms": ms, "p90_ms": ms, "iqr_ms": 0.0, "n": 1})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_table(table, path)
    return path


def request(space: str, preset: str, seed: int, table: Path, out: Path, budget: float | None, options: dict) -> SearchRequest:
    # the cost model prices ops, not this machine: its spot check is skipped on purpose
    return SearchRequest(space=space, out_dir=out, table_path=table, latency_budget_ms=budget, data="digits",
                         preset=preset, seed=seed, options=options, table_policy=TablePolicy(trust=True))


def budget_for(name: str, preset: str, table: Path, options: dict) -> dict:
    """The tight budget of ``name`` on ``preset``: its cheapest network + FRACTION of the way to the random median."""
    strategy_name, space, settings = STRATEGIES[name]
    strategy = get_strategy(strategy_name)
    req = request(space, preset, 0, table, Path("unused"), None, {**settings, **options})
    config = strategy.settings(preset, req.options)
    ctx = build_context(strategy, req, config)
    cheapest = strategy.cheapest_latency_ms(ctx, config)
    sampled = sampled_latencies_ms(ctx.table, space, ctx.template, RANDOM_SEED, RANDOM_SAMPLES)
    return {"cheapest_ms": cheapest, "random_median_ms": sampled[len(sampled) // 2],
            "budget_ms": tight_budget_ms(cheapest, sampled, FRACTION)}


def summarise(metrics: dict) -> dict:
    """α-only (micro), γ-only and the replacements of each fix-up, from a search's metrics."""
    if "micro_alpha_only_latency_ms" in metrics:  # hierarchical
        return {"alpha_only_ms": metrics["micro_alpha_only_latency_ms"], "gamma_only_ms": metrics.get("gamma_only_latency_ms"),
                "replacements_before_macro": metrics["micro_fixup_replacements"],
                "replacements_macro": metrics["macro_fixup_replacements"], "replacements": metrics["fixup_replacements"]}
    return {"alpha_only_ms": metrics["alpha_only_latency_ms"], "gamma_only_ms": None, "replacements": metrics["fixup_replacements"]}


def one_search(name: str, preset: str, seed: int, table: Path, budget: dict, options: dict, out: Path) -> dict:
    strategy_name, space, settings = STRATEGIES[name]
    started = time.perf_counter()
    req = request(space, preset, seed, table, out / f"{name}-{preset}-seed{seed}", budget["budget_ms"], {**settings, **options})
    metrics = get_strategy(strategy_name).run(req).record.metrics
    row = {"strategy": name, "preset": preset, "seed": seed, **budget, **summarise(metrics),
           "predicted_ms": metrics["predicted_latency_ms"], "wall_s": round(time.perf_counter() - started, 1)}
    row["pass"] = row["replacements"] <= MAX_REPLACEMENTS
    return row


def render(rows: list[dict], title: str) -> Table:
    table = Table(title=title)
    for column in ("strategy", "preset", "seed", "budget ms", "α-only ms", "γ-only ms", "replacements", "≤ 2", "final ms", "s"):
        table.add_column(column, justify="right")
    for r in rows:
        split = (f" ({r['replacements_before_macro']} + {r['replacements_macro']})" if "replacements_macro" in r else "")
        table.add_row(r["strategy"], r["preset"], str(r["seed"]), f"{r['budget_ms']:.2f}", f"{r['alpha_only_ms']:.2f}",
                      "-" if r["gamma_only_ms"] is None else f"{r['gamma_only_ms']:.2f}", f"{r['replacements']}{split}",
                      "yes" if r["pass"] else "[red]no[/]", f"{r['predicted_ms']:.2f}", f"{r['wall_s']:.0f}")
    return table


def parse_sets(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        options[key.strip()] = raw.strip()
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,cpu")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for every search (e.g. lambda_eta=10); the presets' values otherwise")
    parser.add_argument("--controller-off", action="store_true", help="latency_control=off: no latency term, fix-up only")
    parser.add_argument("--out", type=Path, default=Path("runs/replacement-table"))
    args = parser.parse_args()
    setup_logging(False)
    import torch

    torch.set_num_threads(1)
    options = parse_sets(args.sets)
    if args.controller_off:
        options["latency_control"] = "off"
    console, rows = Console(width=160), []
    result = args.out / "replacement_table.json"
    for preset in args.presets.split(","):
        for name in args.strategies.split(","):
            space = STRATEGIES[name][1]
            table = cost_table(space, preset, args.out / "tables" / f"{space}-{preset}.json")
            budget = budget_for(name, preset, table, options)
            for seed in (int(s) for s in args.seeds.split(",")):
                rows.append(one_search(name, preset, seed, table, budget, options, args.out / "runs"))
                r = rows[-1]
                console.print(f"{name} {preset} seed {seed}: budget {r['budget_ms']:.2f} ms, α-only {r['alpha_only_ms']:.2f} ms, "
                              f"{r['replacements']} replacement(s) ({r['wall_s']:.0f} s)", highlight=False)
                result.parent.mkdir(parents=True, exist_ok=True)
                result.write_text(json.dumps({"options": options, "fraction": FRACTION, "random_samples": RANDOM_SAMPLES,
                                              "cost": COST, "rows": rows}, indent=1))
    passed = sum(r["pass"] for r in rows)
    console.print(render(rows, f"tight budget (cheapest + {FRACTION:.0%} to the random median): "
                               f"{passed}/{len(rows)} within {MAX_REPLACEMENTS} replacements"))
    console.print(f"wrote {result}")


if __name__ == "__main__":
    main()
