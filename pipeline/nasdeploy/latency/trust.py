"""Whether a latency table can be trusted here: its header against this machine, then a drift-aware spot check.

A table is reused by ``search``, ``run``, ``export`` (its prediction), ``measure arch.json`` and ``validate-lut``,
and a machine's overall speed moves: a shared VM runs the same network 5-15 % slower or faster from one
minute to the next, while which op costs what (the table's *shape*) stays. So every use measures two things
on the table's own backend and method, interleaved in rounds as profiling is:

* **drift** — a few of the table's own fit networks (its *reference networks*, measured when it was profiled)
  timed again: their median ratio of now over the table's prediction for them is the machine's current speed
  relative to the table (:func:`drift_ratio` says why not now over their time at profiling). Every
  prediction made with the table afterwards is scaled by it (``LatencyTable.speed_ratio``), and reports say
  so ("drift +9.1 %, predictions scaled by 1.091"). Measured afresh at every use (seconds).
* **shape** — ``policy.nets`` sampled networks (seeds 20000..) predicted and measured; the *drift-corrected*
  error is what is judged: above the tolerance (median |err|, 10 % by default) the table predicts the wrong
  networks as cheap or dear (another machine, other runtime versions, a corrupt or doctored table) and the
  command stops with one line naming the fixes: re-profile (the exact command), ``--recalibrate`` (refit its
  overhead model here) or ``--trust-table``. The shape check is cached per table content and machine boot.

Pure drift is never a reason to refuse or re-profile. A table profiled on this machine during this boot is never
refused either (its entries are this machine's own measurements, so a miss is noise or model error): it is
reported and counted. The header is compared too (:func:`table_mismatches`): another CPU, cache sizes, ISA
flags, kernel, runtime versions or thread count make a table "from another machine", logged and recorded.
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
from nasdeploy.progress import SHOW_NOW
from nasdeploy.latency.table import (LatencyTable, cache_dir, default_table_path, load_table, profile_command, profiled_here as
                                     content_profiled_here, save_table, table_sha256)
from nasdeploy.latency.versions import version_mismatches  # noqa: F401  (re-exported: trust.version_mismatches)
from nasdeploy.latency.rounds import STATISTIC_TEXT, rounds_taken

log = logging.getLogger(__name__)

# Spot-check networks come from their own seeds, apart from validation's (0..) and the fit networks' (10000..).
SPOT_SEED = 20_000
# --recalibrate refits the overhead model on the spot-check networks plus networks from these seeds.
RECALIBRATE_SEED = 30_000
RECALIBRATE_NETS = 16
# Networks per check. Shape: 8 sampled networks, their drift-corrected median |err| judged. Drift: 5 of the table's
# own fit networks, spread over its latency range; their median ratio of now over the table's prediction.
SPOT_NETS = 8
ANCHOR_NETS = 5
# Above this |drift| the log says the machine runs at another speed than when profiled (predictions still scaled).
LARGE_DRIFT = 0.20


@dataclass
class TablePolicy:
    """How a command treats a reused latency table (``--spot-check-tolerance``, ``--recalibrate``, ``--trust-table``)."""

    tolerance: float = 0.10  # drift-corrected median |err| above which the table is refused (a fraction)
    recalibrate: bool = False  # refit the overhead model here on the spot-check nets (+ more) and save it into the table
    trust: bool = False  # use the table whatever its spot check says; a cached result is reported, nothing is measured
    nets: int = SPOT_NETS  # sampled networks measured by the shape check
    anchors: int = ANCHOR_NETS  # the table's reference networks re-measured for the drift, at every use
    threads: int | None = None  # the thread count the caller deploys with; a table timed with another is refused

    def __post_init__(self) -> None:
        if not 0 < self.tolerance < 10 or self.nets < 1 or self.anchors < 0:
            raise NasDeployError(f"spot-check tolerance must be a fraction in (0, 10) and nets >= 1, got {self.tolerance} "
                                 f"and {self.nets}; e.g. --spot-check-tolerance 10 (per cent)")


# ---------------------------------------------------------------- finding this machine's table


def resolve_template(space: str, template: Any) -> Any:
    """``template`` or, when None, the space's cpu-preset default template."""
    from nasdeploy.spaces.base import get_space

    return get_space(space).default_template("cpu") if template is None else template


def find_table(space: str, template: Any, runtime: str, device: str, batch: int = 1, root: Path | None = None) -> Path | None:
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


