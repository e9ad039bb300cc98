"""Whether a latency table can be trusted here: its header against this machine, then a spot check.

A table is reused by ``search``, ``run``, ``export`` (its prediction) and ``measure arch.json``, and the
tables committed under ``latency_tables/`` were profiled on other machines. The CPU model string names
the table's folder, but two VMs can report the same string, so before a table drives any of those
commands :func:`spot_check` measures a handful of sampled networks end to end on the table's own backend
and method (seconds) and compares them with the table's predictions. Its result is cached per table
content and machine boot, so a pipeline pays it once. Above the tolerance (median absolute error, 10 %
by default) the command stops with one line naming the fixes: re-profile (the exact command),
``--recalibrate`` (refit the table's overhead model here, saved into the table with a note), or
``--trust-table``.

The header is compared too (:func:`table_mismatches`): another CPU, cache sizes, ISA flags, kernel,
runtime versions (torch, ONNX Runtime, TensorRT...) or thread count all make a table "from another
machine". Such a table is used only when its spot check passes, and the differences are logged and
recorded in the result (never silent).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasdeploy.errors import NasDeployError
from nasdeploy.hardware.fingerprint import boot_id, fingerprint, fingerprint_id, machine_mismatches
from nasdeploy.io import atomic_write_json
from nasdeploy.latency.table import DEFAULT_ROOT, LatencyTable, default_table_path, load_table, profile_command, save_table

log = logging.getLogger(__name__)

# Spot-check networks come from their own seeds, apart from validation's (0..) and the fit networks' (10000..).
SPOT_SEED = 20_000
# --recalibrate refits the overhead model on the spot-check networks plus networks from these seeds.
RECALIBRATE_SEED = 30_000
RECALIBRATE_NETS = 16


@dataclass
class TablePolicy:
    """How a command treats a reused latency table (``--spot-check-tolerance``, ``--recalibrate``, ``--trust-table``)."""

    tolerance: float = 0.10  # median |err| above which the table is refused
    recalibrate: bool = False  # refit the overhead model here on the spot-check nets (+ more) and save it into the table
    trust: bool = False  # use the table whatever its spot check says; a cached result is reported, nothing is measured
    nets: int = 5  # networks measured by the spot check
    threads: int | None = None  # the thread count the caller deploys with; a table timed with another is refused

    def __post_init__(self) -> None:
        if not 0 < self.tolerance < 10 or self.nets < 1:
            raise NasDeployError(f"spot-check tolerance must be a fraction in (0, 10) and nets >= 1, got {self.tolerance} "
                                 f"and {self.nets}; e.g. --spot-check-tolerance 0.1")


# ---------------------------------------------------------------- finding this machine's table


def resolve_template(space: str, template: Any) -> Any:
    """``template`` or, when None, the space's cpu-preset default template."""
    from nasdeploy.spaces.base import get_space

    return get_space(space).default_template("cpu") if template is None else template


def find_table(space: str, template: Any, runtime: str, device: str, batch: int = 1, root: Path = DEFAULT_ROOT) -> Path | None:
    """This machine's complete table for space/template/runtime/device/batch under ``root``, or None.

    The path is ``default_table_path`` (the machine's folder is named by its fingerprint id); a file
    there that is corrupt, for another template or unfinished counts as absent. Whether the table is
    right for this machine is :func:`spot_check`'s question, not this one's.
    """
    from nasdeploy.spaces.base import get_space

    template = resolve_template(space, template)
    path = default_table_path(space, template, runtime, device, batch, root)
    if not path.is_file():
        return None
    try:
        table = load_table(path, space=space, template=template)
    except NasDeployError as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None
    missing = [inst for inst in get_space(space).op_instances(template) if not table.has(inst)]
    if missing or not (table.overhead or {}).get("coef"):
        log.info("latency table %s is unfinished (%d entries missing%s)", path, len(missing),
                 "" if (table.overhead or {}).get("coef") else ", no overhead model")
        return None
    return path


def table_for_search(space: str, template: Any, runtime: str, device: str, root: Path = DEFAULT_ROOT, batch: int = 1) -> Path:
    """This machine's table for the space, runtime and template; profiled first (progress bar) when there is none.

    ``template`` None means the space's cpu-preset default template. The table is profiled with the
    same method as a plain ``nasdeploy profile`` (an unfinished one is continued), so the two commands
    make and find the same file.
    """
    from nasdeploy.hardware import MeasureMethod
    from nasdeploy.latency.profiler import DEFAULT_FIT_SAMPLES, PROFILE_DEFAULTS, profile_space

    template = resolve_template(space, template)
    found = find_table(space, template, runtime, device, batch, root)
    if found is not None:
        log.info("latency table: %s (this machine's %s/%s table for %s)", found, runtime, device, space)
        return found
    path = default_table_path(space, template, runtime, device, batch, root)
    log.info("this machine has no %s/%s latency table for %s at %s: profiling it first (about a minute on one core)",
             runtime, device, space, path)
    method = MeasureMethod(batch=batch, **PROFILE_DEFAULTS)
    table = profile_space(space, template, runtime, device, method, path, resume=True, fit_samples=DEFAULT_FIT_SAMPLES)
    return Path(table.path)


