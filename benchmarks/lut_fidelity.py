"""LUT fidelity benchmark: build torch-CPU and ONNX Runtime-CPU tables of the DARTS space (op space 3,
32x32, batch 1, preset cpu), then validate each on random architectures end to end.

    PYTHONPATH=pipeline python3 benchmarks/lut_fidelity.py [--samples 50] [--repeats 40] [--rounds 3] [--runtimes torch onnxruntime]

Prints the build time of each table and the fidelity table (share within ±5 / ±10 %, RMSE, Kendall τ);
tables go to latency_tables/<machine>/<runtime>/, reports next to them (``...-fidelity/``).
A table already complete at its path is reused (delete it, or pass --rebuild, to time a fresh build).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from nasdeploy.hardware import MeasureMethod, get_backend
from nasdeploy.latency.profiler import profile_space
from nasdeploy.latency.table import default_table_path
from nasdeploy.latency.validate import fidelity_table, validate_table
from nasdeploy.progress import console, setup_logging
from nasdeploy.spaces.base import get_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fit-samples", type=int, default=12)
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnxruntime"])
    parser.add_argument("--root", type=Path, default=Path("latency_tables"))
    parser.add_argument("--rebuild", action="store_true", help="delete existing tables first, to time a full build")
    args = parser.parse_args()
    setup_logging()

    template = get_space("darts").default_template("cpu", op_space="3", input_size=32)
    reports, builds = [], []
    for runtime in args.runtimes:
        method = MeasureMethod(warmup=args.warmup, repeats=args.repeats, threads=args.threads, batch=1, rounds=args.rounds)
        backend = get_backend(runtime, "cpu", method)
        path = default_table_path("darts", template, runtime, "cpu", 1, args.root, method.threads)
        if args.rebuild:
            path.unlink(missing_ok=True)
        started = time.perf_counter()
        table = profile_space("darts", template, runtime, "cpu", backend.method, path, backend=backend, fit_samples=args.fit_samples)
        builds.append((runtime, len(table.entries), time.perf_counter() - started, path))
        report = validate_table(table, args.samples, args.seed, path.with_name(path.stem + "-fidelity"))
        reports.append((f"{runtime} cpu ({method.threads} thread)", report))
    for runtime, entries, seconds, path in builds:
        console.print(f"[bold]{runtime}[/] table: {entries} entries + {args.fit_samples} fit networks in {seconds:.1f} s -> {path}")
    console.print(fidelity_table(reports))


if __name__ == "__main__":
    main()