def table_for_search(space: str, template: Any, runtime: str, device: str, root: Path | None = None, batch: int = 1) -> Path:
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
             runtime, device, space, path, extra=SHOW_NOW)  # shown before the minutes of profiling, not after
    method = MeasureMethod(batch=batch, **PROFILE_DEFAULTS)
    table = profile_space(space, template, runtime, device, method, path, resume=True, fit_samples=DEFAULT_FIT_SAMPLES)
    return Path(table.path)


# ---------------------------------------------------------------- header checks


def runtime_versions(table: LatencyTable) -> dict[str, str]:
    """The versions of the table's runtime installed here (what its backend would record now)."""
    from nasdeploy.hardware import get_backend
    from nasdeploy.latency.profiler import stored_method

    return get_backend(table.runtime, table.device, stored_method(table)).versions()


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


def cache_path(sha: str, nets: int, versions: dict[str, str], threads: Any) -> Path:
    """One file per table content, machine boot, installed runtime versions and thread count."""
    setup = hashlib.sha1(json.dumps([versions, threads], sort_keys=True).encode()).hexdigest()[:8]
    return cache_dir() / "spot-checks" / f"{sha[:20]}-{boot_id()[:8]}-{setup}-n{nets}.json"


def spot_check_seeds(nets: int) -> list[int]:
    return list(range(SPOT_SEED, SPOT_SEED + nets))


def reference_networks(table: LatencyTable, count: int = ANCHOR_NETS) -> list[dict]:
    """``count`` of the table's fit networks measured at profiling time, spread evenly over their latency range."""
    samples = sorted((s for s in (table.overhead or {}).get("samples", []) if "median_ms" in s), key=lambda s: s["median_ms"])
    if count <= 0 or not samples:
        return []
    if len(samples) <= count:
        return samples
    return [samples[round(i * (len(samples) - 1) / max(count - 1, 1))] for i in range(count)]


def anchor_records(table: LatencyTable, count: int = ANCHOR_NETS) -> list[dict]:
    """The reference networks as records to time again: each with the table's own prediction for it (unscaled),
    which the drift is measured against, and its measurement at profiling time (reported)."""
    from nasdeploy.latency.predictor import predict_latency_ms

    space, template = table_space(table)
    return [{"seed": r["seed"], "arch": r["arch"], "profiled_ms": r["median_ms"],
             "predicted_ms": predict_latency_ms(table, space.arch_from_json(r["arch"]), space, template, scaled=False)}
            for r in reference_networks(table, count)]


def drift_ratio(anchors: list[dict]) -> float | None:
    """The machine's speed now relative to the table's: median over reference networks of their time now over the
    table's prediction for them, the factor every prediction is then scaled by.

    Not now over their own time at profiling: that time carries the overhead model's residual on that fit network
    (on a 2-core EPYC VM 0.94-1.08x its prediction for the five references), which the median passed on to every
    prediction: the references read -6.3 % where 100 random networks measured 2.3 % below their predictions, and
    the drift-corrected ±5 % share fell from 89 % to 65 % (97 % with this ratio, on the same measurements).
    """
    ratios = [a["median_ms"] / a["predicted_ms"] for a in anchors if a.get("predicted_ms")]
    return float(statistics.median(ratios)) if ratios else None


def rounds_text(rule: dict[str, Any] | None) -> str:
    """What the summary says when the check took more rounds than the table's method asks for (latency.rounds)."""
    if not rule or rule.get("steady", True):
        return ""
    return (f"; unsteady machine: {rule['rounds']} rounds, {STATISTIC_TEXT.get(rule['statistic'], rule['statistic'])} "
            f"({100 * rule['slow_share']:.0f} % of rounds landed slow)")


def drift_text(ratio: float | None) -> str:
    if ratio is None:
        return "drift not measured (the table has no reference networks), predictions unscaled"
    return f"drift {100 * (ratio - 1):+.1f} %, predictions scaled by {ratio:.3f}"


def apply_drift(table: LatencyTable, result: dict[str, Any] | None) -> LatencyTable:
    """Scale every later prediction from ``table`` by the drift its spot check measured (1 when none was)."""
    table.speed_ratio = float((result or {}).get("drift_ratio") or 1.0)
    return table


