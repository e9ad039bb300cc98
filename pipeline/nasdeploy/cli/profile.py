"""``nasdeploy profile`` (fill a latency table) and ``nasdeploy validate-lut`` (check its predictions)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from nasdeploy.cli.app import app
from nasdeploy.errors import NasDeployError
from nasdeploy.latency.profiler import DEFAULT_FIT_SAMPLES, PROFILE_DEFAULTS
from nasdeploy.latency.rounds import STATISTIC_TEXT
from nasdeploy.progress import console, setup_logging
from nasdeploy.spaces.ops import MERGED_WORK_FEATURES

METHODS = ("isolated", "stem-repeat")


def make_template(space_name: str, preset: str, op_space: Optional[str], input_size: Optional[int]) -> Any:
    from nasdeploy.spaces.base import get_space

    space = get_space(space_name)
    overrides: dict[str, Any] = {}
    if op_space is not None:
        if not hasattr(space.default_template(preset), "op_space"):
            raise NasDeployError(f"--op-space applies to the darts space only, not {space_name!r}; drop it")
        overrides["op_space"] = op_space
    if input_size is not None:
        overrides["input_size"] = input_size
    if preset not in ("tiny", "cpu", "paper"):
        raise NasDeployError(f"unknown preset {preset!r}; choose one of: tiny, cpu, paper")
    return space.default_template(preset, **overrides)


@app.command()
def profile(
    device: str = typer.Option("cpu", help="cpu | cuda:N."),
    runtime: Optional[str] = typer.Option(None, help="onnxruntime | torch | tensorrt | executorch (default: the device's best "
                                          "present, as 'search', 'run' and 'export' resolve it; nasdeploy runtimes lists them)."),
    space: str = typer.Option("darts", help="Search space: darts | darts_macro | mobilenet."),
    op_space: Optional[str] = typer.Option(None, help="DARTS operation space 1 | 2 | 3 | 4 | combined (preset default if unset)."),
    input_size: Optional[int] = typer.Option(None, help="Input height = width (preset default if unset)."),
    batch: int = typer.Option(1, help="Batch size the table is measured at."),
    preset: str = typer.Option("cpu", help="Template size: tiny | cpu | paper."),
    warmup: int = typer.Option(PROFILE_DEFAULTS["warmup"], help="Untimed runs before timing each op or network, per round."),
    repeats: int = typer.Option(PROFILE_DEFAULTS["repeats"], help="Timed runs per op or network per round (median, p10/p90, IQR stored)."),
    rounds: int = typer.Option(PROFILE_DEFAULTS["rounds"], help="Interleaved rounds over all ops; each entry keeps its best round's median."),
    max_rounds: int = typer.Option(PROFILE_DEFAULTS["max_rounds"], help="Up to this many rounds when the first --rounds show "
                                   "rounds often landing in a slow phase (README, Latency methodology); --max-rounds equal to "
                                   "--rounds turns that off."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (torch.set_num_threads / ORT intra-op); default 1."),
    dtype: str = typer.Option("float32", help="float32 | float16 (GPU)."),
    clock: str = typer.Option("auto", help="auto | thread | wall: auto times CPU runs with one thread by thread CPU time (immune to other processes), else wall clock."),
    execution: str = typer.Option("auto", help="torch on CUDA: cuda-graph (replays of one captured graph, as a deployed "
                                  "engine runs) | eager (each kernel launched from Python); auto: cuda-graph on CUDA, eager on CPU."),
    reference: bool = typer.Option(PROFILE_DEFAULTS["reference"], help="Time a fixed reference network before every op and "
                                   "network and express each at the reference's quiet-state speed. Off by default: on a "
                                   "2-core VM it added the reference's noise (README, Latency methodology)."),
    out: Optional[Path] = typer.Option(None, help="Table path (default: <table root>/<machine>/<runtime>/<space>-<template>-b<batch>.json, "
                                       "where 'search' and 'run' look for it)."),
    table_root: Optional[Path] = typer.Option(None, help="Folder of this machine's tables (default: $NASDEPLOY_TABLE_ROOT, else "
                                              "~/.cache/nasdeploy/latency_tables; the repository's latency_tables/ holds references)."),
    method: str = typer.Option("isolated", help="isolated: every op alone + overhead fit; stem-repeat: Table 4.6-style op weights (ICDARTS §4.3)."),
    fit_samples: int = typer.Option(DEFAULT_FIT_SAMPLES, help="Sampled networks measured end to end to fit the overhead model."),
    more_fit_samples: Optional[int] = typer.Option(None, help="Fit networks in all when the overhead model misses the first "
                                                   "ones by more than 6 % (leave-one-out), to learn per-op corrections "
                                                   "(default 80 when --fit-samples is at least 40; 0: never)."),
    resume: bool = typer.Option(True, help="Skip entries already in OUT (continue an interrupted run)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also log debug detail."),
) -> None:
    """Measure every op instance of a space's template on one runtime and device; writes a latency table."""
    from nasdeploy.hardware import MeasureMethod, get_backend
    from nasdeploy.hardware.devices import require_device
    from nasdeploy.hardware.runtimes import resolve_runtime

    setup_logging(verbose)
    require_device(device)  # an absent cuda:N is one line before any work
    runtime = resolve_runtime(device, runtime).runtime  # logs which and why
    if method not in METHODS:
        raise NasDeployError(f"unknown --method {method!r}; choose one of: {', '.join(METHODS)}")
    if batch < 1 or repeats < 1 or rounds < 1 or warmup < 0 or (threads is not None and threads < 1):
        raise NasDeployError("--batch, --repeats, --rounds and --threads must be positive and --warmup not negative; e.g. --repeats 40")
    if max_rounds < rounds:
        raise NasDeployError(f"--max-rounds {max_rounds} is below --rounds {rounds}; give at least --rounds (equal: no extra rounds)")
    measure = MeasureMethod(warmup=warmup, repeats=repeats, threads=threads, dtype=dtype, batch=batch, rounds=rounds,
                            max_rounds=max_rounds, clock=clock, reference=reference, execution=execution)
    backend = get_backend(runtime, device, measure)  # fails at once if the device or runtime is absent
    template = make_template(space, preset, op_space, input_size)
    started = time.perf_counter()
    if method == "stem-repeat":
        from nasdeploy.latency.stem_repeat import stem_repeat_weights, weights_path

        result = stem_repeat_weights(space, template, backend, path=weights_path(space, template, runtime, device, backend.method, out))
        print_stem_repeat(result)
        return
    from nasdeploy.latency.profiler import profile_space

    table = profile_space(space, template, runtime, device, backend.method, out, resume, backend=backend, fit_samples=fit_samples,
                          root=table_root,
                          more_fit_samples=more_fit_samples)
    print_profile(table, time.perf_counter() - started)


