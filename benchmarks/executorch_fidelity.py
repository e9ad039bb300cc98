"""ExecuTorch (XNNPACK) fidelity on this machine: profile the DARTS and MobileNet cpu tables on ExecuTorch into a folder
of your own, validate each on random networks end to end (issue 26's target: ≥ 97 % within ±10 % after drift
correction, τ ≥ 0.9), and measure the same exported networks on ExecuTorch, ONNX Runtime and PyTorch.

    PYTHONPATH=pipeline python benchmarks/executorch_fidelity.py --out /tmp/et-fidelity [--samples 100] [--retest]
        [--spaces darts mobilenet] [--compare 3] [--fit-samples 40] [--rounds 3] [--max-rounds 9] [--repeats 40] [--warmup 5]

Steps, each timed and printed: (1) ``profile_space`` on executorch for each space's cpu template, the table at
``OUT/<space>-cpu.json`` (a complete table made here is reused; pass a fresh OUT to time a build); (2) ``validate_table``
with ``--samples`` networks, reports in ``OUT/<space>-cpu-fidelity/`` (lut_fidelity.json, .png); (3) with
``--retest``, after every table is validated, the same networks measured again (``retest.json``: the ceiling a
perfect table could reach on the machine as it is); (4) ``--compare`` validation networks per space (seeds 0..)
exported to ONNX and to ``.pte``, both parity-checked against PyTorch, and measured with the table's method on
ExecuTorch (the ``.pte``), ONNX Runtime (the ONNX file) and torch (the module): ``OUT/compare.json``.
Then the fidelity table, the targets met or missed, and the non-delegated ops of each table.

OUT must not be inside ``latency_tables/`` (the committed reference tables). Needs the mobile extra. Every network
measured on ExecuTorch is lowered to XNNPACK first (seconds of CPU work each), in one process per core before any
timing (``NASDEPLOY_EXECUTORCH_WORKERS`` to change); run it on an otherwise idle machine for figures.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from nasdeploy.hardware import MeasureMethod, get_backend
from nasdeploy.latency.profiler import DEFAULT_FIT_SAMPLES, PROFILE_DEFAULTS, non_delegated_ops, profile_space, stored_method
from nasdeploy.latency.validate import fidelity_table, retest_table, validate_table
from nasdeploy.progress import console, setup_logging
from nasdeploy.spaces.base import get_space

REPO = Path(__file__).resolve().parents[1]
# (metrics key, metric, target) of issue 26: after scaling by the drift the run measured, and the rank correlation
TARGETS = (("metrics_drift_corrected", "within_10pct", 0.97), ("metrics", "kendall_tau", 0.9))


def missed_targets(report: dict) -> list[str]:
    return [f"{'drift-corrected ' if key != 'metrics' else ''}{metric} {report[key][metric]:.3g} < {target}"
            for key, metric, target in TARGETS if report[key][metric] < target]


class Steps:
    """Wall time of each named step, printed as it ends."""

    def __init__(self):
        self.seconds: list[tuple[str, float]] = []

    def run(self, name: str, work):
        started = time.perf_counter()
        result = work()
        self.seconds.append((name, time.perf_counter() - started))
        console.print(f"[bold]step[/] {name}: {self.seconds[-1][1]:.1f} s")
        return result


def compare_runtimes(table, seeds: list[int], out: Path) -> list[dict]:
    """Validation networks ``seeds`` exported to ONNX and .pte (parity-checked) and measured on executorch, onnxruntime
    and torch with the table's method (best of its rounds, as the table)."""
    import torch

    from nasdeploy.export.measure import module_measurement, onnx_measurement
    from nasdeploy.export.onnx_export import export_onnx
    from nasdeploy.export.pte_export import export_pte, pte_measurement
    from nasdeploy.latency.predictor import predict_latency_ms
    from nasdeploy.latency.profiler import network_input_shape

    space = get_space(table.space)
    template = space.template_from_dict(table.template)
    shape = network_input_shape(template, table.batch)
    rows = []
    for seed in seeds:
        arch = space.sample(template, random.Random(seed))
        torch.manual_seed(seed)
        net = space.build(arch, template).eval()
        onnx_path, pte_path = out / f"{table.space}-seed{seed}.onnx", out / f"{table.space}-seed{seed}.pte"
        onnx_parity = export_onnx(net, shape, onnx_path)
        pte_parity = export_pte(net, shape, pte_path)
        method = stored_method(table)
        medians = {"executorch": pte_measurement(pte_path, "cpu", method, shape).timing.median,
                   "onnxruntime": onnx_measurement(onnx_path, "onnxruntime", "cpu", method, shape).timing.median,
                   "torch": module_measurement(net, shape, "torch", "cpu", method).timing.median}
        rows.append({"space": table.space, "seed": seed, "predicted_executorch_ms": predict_latency_ms(table, arch, space, template, scaled=False),
                     "median_ms": medians, "parity_max_abs_diff": {"onnx": onnx_parity.max_abs_diff, "pte": pte_parity.max_abs_diff},
                     "pte_non_delegated": pte_parity.notes})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the tables and reports (not latency_tables/)")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spaces", nargs="+", default=["darts", "mobilenet"])
    parser.add_argument("--warmup", type=int, default=PROFILE_DEFAULTS["warmup"])
    parser.add_argument("--repeats", type=int, default=PROFILE_DEFAULTS["repeats"])
    parser.add_argument("--rounds", type=int, default=PROFILE_DEFAULTS["rounds"])
    parser.add_argument("--max-rounds", type=int, default=PROFILE_DEFAULTS["max_rounds"], help="up to this many rounds when "
                        "rounds often land slow (latency.rounds); equal to --rounds: exactly --rounds")
    parser.add_argument("--fit-samples", type=int, default=DEFAULT_FIT_SAMPLES)
    parser.add_argument("--more-fit-samples", type=int, default=None, help="ceiling of fit networks (default: the profiler's)")
    parser.add_argument("--preset", default="cpu", help="template preset (cpu; tiny only to try the script)")
    parser.add_argument("--retest", action="store_true", help="measure the validation networks again: the test-retest ceiling")
    parser.add_argument("--compare", type=int, default=3, help="networks per space measured on executorch, onnxruntime and torch")
    args = parser.parse_args()
    out = args.out.resolve()
    if out.is_relative_to(REPO / "latency_tables"):
        sys.exit(f"error: {out} is inside latency_tables/ (committed reference tables); pass another --out")
    out.mkdir(parents=True, exist_ok=True)
    setup_logging()
    steps = Steps()
    started = time.perf_counter()

    tables, reports = [], []
    for space_name in args.spaces:
        template = get_space(space_name).default_template(args.preset)
        method = MeasureMethod(warmup=args.warmup, repeats=args.repeats, threads=1, batch=1, rounds=args.rounds,
                               max_rounds=args.max_rounds)
        backend = get_backend("executorch", "cpu", method)
        path = out / f"{space_name}-{args.preset}.json"
        table = steps.run(f"profile {space_name}", lambda: profile_space(
            space_name, template, "executorch", "cpu", backend.method, path, resume=True, backend=backend,
            fit_samples=args.fit_samples, more_fit_samples=args.more_fit_samples))
        report = steps.run(f"validate {space_name} ({args.samples} networks)",
                           lambda: validate_table(table, args.samples, args.seed, path.with_name(path.stem + "-fidelity")))
        tables.append(table)
        reports.append((f"{space_name} executorch cpu (1 thread)", report))
    ceilings = []
    if args.retest:  # after every table is validated, so the two measurements of a network are minutes apart
        for table, (name, report) in zip(tables, reports):
            ceilings.append((f"{name} retest", steps.run(f"retest {table.space}", lambda: retest_table(
                table, report, table.path.with_name(table.path.stem + "-fidelity")))))
    compared = []
    for table in tables:
        seeds = list(range(args.seed, args.seed + args.compare))
        compared += steps.run(f"compare {table.space} ({len(seeds)} networks)", lambda: compare_runtimes(table, seeds, out / "compare"))
    (out / "compare.json").write_text(json.dumps(compared, indent=1))

    for table in tables:
        fit = len((table.overhead or {}).get("samples", []))
        skipped = non_delegated_ops(table)
        console.print(f"[bold]{table.space}[/] table {table.path}: {len(table.entries)} entries + {fit} fit networks, executorch "
                      f"{table.versions.get('executorch')}, backend {table.versions.get('executorch_backend')}, threads "
                      f"{table.versions.get('executorch_threads')}; not delegated: "
                      + (", ".join(f"{op} ({len(where)} entries/networks)" for op, where in skipped.items()) or "none"))
    console.print(fidelity_table(reports))
    for name, report in reports:
        missed = missed_targets(report)
        console.print(f"{name}: {'meets the targets' if not missed else 'misses ' + ', '.join(missed)}"
                      f" (≥ 97 % within ±10 % drift-corrected, τ ≥ 0.9; n = {report['metrics']['n']})")
    if ceilings:
        console.print(fidelity_table(ceilings, title="test-retest: the same networks measured twice (first as the prediction of second)"))
    for row in compared:
        m = row["median_ms"]
        console.print(f"{row['space']} seed {row['seed']}: executorch {m['executorch']:.3f} ms (predicted {row['predicted_executorch_ms']:.3f}), "
                      f"onnxruntime {m['onnxruntime']:.3f} ms, torch {m['torch']:.3f} ms; parity onnx "
                      f"{row['parity_max_abs_diff']['onnx']:.1e}, pte {row['parity_max_abs_diff']['pte']:.1e}")
    for name, seconds in steps.seconds:
        console.print(f"  {name}: {seconds:.1f} s")
    console.print(f"total {time.perf_counter() - started:.1f} s; reports in {out}")


if __name__ == "__main__":
    main()
