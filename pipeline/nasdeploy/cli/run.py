"""``nasdeploy run``: the whole pipeline (profile -> search -> retrain -> export + report) in one folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from nasdeploy.cli.app import app
from nasdeploy.cli.table_policy import TOLERANCE_HELP, recalibrate_option, tolerance_fraction, trust_option
from nasdeploy.progress import console, setup_logging


@app.command()
def run(
    strategy: Optional[str] = typer.Option(None, help="A registered strategy, see nasdeploy strategies (default: the space's, icdarts for darts, senas for mobilenet)."),
    space: Optional[str] = typer.Option(None, help="Search space: darts | darts_macro | mobilenet (default: the strategy's own, "
                                        "mobilenet for senas, else darts)."),
    latency_budget: Optional[str] = typer.Option(None, help="Latency budget, e.g. 22ms (default: derived from the table, "
                                                 "the lower quartile of 32 random networks' predicted latencies)."),
    data: str = typer.Option("digits", help="digits | cifar10:PATH | cifar100:PATH | imagefolder:PATH."),
    preset: str = typer.Option("cpu", help="cpu (≤ 15 min on 2 cores with digits) | tiny (smoke test) | paper."),
    out: Optional[Path] = typer.Option(None, help="Run folder (default runs/<space>-<strategy>-<preset>); re-running skips "
                                       "finished stages."),
    device: str = typer.Option("cpu", help="cpu | cuda:N (search, training and measurement)."),
    runtime: Optional[str] = typer.Option(None, help="Runtime the table is profiled on and the net deployed to (default: the "
                                          "device's best present; nasdeploy runtimes lists them)."),
    table: Optional[Path] = typer.Option(None, help="Use this latency table instead of the machine's cached/profiled one."),
    table_root: Optional[Path] = typer.Option(None, help="Folder of this machine's tables (default: $NASDEPLOY_TABLE_ROOT, else "
                                              "~/.cache/nasdeploy/latency_tables)."),
    epochs: Optional[int] = typer.Option(None, help="Retraining epochs (default: the preset's)."),
    seed: int = typer.Option(0, help="Random seed for every stage."),
    spot_check_tolerance: Optional[float] = typer.Option(None, "--spot-check-tolerance", help=TOLERANCE_HELP + " (default "
                                                         "10; 50 for the tiny preset's smoke-test tables)."),
    recalibrate: bool = recalibrate_option(),
    trust_table: bool = trust_option(),
    settings: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="A search-strategy setting as key=value (repeatable; nasdeploy "
                                       "strategies NAME), e.g. --set version=2."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also log debug detail."),
) -> None:
    """Profile the machine, search under the budget, retrain, export to ONNX (and .pte on --runtime executorch) with
    parity and re-measure."""
    from nasdeploy.cli.search import parse_settings
    from nasdeploy.pipeline import RunConfig, run_pipeline
    from nasdeploy.hardware.devices import require_device
    from nasdeploy.units import parse_latency

    setup_logging(verbose)
    require_device(device)  # before any work (run_pipeline checks it again for library callers)
    space = space or default_space(strategy)
    out = out or default_run_folder(space, strategy, preset)
    config = RunConfig(
        out=out, space=space, strategy=strategy, latency_budget_ms=parse_latency(latency_budget) if latency_budget else None,
        data=data, preset=preset, device=device, runtime=runtime, seed=seed, table=table, table_root=table_root,
        train_epochs=epochs,
        spot_check_tolerance=tolerance_fraction(spot_check_tolerance), recalibrate=recalibrate, trust_table=trust_table,
        search_options=parse_settings(settings),
    )
    state = run_pipeline(config, on_stage=lambda stage, result: console.print(
        f"[bold]{stage}[/]: {result.status}" + (f" in {result.seconds:.1f} s" if result.status == "done" else " (already finished)")))
    reason = state["stages"]["profile"].get("outputs", {}).get("reprofiled_because")
    if reason:
        console.print(f"[bold]profile[/]: re-profiled this machine because {reason}")
    if state.get("budget_source", "given") != "given":
        console.print(f"latency budget {state['budget_ms']:.3f} ms — {state['budget_source']}")
    console.print(run_table(state, out))


def default_space(strategy: Optional[str]) -> str:
    """The space a strategy was designed for (SE-NAS: the layer-wise MobileNet space), else darts."""
    from nasdeploy.search.base import STRATEGIES

    import nasdeploy.search  # noqa: F401  (registers the strategies)

    if strategy is None:
        return "darts"
    spaces = STRATEGIES.get(strategy).default_for_spaces
    return spaces[0] if spaces else "darts"


def default_run_folder(space: str, strategy: Optional[str], preset: str) -> Path:
    """``runs/<space>-<strategy>-<preset>``: ``run`` and ``run --strategy senas`` get folders of their own."""
    from nasdeploy.search.base import default_strategy

    return Path("runs") / f"{space}-{strategy or default_strategy(space)}-{preset}"


def _ms(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.3f} ms"


def run_table(state: dict, out: Path) -> Table:
    s = state["summary"]
    table = Table(title=f"nasdeploy run: {out}", show_header=False)
    table.add_row("test accuracy", "—" if s["test_accuracy"] is None else f"{s['test_accuracy'] * 100:.2f} %")
    table.add_row("latency budget", _ms(s["budget_ms"]))
    table.add_row("LUT-predicted latency", _ms(s["predicted_latency_ms"]))
    for row in s.get("fixups") or []:  # differentiable strategies: what α (γ) alone reached, each fix-up's replacements
        if "ms" in row:
            table.add_row(f"  {row['label']}", _ms(row["ms"]))
        else:
            table.add_row(f"  {row['label']}", "none" if row["count"] == 0 else f"[yellow]{row['count']}[/]")
    check = state.get("spot_check") or {}
    table.add_row("latency table spot check", check.get("summary") or s.get("spot_check") or "—")
    table.add_row(f"measured median ({s['runtime']}, {s['device']})", _ms(s["measured_median_ms"]))
    error = s["relative_prediction_error"]
    table.add_row("prediction error (pred − meas) / meas", "—" if error is None else f"{error * 100:+.1f} %")
    verdict = {True: "[green]within budget[/]", False: "[red]OVER budget[/]", None: "—"}[s["within_budget"]]
    table.add_row("budget check", verdict)
    table.add_row(f"ONNX Runtime ({s['device']}) median", _ms(s["onnxruntime_median_ms"]))
    table.add_row(f"PyTorch ({s['device']}) median", _ms(s["torch_median_ms"]))
    if s.get("torch_eager_median_ms") is not None:
        table.add_row(f"PyTorch eager ({s['device']}) median", _ms(s["torch_eager_median_ms"]))
    for absent in s.get("skipped_comparisons", []):
        table.add_row(f"{absent['runtime']} ({absent['device']})", escape(f"skipped: {absent['reason']}"))
    table.add_row("parity max |ONNX − torch|", f"{s['parity_max_abs_diff']:.2e}")
    for other in s.get("other_parity", []):
        table.add_row(f"parity max |{other['runtime']} − torch|", f"{other['max_abs_diff']:.2e}")
    table.add_row("parameters / FLOPs", f"{s['params']:,} / " + ("—" if s["flops"] is None else f"{s['flops']:,}"))
    table.add_row("stage time (profile + search + train + export)", f"{state.get('stage_time_s', 0.0):.0f} s")
    table.add_row("wall time of this invocation", f"{state.get('wall_time_s', 0.0):.0f} s")
    table.add_row("report", str(Path(out) / "export" / "report.md"))
    return table