# ---------------------------------------------------------------- header checks


def runtime_versions(table: LatencyTable) -> dict[str, str]:
    """The versions of the table's runtime installed here (what its backend would record now)."""
    from nasdeploy.hardware import get_backend
    from nasdeploy.latency.profiler import stored_method

    return get_backend(table.runtime, table.device, stored_method(table)).versions()


def version_mismatches(stored: dict[str, str], current: dict[str, str]) -> list[str]:
    """Runtime versions (torch, onnxruntime, onnx, tensorrt, cuda, providers...) that differ from the table's."""
    return [f"{name} {current.get(name, 'absent')} here, {stored.get(name, 'not recorded')} in the table"
            for name in sorted(set(stored) | set(current)) if stored.get(name) != current.get(name)]


def table_mismatches(table: LatencyTable, versions: dict[str, str] | None = None, threads: int | None = None) -> list[str]:
    """Everything that makes ``table`` a table from another machine or setup; [] when it was made here, as now."""
    table_threads = table.method.get("threads") or table.fingerprint.get("threads")
    found = machine_mismatches(table.fingerprint, fingerprint(table.device, table_threads))
    if versions is not None:
        found += version_mismatches(table.versions, versions)
    if threads is not None and table_threads is not None and int(threads) != int(table_threads):
        found.append(f"threads {threads} in this run, {table_threads} in the table")
    return found


# ---------------------------------------------------------------- the spot check


def table_sha256(table: LatencyTable) -> str:
    """Hash of the table's content (its path excluded): a copy in a run folder shares its original's spot check."""
    return hashlib.sha256(json.dumps(table.to_json(), sort_keys=True).encode()).hexdigest()