def print_profile(table, seconds: float) -> None:
    from nasdeploy.hardware import fingerprint_id

    summary = Table(title="latency table", show_header=False)
    summary.add_row("file", str(table.path))
    summary.add_row("machine", fingerprint_id(table.fingerprint))
    summary.add_row("runtime / device", f"{table.runtime} / {table.device}")
    summary.add_row("entries", str(len(table.entries)))
    medians = sorted(e["median_ms"] for e in table.entries.values())
    if medians:
        summary.add_row("entry median range", f"{medians[0]:.4f} .. {medians[-1]:.4f} ms")
    coef = (table.overhead or {}).get("coef")
    if coef:
        merged = "".join(f" {coef[name] * 1000:+.3f} µs·{name}" for name in MERGED_WORK_FEATURES if coef.get(name))
        merged += " (thousand elements of work the runtime merges)" if merged else ""
        summary.add_row("overhead model", f"{coef['intercept']:.3f} ms + {coef['sum_ms']:.3f}·S + {coef['n_ops']:.4f}·N{merged}")
        summary.add_row("overhead fit RMSE", f"{table.overhead['rmse_ms']:.3f} ms on {len(table.overhead['samples'])} networks"
                        + (f" (leave-one-out {table.overhead['loo_rmse_pct']:.1f} %)" if table.overhead.get("loo_rmse_pct") else ""))
        measured = sorted(x["median_ms"] for x in table.overhead["samples"] if "median_ms" in x)
        if measured:
            summary.add_row("networks measured", f"{measured[0]:.3f} .. {measured[-1]:.3f} ms (a latency budget goes in this range)")
        if table.overhead.get("corrections"):
            summary.add_row("per-op corrections", f"{len(table.overhead['corrections'])} op instances, ridge "
                            f"{table.overhead['correction_lambda']:g} by the "
                            f"{table.overhead.get('correction_choice', 'one-standard-error rule')} (leave-one-out "
                            f"{table.overhead['loo_rmse_pct_without_corrections']:.1f} % without them)")
    if table.reference:
        summary.add_row("reference network", f"timed {len(table.reference['medians'])} times next to the ops and networks, "
                        f"quiet-state median {table.reference['canonical_ms']:.3f} ms")
    from nasdeploy.latency.profiler import non_delegated_ops

    for op_type, keys in non_delegated_ops(table).items():  # never silent: these entries time a fallback kernel
        summary.add_row("not delegated", f"{op_type} in {len(keys)} entries or fit networks (e.g. {keys[0]})")
    summary.add_row("method", ", ".join(f"{k}={v}" for k, v in table.method.items()))
    if table.rounds_rule:
        summary.add_row("rounds", rounds_line(table.rounds_rule))
    summary.add_row("time", f"{seconds:.1f} s")
    console.print(summary)


