"""``nasdeploy search`` (common options + ``--set key=value``) and ``nasdeploy strategies [NAME]`` (their settings)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.padding import Padding
from rich.table import Table

from nasdeploy.cli.app import app
from nasdeploy.distributed import is_main_process
from nasdeploy.cli.table_policy import recalibrate_option, table_policy, tolerance_option, trust_option
from nasdeploy.errors import NasDeployError
from nasdeploy.progress import console, setup_logging
from nasdeploy.units import parse_flops, parse_latency


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``--set`` pairs as raw strings; the strategy's settings dataclass types them (``search.settings``)."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise NasDeployError(f"cannot read --set {pair!r}; write it as key=value, e.g. --set epochs=3 "
                                 "(nasdeploy strategies NAME lists the settings)")
        settings[key.strip()] = raw.strip()
    return settings


@app.command()
def search(
    strategy: Optional[str] = typer.Option(None, help="Search strategy, listed by 'nasdeploy strategies' (default: icdarts; "
                                           "senas with --space mobilenet, hierarchical-icdarts with --space darts_macro)."),
    space: Optional[str] = typer.Option(None, help="Search space: darts | darts_macro | mobilenet (default: the strategy's "
                                        "own, darts for icdarts, mobilenet for senas)."),
    table: Optional[Path] = typer.Option(None, help="Latency table (LUT) JSON; default: this machine's table for the space "
                                                    "and runtime (profiled first if there is none)."),
    latency_budget: Optional[str] = typer.Option(None, help="Latency budget, e.g. 22ms (default: none, the search is not "
                                                 "held to a latency; 'nasdeploy run' derives one from the table)."),
    flops_budget: Optional[str] = typer.Option(None, help="FLOPs (multiply-adds) budget, e.g. 320M (default: none)."),
    data: str = typer.Option("digits", help="digits | cifar10:PATH | cifar100:PATH | imagefolder:PATH."),
    out: Path = typer.Option(Path("runs/search"), help="Output folder (arch.json, search_log.json, drawing, checkpoint)."),
    preset: str = typer.Option("cpu", help="Template and schedule size: tiny | cpu | paper (icdarts also paper-mo: Table 4.7's setting)."),
    seed: int = typer.Option(0, help="Random seed."),
    resume: bool = typer.Option(False, help="Continue from OUT/checkpoint.pt."),
    device: str = typer.Option("cpu", help="Torch device the search trains on (cpu, cuda:0); under torchrun 'cuda' means "
                                           "cuda:LOCAL_RANK."),
    dist_backend: str = typer.Option("auto", help="Under torchrun: auto (nccl on CUDA, gloo on CPU) | nccl | gloo."),
    runtime: Optional[str] = typer.Option(None, help="Runtime of the table looked up without --table: onnxruntime | torch | "
                                          "tensorrt (default: the device's best present; nasdeploy runtimes)."),
    table_root: Optional[Path] = typer.Option(None, help="Where this machine's tables are looked up and profiled "
                                              "(default: $NASDEPLOY_TABLE_ROOT, else ~/.cache/nasdeploy/latency_tables)."),
    spot_check_tolerance: float = tolerance_option(),
    recalibrate: bool = recalibrate_option(),
    trust_table: bool = trust_option(),
    settings: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="A strategy setting as key=value (repeatable; nasdeploy strategies NAME)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also log debug detail."),
) -> None:
    """Search an architecture under a latency and/or FLOPs budget; writes OUT/arch.json and OUT/search_log.json."""
    from nasdeploy.hardware.devices import require_device
    from nasdeploy.search.base import SearchRequest, default_space, default_strategy, get_strategy

    setup_logging(verbose)
    require_device(device)  # before any work; the search context checks it again for library callers
    name = strategy or default_strategy(space or "darts")
    request = SearchRequest(
        space=space or default_space(name), out_dir=out, table_path=table,
        latency_budget_ms=parse_latency(latency_budget) if latency_budget else None,
        flops_budget=parse_flops(flops_budget) if flops_budget else None,
        data=data, preset=preset, seed=seed, resume=resume, device=device, options=parse_settings(settings),
        runtime=runtime, table_root=table_root, table_policy=table_policy(spot_check_tolerance, recalibrate, trust_table),
        dist_backend=dist_backend,
    )
    result = get_strategy(name).run(request)
    if is_main_process():
        print_result(result)


@app.command()
def strategies(name: Optional[str] = typer.Argument(None, help="A strategy: list its settings and presets.")) -> None:
    """List the search strategies, or one strategy's settings (type, default, presets, meaning) for --set."""
    from nasdeploy.search.base import STRATEGIES, get_strategy
    from nasdeploy.search.settings import describe_settings

    if name is None:
        print_strategies({key: STRATEGIES.get(key) for key in STRATEGIES})
        return
    chosen = get_strategy(name)
    presets = preset_columns(chosen.presets)
    rows = [(row.name, row.type, [json.dumps(row.presets.get(p, row.default)) for p in presets], row.help)
            for row in describe_settings(chosen.config_class, chosen.presets)]  # the value each preset runs with
    console.print(f"{name} settings: nasdeploy search --strategy {name} [--preset {'|'.join(presets)}] --set key=value; "
                  f"each preset's value ({DEFAULT_PRESET}* applies without --preset)", soft_wrap=True)
    if console.width < 120:  # narrow terminal: one block per setting, no name cut
        for setting, kind, values, meaning in rows:
            console.print(f"  {setting} ({kind}): " + ", ".join(f"{p}{'*' if p == DEFAULT_PRESET else ''} {v}"
                                                              for p, v in zip(presets, values)), highlight=False)
            console.print(Padding(meaning, (0, 0, 0, 6)), highlight=False)
    else:
        settings = Table()
        for column in ("setting", "type", *(f"{p}*" if p == DEFAULT_PRESET else p for p in presets)):
            settings.add_column(column, no_wrap=True)
        settings.add_column("meaning")
        for setting, kind, values, meaning in rows:
            settings.add_row(setting, kind, *values, meaning)
        console.print(settings)
    console.print(f"strategy: {source_place(type(chosen))}, settings: {source_place(chosen.config_class)}")
    print_recipes(chosen, presets)