def cache_dir() -> Path:
    """``$NASDEPLOY_CACHE_DIR``, else ``$XDG_CACHE_HOME/nasdeploy``, else ``~/.cache/nasdeploy``."""
    if os.environ.get("NASDEPLOY_CACHE_DIR"):
        return Path(os.environ["NASDEPLOY_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nasdeploy"


def cache_path(sha: str, nets: int, versions: dict[str, str], threads: Any) -> Path:
    """One file per table content, machine boot, installed runtime versions and thread count."""
    setup = hashlib.sha1(json.dumps([versions, threads], sort_keys=True).encode()).hexdigest()[:8]
    return cache_dir() / "spot-checks" / f"{sha[:20]}-{boot_id()[:8]}-{setup}-n{nets}.json"


def spot_check_seeds(nets: int) -> list[int]:
    return list(range(SPOT_SEED, SPOT_SEED + nets))


def spot_check(table: LatencyTable | Path | str, policy: TablePolicy = TablePolicy()) -> dict[str, Any]:
    """Measure ``policy.nets`` sampled networks on the table's backend and method and compare with its predictions.

    Returns the result dict (``summary`` is the one line reports carry). Raises NasDeployError naming
    the fixes when the median absolute error exceeds ``policy.tolerance``, unless ``policy.recalibrate``
    (the overhead model is refitted here and saved into the table) or ``policy.trust``. With ``trust`` a
    result cached this boot is reported and nothing is measured. A table whose runtime or device this
    machine lacks cannot be checked: NasDeployError suggesting ``--trust-table``, unless trusted.
    """
    table = table if isinstance(table, LatencyTable) else load_table(table)
    where = table.path or "(in memory)"
    try:
        versions = runtime_versions(table)
    except NasDeployError as exc:
        if policy.trust:
            return unmeasured(table, policy, f"spot check: not run ({table.runtime} on {table.device} is not available here; --trust-table)")
        raise NasDeployError(f"cannot spot-check latency table {where} on this machine ({exc}); "
                             "run on the machine it was profiled on, or pass --trust-table to use it unchecked") from None
    mismatches = table_mismatches(table, versions, policy.threads)
    if mismatches:
        log.warning("latency table %s was made on another machine or setup: %s", where, "; ".join(mismatches))
    sha = table_sha256(table)
    cached_file = cache_path(sha, policy.nets, versions, table.method.get("threads"))
    measured = read_cached(cached_file)
    cached = measured is not None
    if cached and not passes(measured, policy) and not policy.trust:
        log.info("the spot check cached this boot failed; measuring it again")
        measured, cached = None, False
    if measured is None and policy.trust:
        return unmeasured(table, policy, "spot check: not run (--trust-table)", mismatches)
    if measured is None:
        measured = measure_spot_check(table, policy.nets)
        write_cache(cached_file, measured)
    result = decide(table, measured, policy, mismatches, cached)
    if not result["passed"] and policy.recalibrate:
        result = recalibrate(table, measured, policy, mismatches)
    if not result["passed"] and not policy.trust:
        raise NasDeployError(refusal(table, result, policy))
    if not result["passed"]:
        log.warning("%s: above the %.0f %% tolerance, used anyway (--trust-table)", result["summary"], 100 * policy.tolerance)
    else:
        log.info("%s%s (table %s)", result["summary"], ", cached this boot" if cached else f" in {result['seconds']:.1f} s", where)
    return result


def write_cache(path: Path, measured: dict[str, Any]) -> None:
    """Keep a spot check for this boot; a cache folder that cannot be written only costs a re-measurement later."""
    try:
        atomic_write_json(path, measured)
    except OSError as exc:
        log.warning("spot check not cached (%s); set NASDEPLOY_CACHE_DIR to a writable folder", exc)


def read_cached(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and "errors_pct" in found else None


def measure_spot_check(table: LatencyTable, nets: int, seeds: list[int] | None = None) -> dict[str, Any]:
    """Predicted and measured latency of the spot-check networks (the table's backend, method and rounds)."""
    from nasdeploy.hardware import get_backend
    from nasdeploy.latency.predictor import predict_latency_ms
    from nasdeploy.latency.profiler import measure_networks, network_input_shape, stored_method
    from nasdeploy.spaces.base import get_space

    started = time.perf_counter()
    space = get_space(table.space)
    template = space.template_from_dict(table.template)
    backend = get_backend(table.runtime, table.device, stored_method(table))
    shape = network_input_shape(template, table.batch)
    seeds = seeds or spot_check_seeds(nets)
    archs = [space.sample(template, random.Random(seed)) for seed in seeds]
    records = [{"seed": seed, "arch": space.arch_to_json(arch)} for seed, arch in zip(seeds, archs)]
    records = measure_networks(backend, [lambda arch=arch: space.build(arch, template) for arch in archs], shape, records,
                               f"spot check {table.runtime} {table.device}")
    predicted = [predict_latency_ms(table, arch, space, template) for arch in archs]
    measured = [r["median_ms"] for r in records]
    return {
        "seeds": seeds, "predicted_ms": predicted, "measured_ms": measured,
        "errors_pct": [100.0 * (p - m) / m for p, m in zip(predicted, measured)],
        "samples": [{"seed": r["seed"], "arch": r["arch"], "median_ms": r["median_ms"], "rounds": r["rounds"]} for r in records],
        "seconds": time.perf_counter() - started, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "boot_id": boot_id(), "fingerprint_id": fingerprint_id(fingerprint(table.device, table.method.get("threads"))),
        "method": dict(table.method), "versions": runtime_versions(table), "load_average": load_average(),
    }


def load_average() -> float | None:
    """The 1-minute load average while measuring: above the core count, other processes slowed the networks."""
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return None


def busy_note(measured: dict[str, Any]) -> str:
    load, cores = measured.get("load_average"), os.cpu_count() or 1
    if load is None or load <= cores:
        return ""
    return (f" (this machine was busy while measuring: load {load:.1f} on {cores} cores, which slows networks by several %; "
            "spot-check again when it is idle)")


def passes(measured: dict[str, Any], policy: TablePolicy) -> bool:
    return median_abs(measured["errors_pct"]) <= 100.0 * policy.tolerance


def median_abs(errors_pct: list[float]) -> float:
    return float(statistics.median(abs(e) for e in errors_pct))


def decide(table: LatencyTable, measured: dict[str, Any], policy: TablePolicy, mismatches: list[str], cached: bool) -> dict[str, Any]:
    """The result dict reports carry, from a measurement (fresh or cached) and the policy."""
    errors = measured["errors_pct"]
    passed = passes(measured, policy)
    summary = f"spot check: {len(errors)} nets, median |err| {median_abs(errors):.1f} %"
    if not passed and policy.trust:
        summary += f" (above {100 * policy.tolerance:.0f} %; used anyway: --trust-table)"
    return {
        **{k: v for k, v in measured.items() if k != "samples"},
        "table": str(table.path) if table.path else None, "table_sha256": table_sha256(table),
        "runtime": table.runtime, "device": table.device, "nets": len(errors),
        "median_abs_err_pct": median_abs(errors), "median_err_pct": float(statistics.median(errors)),
        "max_abs_err_pct": float(max(abs(e) for e in errors)), "tolerance_pct": 100.0 * policy.tolerance,
        "passed": passed, "cached": cached, "machine_match": not mismatches, "mismatches": mismatches,
        "recalibrated": False, "trusted_override": bool(policy.trust and not passed), "summary": summary,
    }


def unmeasured(table: LatencyTable, policy: TablePolicy, summary: str, mismatches: list[str] | None = None) -> dict[str, Any]:
    log.warning("latency table %s used without a spot check (--trust-table)", table.path or "(in memory)")
    return {
        "table": str(table.path) if table.path else None, "table_sha256": table_sha256(table), "runtime": table.runtime,
        "device": table.device, "nets": 0, "median_abs_err_pct": None, "seconds": 0.0, "cached": False, "passed": None,
        "tolerance_pct": 100.0 * policy.tolerance, "machine_match": not mismatches if mismatches is not None else None,
        "mismatches": mismatches or [], "recalibrated": False, "trusted_override": True, "summary": summary,
    }


def refusal(table: LatencyTable, result: dict[str, Any], policy: TablePolicy) -> str:
    """The one-line error for a table whose spot check failed: what was measured, why, and the three fixes."""
    why = f" (made on another machine or setup: {'; '.join(result['mismatches'])})" if result["mismatches"] else ""
    command = profile_command(table, table.path).replace(" --out ", " --no-resume --out ") if table.path else profile_command(table)
    if not table.path:
        command += " --no-resume"
    return (f"latency table {table.path or '(in memory)'} does not predict this machine: {result['summary']} "
            f"(signed {result['median_err_pct']:+.1f} %) > {100 * policy.tolerance:.0f} % tolerance{why}{busy_note(result)}; "
            f"re-profile it with '{command}', or pass --recalibrate to refit its overhead model here, "
            f"or --trust-table to use it anyway")


# ---------------------------------------------------------------- --recalibrate


def recalibrate(table: LatencyTable, measured: dict[str, Any], policy: TablePolicy, mismatches: list[str]) -> dict[str, Any]:
    """Refit the table's overhead model on the spot-check networks plus more, measured here; save it with a note.

    The op entries stay as they were measured; the overhead model (which maps their sum to a network's
    latency) is refitted on ``RECALIBRATE_NETS`` networks timed on this machine, so a table from a
    similar machine, or one profiled under load, predicts here again. The note under
    ``overhead["calibrations"]`` says when, on which machine and setup, and how large the error was.
    """
    from nasdeploy.latency.profiler import fit_table_overhead

    before = decide(table, measured, policy, mismatches, cached=False)
    extra = max(RECALIBRATE_NETS - len(measured["seeds"]), 0)
    log.info("%s: recalibrating the overhead model of %s on %d networks measured here", before["summary"],
             table.path or "(in memory)", len(measured["seeds"]) + extra)
    more = measure_spot_check(table, extra, list(range(RECALIBRATE_SEED, RECALIBRATE_SEED + extra))) if extra else None
    samples = measured["samples"] + (more["samples"] if more else [])
    previous = table.overhead or {}
    note = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "where": fingerprint_id(fingerprint(table.device, table.method.get("threads"))),
        "fingerprint": fingerprint(table.device, table.method.get("threads")), "versions": measured["versions"],
        "boot_id": boot_id(), "networks": len(samples), "mismatches": mismatches,
        "spot_check_before": before["summary"], "previous_coef": previous.get("coef"),
    }
    fit_table_overhead(table, samples, keep_corrections=True)
    table.overhead["calibrations"] = list(previous.get("calibrations", [])) + [note]
    if table.path:
        save_table(table, table.path)
    rechecked = refreshed_predictions(table, measured)
    result = decide(table, rechecked, policy, mismatches, cached=False)
    note["spot_check_after"] = result["summary"]
    if table.path:
        save_table(table, table.path)
    write_cache(cache_path(table_sha256(table), policy.nets, measured["versions"], table.method.get("threads")), rechecked)
    result.update(recalibrated=True, before=before["summary"], recalibration=note,
                  seconds=measured["seconds"] + (more["seconds"] if more else 0.0),
                  summary=f"{before['summary']} -> {result['median_abs_err_pct']:.1f} % after --recalibrate on {len(samples)} nets")
    log.info("%s; saved into %s", result["summary"], table.path or "(in memory)")
    return result


def refreshed_predictions(table: LatencyTable, measured: dict[str, Any]) -> dict[str, Any]:
    """``measured`` with predictions (and errors) recomputed from ``table`` as it is now."""
    from nasdeploy.latency.predictor import predict_latency_ms
    from nasdeploy.spaces.base import get_space

    space = get_space(table.space)
    template = space.template_from_dict(table.template)
    predicted = [predict_latency_ms(table, space.arch_from_json(s["arch"]), space, template) for s in measured["samples"]]
    errors = [100.0 * (p - m) / m for p, m in zip(predicted, measured["measured_ms"])]
    return {**measured, "predicted_ms": predicted, "errors_pct": errors}
