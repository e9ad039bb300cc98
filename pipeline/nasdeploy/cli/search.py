"""``nasdeploy search``: build a SearchRequest and hand it to the chosen strategy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from nasdeploy.cli.app import app
from nasdeploy.errors import NasDeployError
from nasdeploy.progress import console, setup_logging
from nasdeploy.units import parse_flops, parse_latency

STRATEGY_HELP = "Strategy-specific settings (ICDARTS and SE-NAS); unset means the strategy's default."


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``--set key=value`` pairs; values are read as JSON when they parse, else kept as strings."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise NasDeployError(f"cannot read --set {pair!r}; write it as key=value, e.g. --set lr=0.05")
        try:
            settings[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            settings[key.strip()] = raw
    return settings


@app.command()
def search(
    space: str = typer.Option("darts", help="Search space: darts | mobilenet."),
    strategy: Optional[str] = typer.Option(None, help="icdarts | senas (default: icdarts for darts, senas for mobilenet)."),
    table: Optional[Path] = typer.Option(None, help="Latency table (LUT) JSON from 'nasdeploy profile'."),
    latency_budget: Optional[str] = typer.Option(None, help="Latency budget, e.g. 22ms."),
    flops_budget: Optional[str] = typer.Option(None, help="FLOPs (multiply-adds) budget, e.g. 320M."),
    data: str = typer.Option("digits", help="digits | cifar10:PATH | cifar100:PATH | imagefolder:PATH."),
    out: Path = typer.Option(Path("runs/search"), help="Output folder (arch.json, log, plots, checkpoint)."),
    preset: str = typer.Option("cpu", help="Template and schedule size: tiny | cpu | paper."),
    seed: int = typer.Option(0, help="Random seed."),
    resume: bool = typer.Option(False, help="Continue from OUT/checkpoint.pt."),
    device: str = typer.Option("cpu", help="Torch device the search trains on (cpu, cuda:0)."),
    epochs: Optional[int] = typer.Option(None, help=STRATEGY_HELP),
    batch_size: Optional[int] = typer.Option(None, help=STRATEGY_HELP),
    lr: Optional[float] = typer.Option(None, help="SE-NAS supernet learning rate."),
    delta: Optional[float] = typer.Option(None, help="ICDARTS: fix the latency penalty coefficient δ (no adaptation)."),
    op_space: Optional[str] = typer.Option(None, help="ICDARTS: operation space 1 | 2 | 3 | 4 | combined."),
    discretization: Optional[str] = typer.Option(None, help="ICDARTS: darts | idarts | xdarts."),
    zero_config: Optional[str] = typer.Option(None, help="ICDARTS: zero-operation configuration V0..V4."),
    tiers: Optional[int] = typer.Option(None, help="ICDARTS: tournament tiers T (Algorithm 2)."),
    max_ops_per_edge: Optional[int] = typer.Option(None, help="ICDARTS: operations per edge set in the tournament."),
    pretrain_epochs: Optional[int] = typer.Option(None, help="ICDARTS: pre-training epochs of the search network."),
    warmup_epochs: Optional[int] = typer.Option(None, help="ICDARTS: warm-up epochs of each new evaluation network."),
    update_every: Optional[int] = typer.Option(None, help="ICDARTS: steps S_U between evaluation-network rebuilds."),
    distill_weight: Optional[float] = typer.Option(None, "--lambda", help="ICDARTS: distillation weight λ."),
    temperature: Optional[float] = typer.Option(None, help="ICDARTS: distillation temperature."),
    stage_epochs: Optional[int] = typer.Option(None, help="SE-NAS: retraining epochs after each shrink."),
    shrink_stages: Optional[int] = typer.Option(None, help="SE-NAS: number of shrinking stages."),
    shrink_k: Optional[int] = typer.Option(None, help="SE-NAS: operators removed per stage (k)."),
    merge_threshold: Optional[int] = typer.Option(None, help="SE-NAS: merge threshold T for expanding."),
    snapshots: Optional[int] = typer.Option(None, help="SE-NAS: weight snapshots K averaged in Eq. 4."),
    score_samples: Optional[int] = typer.Option(None, help="SE-NAS: paths sampled per operator for SI (Eq. 5)."),
    population: Optional[int] = typer.Option(None, help="SE-NAS: evolutionary population size."),
    generations: Optional[int] = typer.Option(None, help="SE-NAS: evolutionary generations."),
    mutation_prob: Optional[float] = typer.Option(None, help="SE-NAS: per-layer mutation probability."),
    settings: list[str] = typer.Option([], "--set", help="Any other strategy setting as key=value (repeatable)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Search an architecture under a latency and/or FLOPs budget; writes OUT/arch.json."""
    from nasdeploy.search.base import SearchRequest, default_strategy, get_strategy

    setup_logging(verbose)
    named = {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "delta": delta, "op_space": op_space,
        "discretization": discretization, "zero_config": zero_config, "tiers": tiers,
        "max_ops_per_edge": max_ops_per_edge, "pretrain_epochs": pretrain_epochs,
        "warmup_epochs": warmup_epochs, "update_every": update_every, "lambda": distill_weight,
        "temperature": temperature, "stage_epochs": stage_epochs, "shrink_stages": shrink_stages,
        "shrink_k": shrink_k, "merge_threshold": merge_threshold, "snapshots": snapshots,
        "score_samples": score_samples, "population": population, "generations": generations,
        "mutation_prob": mutation_prob,
    }
    options = {key: value for key, value in named.items() if value is not None}
    options.update(parse_settings(settings))
    request = SearchRequest(
        space=space,
        out_dir=out,
        table_path=table,
        latency_budget_ms=parse_latency(latency_budget) if latency_budget else None,
        flops_budget=parse_flops(flops_budget) if flops_budget else None,
        data=data,
        preset=preset,
        seed=seed,
        resume=resume,
        device=device,
        options=options,
    )
    result = get_strategy(strategy or default_strategy(space)).run(request)
    print_result(result)


def print_result(result) -> None:
    metrics = result.record.metrics
    summary = Table(title="search result", show_header=False)
    summary.add_row("architecture", str(result.arch_path))
    summary.add_row("search log", str(result.log_path))
    for key in ("predicted_latency_ms", "latency_budget_ms", "flops", "flops_budget", "params"):
        if metrics.get(key) is not None:
            value = metrics[key]
            summary.add_row(key, f"{value:,.3f}" if isinstance(value, float) else f"{value:,}")
    console.print(summary)