def spot_check(table: LatencyTable | Path | str, policy: TablePolicy = TablePolicy()) -> dict[str, Any]:
    """Measure the machine's drift against ``table`` and check its shape; scale the table's predictions by the drift.

    Returns the result dict (``summary`` is the one line reports carry) and sets ``table.speed_ratio`` when
    ``table`` is a LatencyTable. Raises NasDeployError naming the fixes when the drift-corrected median absolute
    error of the shape check exceeds ``policy.tolerance``, unless ``policy.recalibrate`` (the overhead model is
    refitted here and saved into the table), ``policy.trust``, or the table was profiled on this machine during
    this boot. With ``trust`` a result cached this boot is reported and nothing is measured. A table whose runtime
    or device this machine lacks cannot be checked: NasDeployError suggesting ``--trust-table``, unless trusted.
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
    cached_file = cache_path(table_sha256(table), policy.nets, versions, table.method.get("threads"))
    measured = read_cached(cached_file)
    cached = measured is not None
    if cached and not passes(measured, policy) and not policy.trust and not profiled_here(table, mismatches):
        log.info("the spot check cached this boot failed; measuring it again")
        measured, cached = None, False
    if measured is None and policy.trust:
        return unmeasured(table, policy, "spot check: not run (--trust-table)", mismatches)
    if measured is None:
        measured = measure_spot_check(table, policy.nets, anchors=policy.anchors)
        write_cache(cached_file, measured)
    elif not policy.trust:
        measured = {**measured, **measure_drift(table, policy.anchors)}  # the shape is cached, the speed is measured now
    result = decide(table, measured, policy, mismatches, cached)
    if not result["passed"] and policy.recalibrate:
        result = recalibrate(table, measured, policy, mismatches)
    apply_drift(table, result)
    if not result["passed"] and result["own_table"]:
        log.warning("%s: above the %.0f %% tolerance, but the table was profiled on this machine during this boot, so it "
                    "is used (a miss here is noise or model error, not another machine)", result["summary"], 100 * policy.tolerance)
    elif not result["passed"] and not policy.trust:
        raise NasDeployError(refusal(table, result, policy))
    elif not result["passed"]:
        log.warning("%s: above the %.0f %% tolerance, used anyway (--trust-table)", result["summary"], 100 * policy.tolerance)
    else:
        log.info("%s%s (table %s)", result["summary"], ", shape cached this boot" if cached else f" in {result['seconds']:.1f} s", where)
    if result.get("drift_ratio") and abs(result["drift_ratio"] - 1) > LARGE_DRIFT:
        log.warning("this machine runs %+.0f %% against latency table %s (another machine of the same shape, or a busy one); "
                    "its predictions are scaled accordingly", 100 * (result["drift_ratio"] - 1), where)
    return result


def profiled_here(table: LatencyTable, mismatches: list[str]) -> bool:
    """Whether ``table``'s exact content was profiled on this machine, as set up now, during this boot."""
    return not mismatches and content_profiled_here(table)


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
    return found if isinstance(found, dict) and "corrected_errors_pct" in found else None


def measure_spot_check(table: LatencyTable, nets: int, seeds: list[int] | None = None, anchors: int = ANCHOR_NETS) -> dict[str, Any]:
    """Predicted and measured latency of the spot-check networks, interleaved in rounds with the table's reference
    networks (the table's backend, method and rounds); errors raw and corrected for the drift the references show."""
    from nasdeploy.latency.predictor import predict_latency_ms

    started = time.perf_counter()
    space, template = table_space(table)
    seeds = seeds or spot_check_seeds(nets)
    archs = [space.sample(template, random.Random(seed)) for seed in seeds]
    records = [{"seed": seed, "arch": space.arch_to_json(arch)} for seed, arch in zip(seeds, archs)]
    records += anchor_records(table, anchors)
    records = measure_records(table, records, f"spot check {table.runtime} {table.device}")
    checked, anchored = records[:len(seeds)], records[len(seeds):]
    ratio = drift_ratio(anchored)
    predicted = [predict_latency_ms(table, arch, space, template, scaled=False) for arch in archs]
    measured = [r["median_ms"] for r in checked]
    return {
        "seeds": seeds, "predicted_ms": predicted, "measured_ms": measured,
        "errors_pct": errors_pct(predicted, measured),
        "corrected_errors_pct": errors_pct([p * (ratio or 1.0) for p in predicted], measured),
        "shape_drift_ratio": ratio, **drift_fields(anchored, ratio),
        "rounds_rule": rounds_taken(records, table.method.get("rounds", 1), table.method.get("max_rounds")),
        "samples": [{"seed": r["seed"], "arch": r["arch"], "median_ms": r["median_ms"], "rounds": r["rounds"]} for r in checked],
        "seconds": time.perf_counter() - started, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "boot_id": boot_id(), "fingerprint_id": fingerprint_id(fingerprint(table.device, table.method.get("threads"))),
        "method": dict(table.method), "versions": runtime_versions(table), "load_average": load_average(),
    }