def print_recipes(strategy, presets: list[str]) -> None:
    """The recipe each of the strategy's spaces retrains with (``nasdeploy train`` / ``run``), value by value, with
    the paper's section for each value."""
    from nasdeploy.train.recipes import PRESETS, RECIPES, recipe_rows

    spaces_of: dict[str, list[str]] = {}
    for space in strategy.spaces:
        spaces_of.setdefault(strategy.retrain_recipe(space), []).append(space)
    for name, spaces in spaces_of.items():
        console.print(f"retrains with recipe {name} ({', '.join(spaces)}): {RECIPES.get(name).source}; "
                      "--recipe on nasdeploy train overrides it", soft_wrap=True, highlight=False)
        rows = [(field, dict(zip(PRESETS, values)), where) for field, *values, where in recipe_rows(name)]
        shown = [p for p in presets if p in PRESETS]
        if console.width < 120:
            for field, values, where in rows:
                console.print(f"  {field}: " + ", ".join(f"{p} {recipe_value(values[p])}" for p in shown) + f" ({where})",
                              highlight=False)
            continue
        recipe = Table()
        for column in ("recipe value", *shown):
            recipe.add_column(column, no_wrap=True)
        recipe.add_column("where the paper gives it")
        for field, values, where in rows:
            recipe.add_row(field, *(recipe_value(values[p]) for p in shown), where)
        console.print(recipe)


def recipe_value(value: Any) -> str:
    return "-" if value == "" else json.dumps(value)


def print_strategies(classes: dict) -> None:
    rows = [(key, ", ".join(cls.spaces), "yes" if cls.uses_flops_budget else "no", cls.summary, source_place(cls))
            for key, cls in classes.items()]
    console.print("search strategies (nasdeploy strategies NAME for settings)")
    if console.width < 120:  # narrow terminal: one block per strategy, no name cut
        for strategy, spaces, flops, summary, where in rows:
            console.print(f"  {strategy} (spaces: {spaces}; FLOPs budget: {flops}) in {where}", highlight=False)
            console.print(Padding(summary, (0, 0, 0, 6)), highlight=False)
        return
    listing = Table()
    for column in ("strategy", "spaces", "FLOPs budget"):
        listing.add_column(column, no_wrap=True)
    listing.add_column("what it is")
    listing.add_column("where", no_wrap=True)
    for row in rows:
        listing.add_row(*row)
    console.print(listing)


DEFAULT_PRESET = "cpu"  # search's and run's --preset default


def preset_columns(presets: dict) -> list[str]:
    """The presets, the one that applies without --preset first."""
    return sorted(presets, key=lambda p: p != DEFAULT_PRESET)


def source_place(obj) -> str:
    """Where a class is defined, as a path under the package: ``search/icdarts/`` for a strategy folder's
    ``__init__.py``, ``search/icdarts/config.py`` for a module."""
    import sys

    module = sys.modules[obj.__module__]
    name = obj.__module__.removeprefix("nasdeploy.").replace(".", "/")
    return f"{name}/" if hasattr(module, "__path__") else f"{name}.py"


def print_result(result) -> None:
    from nasdeploy.search.shared.budget import fixup_summary

    metrics = result.record.metrics
    summary = Table(title="search result", show_header=False)
    summary.add_row("architecture", str(result.arch_path))
    summary.add_row("search log", str(result.log_path))
    for key in ("predicted_latency_ms", "latency_budget_ms", "flops", "flops_budget", "params", "search_seconds", "spot_check"):
        if metrics.get(key) is not None:
            value = metrics[key]
            summary.add_row(key, f"{value:,.3f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value))
    for row in fixup_summary(metrics):  # how the budget was met: α (γ) alone, then each fix-up's replacements
        summary.add_row(f"  {row['label']}", f"{row['ms']:,.3f} ms" if "ms" in row else f"{row['count']:,}")
    console.print(summary)