def rounds_line(rule: dict) -> str:
    """How many rounds each item got, which round it keeps, and why (latency.rounds)."""
    share = f"{100 * rule['slow_share']:.0f} % of rounds landed >{100 * (rule['slow_ratio'] - 1):.0f} % above their item's best"
    if rule.get("steady", True):
        return f"{rule['rounds']}, each item its best round (steady: {share})"
    kept = STATISTIC_TEXT.get(rule.get("statistic"), "median round")
    return (f"{rule['rounds']}, each item its {kept} (unsteady: {share}; with {rule['base_rounds']} rounds more than "
            f"{100 * rule['all_slow_risk']:g} % of items could have no round at speed)")


def print_stem_repeat(result: dict) -> None:
    rows = Table(title=f"operation latency weights (stem-repeat, cf. ICDARTS Table 4.6) — baseline {result['baseline_ms']:.3f} ms")
    rows.add_column("operation")
    rows.add_column("latency weight", justify="right")
    rows.add_column("Δ latency ×10 (ms)", justify="right")
    rows.add_column("per op (ms)", justify="right")
    for op, row in result["ops"].items():
        rows.add_row(op, f"{row['weight']:.2f}", f"{row['delta_ms']:.3f}", f"{row['per_op_ms']:.4f}")
    console.print(rows)
    console.print(f"written: {result['path']}")


@app.command("validate-lut")
def validate_lut(
    table: Path = typer.Option(..., help="Latency table JSON from 'nasdeploy profile'."),
    samples: int = typer.Option(50, help="Random architectures to predict and measure."),
    seed: int = typer.Option(0, help="Seed of the first sampled architecture."),
    out: Optional[Path] = typer.Option(None, help="Folder for lut_fidelity.json and .png (default: next to the table)."),
    allow_other_machine: bool = typer.Option(False, help="Measure even if this machine's fingerprint differs from the table's."),
    retest: bool = typer.Option(False, help="Measure the same networks again and score the first measurement against the "
                                "second: the fidelity a perfect table could reach on this machine as it is (retest.json)."),
    strict: bool = typer.Option(True, help="Exit with code 1 when the table does not fit this machine (--no-strict: report "
                                "it and exit 0)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also log debug detail."),
) -> None:
    """Predict and measure random architectures end to end; report ±5/±10 % shares, RMSE and Kendall τ.

    Exit codes: 0 the table fits this machine (at least 90 % of the networks within ±10 % after the drift
    correction); 1 it does not (0 with --no-strict); 2 bad input (a missing or corrupt table, a bad option).
    """
    from nasdeploy.latency.table import load_table
    from nasdeploy.hardware.devices import require_device
    from nasdeploy.latency.validate import fits_machine, retest_table, validate_table

    setup_logging(verbose)
    if samples < 2:
        raise NasDeployError("--samples must be at least 2 to rank predictions; e.g. --samples 50")
    lut = load_table(table)
    require_device(lut.device)  # the table's device must be here to measure on it
    out = out or table.with_name(table.stem + "-fidelity")
    report = validate_table(lut, samples, seed, out, allow_other_machine)
    print_fidelity([(f"{lut.runtime} {lut.device}", report)])
    if report.get("rounds_rule"):
        console.print(f"rounds per network: {rounds_line(report['rounds_rule'])}")
    if retest:
        again = retest_table(lut, report, out)
        print_fidelity([(f"{lut.runtime} {lut.device} retest", again)], title="the same networks measured again (test-retest)")
    drift = report["machine_drift_ratio"] - 1
    if report["mismatches"]:
        console.print(f"[bold yellow]this table was made on another machine or setup:[/] {'; '.join(report['mismatches'])}")
    console.print(f"drift {drift:+.1%}: this machine runs {abs(drift):.1%} {'slower' if drift > 0 else 'faster'} than when the "
                  "table was profiled; search, run, export and measure scale its predictions by that")
    if not fits_machine(report):
        from nasdeploy.latency.table import profile_command

        corrected = report["metrics_drift_corrected"]["within_10pct"]
        console.print(f"[bold red]this table does not fit this machine[/] ({corrected:.0%} of nets within ±10 % after the drift "
                      f"correction, 90 % needed): re-profile with '{profile_command(lut, lut.path).replace(' --out ', ' --no-resume --out ')}', "
                      "or let a command refit it here with --recalibrate" + ("" if strict else " (--no-strict: exit 0)"),
                      soft_wrap=True)
        if strict:
            raise typer.Exit(code=1)


def print_fidelity(reports: list[tuple[str, dict]], title: str = "latency table fidelity (predicted vs measured end to end)") -> None:
    from nasdeploy.latency.validate import fidelity_table

    console.print(fidelity_table(reports, title))
