"""LUT fidelity benchmark: build torch-CPU and ONNX Runtime-CPU tables (DARTS op space 3 and MobileNet, cpu preset,
32x32, batch 1), validate each on random architectures end to end, and measure the noise floor.

    PYTHONPATH=pipeline python3 benchmarks/lut_fidelity.py [--samples 100] [--spaces darts mobilenet]
        [--runtimes torch onnxruntime] [--root latency_tables] [--rebuild] [--noise 10] [--retest]

Prints the build time of each table, the fidelity table (share within ±5 / ±10 %, RMSE, Kendall τ, drift) against
the targets (≥ 90 % within ±10 % raw, ≥ 97 % after drift correction, τ ≥ 0.9), and the noise floor: the first validation network measured
``--noise`` times with the table's own method, each a full measurement (warm-up, repeats, best of the rounds); its
spread ((max − min) / median) and relative standard deviation bound what any table can reach on the machine as it is.
Tables go to <root>/<machine>/<runtime>/, reports next to them (``...-fidelity/``); a table already complete at its
path and made on this machine is reused (``--rebuild`` profiles afresh, to time a full build).

``--retest`` measures the validation networks a second time, after all tables are validated, and scores the first
measurement as a "prediction" of the second: the fidelity a perfect table would show on the machine as it is
(test-retest), the ceiling the targets are to be read against; written to ``...-fidelity/retest.json``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from nasdeploy.hardware import MeasureMethod, get_backend
from nasdeploy.latency.profiler import (
    DEFAULT_FIT_SAMPLES,
    PROFILE_DEFAULTS,
    measure_networks,
    network_input_shape,
    profile_space,
)
from nasdeploy.latency.table import default_table_path
from nasdeploy.latency.validate import fidelity_table, retest_table, validate_table
from nasdeploy.progress import console, setup_logging
from nasdeploy.spaces.base import get_space

# (metrics key, metric, target): raw, and after scaling by the drift the run measured (what commands predict with)
TARGETS = (("metrics", "within_10pct", 0.90), ("metrics_drift_corrected", "within_10pct", 0.97), ("metrics", "kendall_tau", 0.9))


def missed_targets(report: dict) -> list[str]:
    return [f"{'drift-corrected ' if key != 'metrics' else ''}{metric} {report[key][metric]:.3g} < {target}"
            for key, metric, target in TARGETS if report.get(key, report["metrics"])[metric] < target]


def noise_floor(table, seed: int, repeats: int) -> dict:
    """The network of validation seed ``seed`` measured ``repeats`` times with the table's method: spread and std."""
    from nasdeploy.latency.profiler import stored_method

    space = get_space(table.space)
    template = space.template_from_dict(table.template)
    backend = get_backend(table.runtime, table.device, stored_method(table))
    arch = space.sample(template, random.Random(seed))
    records = measure_networks(backend, [lambda: space.build(arch, template)] * repeats, network_input_shape(template, table.batch),
                               [{} for _ in range(repeats)], f"noise floor {table.runtime}")
    medians = [r["median_ms"] for r in records]
    middle = statistics.median(medians)
    return {"medians_ms": medians, "spread_pct": 100 * (max(medians) - min(medians)) / middle,
            "std_pct": 100 * statistics.pstdev(medians) / statistics.fmean(medians)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spaces", nargs="+", default=["darts", "mobilenet"])
    parser.add_argument("--runtimes", nargs="+", default=["onnxruntime", "torch"])
    parser.add_argument("--warmup", type=int, default=PROFILE_DEFAULTS["warmup"])
    parser.add_argument("--repeats", type=int, default=PROFILE_DEFAULTS["repeats"])
    parser.add_argument("--rounds", type=int, default=PROFILE_DEFAULTS["rounds"])
    parser.add_argument("--max-rounds", type=int, default=PROFILE_DEFAULTS["max_rounds"], help="up to this many rounds when "
                        "rounds often land slow (latency.rounds); equal to --rounds: exactly --rounds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fit-samples", type=int, default=DEFAULT_FIT_SAMPLES)
    parser.add_argument("--noise", type=int, default=10, help="measurements of one network for the noise floor (0: skip)")
    parser.add_argument("--retest", action="store_true", help="measure the validation networks again: the test-retest ceiling")
    parser.add_argument("--root", type=Path, default=Path("latency_tables"), help="where tables go (the committed reference tables by default)")
    parser.add_argument("--rebuild", action="store_true", help="profile afresh (resume=False), to time a full build")
    args = parser.parse_args()
    setup_logging()

    reports, builds, noise, tables = [], [], [], []
    for space_name in args.spaces:
        template = get_space(space_name).default_template("cpu")
        for runtime in args.runtimes:
            method = MeasureMethod(warmup=args.warmup, repeats=args.repeats, threads=args.threads, batch=1, rounds=args.rounds,
                                   max_rounds=args.max_rounds)
            backend = get_backend(runtime, "cpu", method)
            path = default_table_path(space_name, template, runtime, "cpu", 1, args.root, method.threads)
            started = time.perf_counter()
            table = profile_space(space_name, template, runtime, "cpu", backend.method, path, resume=not args.rebuild,
                                  backend=backend, fit_samples=args.fit_samples)
            fitted = len((table.overhead or {}).get("samples", []))  # more than --fit-samples when corrections were learned
            builds.append((f"{space_name} {runtime}", len(table.entries), fitted, time.perf_counter() - started, path))
            report = validate_table(table, args.samples, args.seed, path.with_name(path.stem + "-fidelity"))
            reports.append((f"{space_name} {runtime} cpu ({method.threads} thread)", report))
            tables.append(table)
            if args.noise:
                noise.append((f"{space_name} {runtime}", noise_floor(table, args.seed, args.noise)))
    for name, entries, fitted, seconds, path in builds:
        console.print(f"[bold]{name}[/] table: {entries} entries + {fitted} fit networks in {seconds:.1f} s -> {path}")
    console.print(fidelity_table(reports))
    for name, report in reports:
        missed = missed_targets(report)
        console.print(f"{name}: {'meets the targets' if not missed else 'misses ' + ', '.join(missed)}"
                      f" (≥ 90 % within ±10 % raw, ≥ 97 % drift-corrected, τ ≥ 0.9; n = {report['metrics']['n']})")
    if args.retest:  # after every table is validated, so the two measurements of a network are minutes apart
        ceilings = [(f"{name} retest", retest_table(table, report, table.path.with_name(table.path.stem + "-fidelity")))
                    for table, (name, report) in zip(tables, reports)]
        console.print(fidelity_table(ceilings, title="test-retest: the same networks measured twice (first as the prediction of second)"))
    for name, floor in noise:
        console.print(f"noise floor {name}: one network measured {len(floor['medians_ms'])} times: spread {floor['spread_pct']:.1f} %, "
                      f"std {floor['std_pct']:.2f} % (medians {', '.join(f'{v:.3f}' for v in floor['medians_ms'])} ms)")


if __name__ == "__main__":
    main()