def measure_drift(table: LatencyTable, anchors: int = ANCHOR_NETS) -> dict[str, Any]:
    """The table's reference networks timed again now: the drift fields of a spot check, measured afresh."""
    started = time.perf_counter()
    records = anchor_records(table, anchors)
    if not records:
        return drift_fields([], None)
    records = measure_records(table, records, f"drift {table.runtime} {table.device}")
    return {**drift_fields(records, drift_ratio(records)), "drift_seconds": time.perf_counter() - started}


def drift_fields(anchored: list[dict], ratio: float | None) -> dict[str, Any]:
    return {"drift_ratio": ratio, "anchors": [{"seed": r["seed"], "predicted_ms": r["predicted_ms"], "then_ms": r["profiled_ms"],
                                          "now_ms": r["median_ms"]} for r in anchored],
            "drift_measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def table_space(table: LatencyTable):
    from nasdeploy.spaces.base import get_space

    space = get_space(table.space)
    return space, space.template_from_dict(table.template)


def measure_records(table: LatencyTable, records: list[dict], label: str) -> list[dict]:
    """Each record's ``arch`` built on the table's template and timed on its backend and method (rounds interleaved)."""
    from nasdeploy.hardware import get_backend
    from nasdeploy.latency.profiler import measure_networks, network_input_shape, reference_for, stored_method

    space, template = table_space(table)
    backend = get_backend(table.runtime, table.device, stored_method(table))
    networks = [lambda arch=space.arch_from_json(r["arch"]): space.build(arch, template) for r in records]
    return measure_networks(backend, networks, network_input_shape(template, table.batch), records, label,
                            reference_for(backend, space, template, table.batch))


def errors_pct(predicted: list[float], measured: list[float]) -> list[float]:
    return [100.0 * (p - m) / m for p, m in zip(predicted, measured)]


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
    """The decision rule: the drift-corrected median |err| of the shape check within the tolerance."""
    return median_abs(measured["corrected_errors_pct"]) <= 100.0 * policy.tolerance


def median_abs(errors_pct: list[float]) -> float:
    return float(statistics.median(abs(e) for e in errors_pct))


def decide(table: LatencyTable, measured: dict[str, Any], policy: TablePolicy, mismatches: list[str], cached: bool) -> dict[str, Any]:
    """The result dict reports carry, from a measurement (fresh or cached) and the policy."""
    corrected, raw = measured["corrected_errors_pct"], measured["errors_pct"]
    passed = passes(measured, policy)
    own = profiled_here(table, mismatches)
    summary = (f"spot check: {len(corrected)} nets, median |err| {median_abs(corrected):.1f} % after drift "
               f"({median_abs(raw):.1f} % raw); {drift_text(measured.get('drift_ratio'))}{rounds_text(measured.get('rounds_rule'))}")
    if not passed and policy.trust:
        summary += f" (above {100 * policy.tolerance:.0f} %; used anyway: --trust-table)"
    elif not passed and own:
        summary += f" (above {100 * policy.tolerance:.0f} %; used: profiled here this boot)"
    return {
        **{k: v for k, v in measured.items() if k != "samples"},
        "table": str(table.path) if table.path else None, "table_sha256": table_sha256(table),
        "runtime": table.runtime, "device": table.device, "nets": len(corrected),
        "median_abs_err_pct": median_abs(corrected), "median_err_pct": float(statistics.median(corrected)),
        "max_abs_err_pct": float(max(abs(e) for e in corrected)), "raw_median_abs_err_pct": median_abs(raw),
        "raw_median_err_pct": float(statistics.median(raw)), "tolerance_pct": 100.0 * policy.tolerance,
        "passed": passed, "cached": cached, "machine_match": not mismatches, "mismatches": mismatches, "own_table": own,
        "recalibrated": False, "trusted_override": bool(policy.trust and not passed), "summary": summary,
    }


def unmeasured(table: LatencyTable, policy: TablePolicy, summary: str, mismatches: list[str] | None = None) -> dict[str, Any]:
    log.warning("latency table %s used without a spot check (--trust-table): its predictions are not drift-corrected",
                table.path or "(in memory)")
    apply_drift(table, None)
    return {
        "table": str(table.path) if table.path else None, "table_sha256": table_sha256(table), "runtime": table.runtime,
        "device": table.device, "nets": 0, "median_abs_err_pct": None, "seconds": 0.0, "cached": False, "passed": None,
        "tolerance_pct": 100.0 * policy.tolerance, "machine_match": not mismatches if mismatches is not None else None,
        "mismatches": mismatches or [], "recalibrated": False, "trusted_override": True, "drift_ratio": None,
        "own_table": False, "summary": summary,
    }


def refusal(table: LatencyTable, result: dict[str, Any], policy: TablePolicy) -> str:
    """The one-line error for a table whose shape check failed: what was measured, why, and the three fixes."""
    why = f" (made on another machine or setup: {'; '.join(result['mismatches'])})" if result["mismatches"] else ""
    command = profile_command(table, table.path).replace(" --out ", " --no-resume --out ") if table.path else profile_command(table)
    if not table.path:
        command += " --no-resume"
    return (f"latency table {table.path or '(in memory)'} does not predict this machine: {result['summary']} "
            f"(signed {result['median_err_pct']:+.1f} % after drift) > {100 * policy.tolerance:.0f} % tolerance{why}{busy_note(result)}; "
            f"re-profile it with '{command}', or pass --recalibrate to refit its overhead model here, "
            f"or --trust-table to use it anyway")


# ---------------------------------------------------------------- --recalibrate


def recalibrate(table: LatencyTable, measured: dict[str, Any], policy: TablePolicy, mismatches: list[str]) -> dict[str, Any]:
    """Refit the table's overhead model on the spot-check networks plus more, all timed here in one sitting; save it with a note.

    The op entries stay as they were measured; the overhead model (which maps their sum to a network's
    latency) is refitted on ``RECALIBRATE_NETS`` networks timed on this machine, so a table from a
    similar machine, or one profiled under load, predicts here again. The note under
    ``overhead["calibrations"]`` says when, on which machine and setup, and how large the error was.
    """
    from nasdeploy.latency.profiler import fit_table_overhead

    before = decide(table, measured, policy, mismatches, cached=False)
    spot = len(measured["seeds"])
    extra = max(RECALIBRATE_NETS - spot, 0)
    log.info("%s: recalibrating the overhead model of %s on %d networks measured here", before["summary"],
             table.path or "(in memory)", spot + extra)
    # the spot-check networks are timed again with the extra ones, interleaved: networks from two sittings minutes
    # apart can differ by the machine's drift (5-25 % on a shared VM), which one fit cannot serve both ways
    seeds = list(measured["seeds"]) + list(range(RECALIBRATE_SEED, RECALIBRATE_SEED + extra))
    fresh = measure_spot_check(table, len(seeds), seeds, anchors=0)
    samples = fresh["samples"]
    measured = {**measured, "measured_ms": fresh["measured_ms"][:spot], "samples": samples[:spot],
                "rounds_rule": fresh["rounds_rule"], "seconds": measured["seconds"] + fresh["seconds"]}
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
                  seconds=measured["seconds"],
                  summary=f"{before['summary']} -> {result['median_abs_err_pct']:.1f} % after --recalibrate on {len(samples)} nets")
    log.info("%s; saved into %s", result["summary"], table.path or "(in memory)")
    return result


def refreshed_predictions(table: LatencyTable, measured: dict[str, Any]) -> dict[str, Any]:
    """``measured`` with predictions (and errors) recomputed from ``table`` as it is now. After ``--recalibrate`` the
    table's overhead model was fitted on networks measured now, so there is no drift to correct: the ratio is 1."""
    from nasdeploy.latency.predictor import predict_latency_ms

    space, template = table_space(table)
    predicted = [predict_latency_ms(table, space.arch_from_json(s["arch"]), space, template, scaled=False) for s in measured["samples"]]
    errors = errors_pct(predicted, measured["measured_ms"])
    return {**measured, "predicted_ms": predicted, "errors_pct": errors, "corrected_errors_pct": errors, "drift_ratio": 1.0}
