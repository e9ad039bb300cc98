"""CSNAS's premise on our data: does the contrastive score rank cells like supervised accuracy does?

    PYTHONPATH=pipeline python3 benchmarks/csnas_premise.py [--candidates 12] [--preset cpu] [--lrs 0.001 0.05]
        [--set epochs=20] [--supervised-epochs 3] [--accuracies OLD/premise.json] [--out runs/csnas-premise]

Draws ``--candidates`` cells uniformly from CSNAS's θ space (the distribution of its random start trials), scores
each with CSNAS's objective (``search.csnas.candidate.train_and_score``: the preset's search network, images and
schedule, once per contrastive learning rate in ``--lrs``), trains the same cell supervised at the same size for
``--supervised-epochs`` epochs (the retraining recipe, labels, no cutout or auxiliary head) and prints Kendall τ
between -contrastive loss and test accuracy (τ > 0: a lower contrastive loss goes with a higher accuracy).
``--set key=value`` changes a CSNAS setting for the contrastive scores; ``--accuracies`` reuses the supervised
accuracies of an earlier run with the same ``--seed`` and ``--preset`` (the same candidates). Results go to
OUT/premise.json after every candidate.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import replace
from pathlib import Path

from scipy.stats import kendalltau

from nasdeploy.progress import console, setup_logging
from nasdeploy.search.base import SearchRequest, get_strategy
from nasdeploy.search.context import build_context
from nasdeploy.search.csnas.candidate import SearchImages, search_template_for, train_and_score
from nasdeploy.search.csnas.encoding import choices, decode, edge_names, param_name
from nasdeploy.spaces.ops import op_space_names
from nasdeploy.spaces.record import ArchitectureRecord
from nasdeploy.train.trainer import preset_config, train_architecture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=12)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--lrs", type=float, nargs="+", default=None, help="contrastive learning rates (default: the preset's)")
    parser.add_argument("--set", dest="settings", action="append", default=[], help="a CSNAS setting key=value")
    parser.add_argument("--accuracies", type=Path, default=None, help="premise.json whose supervised accuracies to reuse")
    parser.add_argument("--supervised-epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/csnas-premise"))
    args = parser.parse_args()
    setup_logging()
    args.out.mkdir(parents=True, exist_ok=True)

    strategy = get_strategy("csnas")
    config = strategy.settings(args.preset, dict(pair.split("=", 1) for pair in args.settings))
    earlier = json.loads(args.accuracies.read_text())["rows"] if args.accuracies else None
    ctx = build_context(strategy, SearchRequest(space="darts", out_dir=args.out, data=args.data, preset=args.preset,
                                                seed=args.seed), config)
    images = SearchImages(ctx, config.data_fraction)
    search_template = search_template_for(ctx.template, config)
    size = config.search_input_size or ctx.template.input_size
    supervised_template = replace(search_template, input_size=size)
    options = choices(op_space_names(ctx.template.op_space))
    rng = random.Random(args.seed)
    lrs = args.lrs or [config.lr]
    rows = []
    for n in range(args.candidates):
        theta = {param_name(c, j, i): rng.choice(options) for c, j, i in edge_names(ctx.template.nodes)}
        genotype = decode(theta, ctx.template.nodes)
        row = {"candidate": n, "theta": theta, "contrastive_loss": {}, "contrastive_seconds": {}}
        for lr in lrs:
            score = train_and_score(ctx, genotype, search_template, images, replace(config, lr=lr))
            row["contrastive_loss"][str(lr)] = score.contrastive_loss
            row["contrastive_seconds"][str(lr)] = round(score.seconds, 1)
        if earlier is not None:
            assert earlier[n]["theta"] == theta, "--accuracies comes from other candidates (seed or preset)"
            row.update(test_accuracy=earlier[n]["test_accuracy"], supervised_seconds=earlier[n]["supervised_seconds"])
        else:
            started = time.perf_counter()
            record = ArchitectureRecord(space="darts", template=supervised_template, arch=genotype)
            train = preset_config("cpu", epochs=args.supervised_epochs, seed=args.seed, cutout=0, auxiliary_weight=0.0)
            metrics = train_architecture(record, args.data, train, args.out / f"supervised-{n}")
            row.update(test_accuracy=metrics["test_accuracy"], supervised_seconds=round(time.perf_counter() - started, 1))
        rows.append(row)
        summary = {"candidates": len(rows), "settings": args.settings, "search_template": search_template.to_dict(), "input_size": size,
                   "supervised_epochs": args.supervised_epochs, "rows": rows, "kendall_tau": {}}
        if len(rows) >= 3:
            for lr in lrs:
                tau, p = kendalltau([-r["contrastive_loss"][str(lr)] for r in rows], [r["test_accuracy"] for r in rows])
                summary["kendall_tau"][str(lr)] = {"tau": tau, "p_value": p}
        (args.out / "premise.json").write_text(json.dumps(summary, indent=1))
        console.print(f"candidate {n}: accuracy {row['test_accuracy']:.3f}, contrastive loss "
                      + ", ".join(f"{v:.3f} (lr {k})" for k, v in row["contrastive_loss"].items())
                      + (f"; Kendall τ so far {summary['kendall_tau']}" if summary["kendall_tau"] else ""))


if __name__ == "__main__":
    main()
