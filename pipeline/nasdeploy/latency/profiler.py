"""Fill a latency table: every op instance of a template measured in isolation, then the overhead model.

The run is resumable: the table is saved (atomically) every few entries and after every fit network,
and a re-run skips whatever the file at ``path`` already holds.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from nasdeploy.errors import NasDeployError
from nasdeploy.hardware import Backend, MeasureMethod, Timing, fingerprint, fingerprint_id, get_backend

from nasdeploy.latency.overhead import d_optimal_picks, fit_overhead
from nasdeploy.latency.predictor import sum_and_count
from nasdeploy.latency.rounds import STATISTIC_TEXT, add_round, canonical_reference_ms, normalise, rounds_decision, rounds_done, settle
from nasdeploy.latency.table import (LatencyTable, default_table_path, load_table, mark_profiled_here, profile_command, save_table,
                                     template_dict)
from nasdeploy.progress import progress_bar
from nasdeploy.spaces.base import OpInstance, SearchSpace, get_space
from nasdeploy.spaces.ops import MERGED_WORK_FEATURES

log = logging.getLogger(__name__)

FIT_SEED = 10_000  # fit networks are sampled from their own seeds, apart from validation's (0, 1, ...)

# What a plain `nasdeploy profile` does, and what `search`/`run` do when they profile a missing table,
# so all of them make (and find) the same file.
# The reference-network normalisation (MeasureMethod.reference, latency.rounds.normalise) is opt-in: on the 2-core
# EPYC VM it made tables worse, not better. One table's own measurements, fitted and scored both ways against 100 random
# networks (2026-12-05): normalised, leave-one-out 6.8 % on its fit networks and 93 % within ±10 % after drift (RMSE
# 6.0 %, τ 0.80); the same rounds un-normalised (best raw round), leave-one-out 2.6 % on 40 fit networks and 100 %
# within ±10 % (RMSE 2.2 %, τ 0.88). Rescaling by the reference's own noisy median adds its noise to every item, and
# keeping the best *rescaled* round favours rounds where the reference happened to run slow. With one thread the
# clock is the thread's CPU time, which already ignores other processes; the drift the normalisation aimed at is
# measured at every use instead (latency.trust).
# Three rounds, and up to nine where the first three show the machine often in a slow phase (latency.rounds): on the
# 2-vCPU Xeon VM whose core changes speed for seconds at a time, nine rounds lifted test-retest of 100 networks from 81 %
# to 98 % within ±10 % (after the machine-wide factor); on the idle EPYC VM three rounds already gave 100 %.
PROFILE_DEFAULTS = {"warmup": 5, "repeats": 40, "rounds": 3, "max_rounds": 9, "reference": False}
# 40 networks, D-optimal over the op instances' counts (FitNetworks.choose): enough to learn per-instance corrections
# for the DARTS cpu template's 45 instances with the ridge prior, in ~30 s of ONNX Runtime time on one core.
DEFAULT_FIT_SAMPLES = 40
# When the fitted model still misses its fit networks by more than this (leave-one-out RMSE, %), the profiler measures
# more of them, up to MORE_FIT_SAMPLES in all, to pin the per-instance corrections (``latency.overhead``). The 200 of
# earlier versions made profiling take 8-11 minutes on a 2-core VM; with a D-optimal choice of networks 40 fit the
# DARTS cpu template to 2.6 % (leave-one-out) there, and 80 is the ceiling.
MORE_FIT_LOO_PCT = 6.0
# Next to the D-optimal fit networks, this many drawn uniformly (seeds RANDOM_FIT_SEED..), like the networks predictions
# are made for: the per-op corrections' ridge weight is chosen by the leave-one-out error on them (latency.overhead),
# not on the D-optimal extremes. Only for tables asked with at least DEFAULT_FIT_SAMPLES fit networks.
RANDOM_FIT_SAMPLES = 20
RANDOM_FIT_SEED = FIT_SEED + 50_000
MORE_FIT_SAMPLES = 80
MORE_FIT_SEED = FIT_SEED + 100_000
# A table is saved every this many op entries or fit networks (and at each round's end), so an interrupted profile
# resumes with at most that much work lost: saving after every network took 18 s of a 106 s profile (451 JSON writes).
SAVE_EVERY = 10
CHEAPEST_SEED = -1  # the fit network that is the space's cheapest architecture (not a sampled seed)
REFERENCE_SEED = 90_000  # the reference network timed next to every item (MeasureMethod.reference)


class Reference:
    """A fixed sampled network of the template, prepared once and timed right before every op or network
    (``MeasureMethod.reference``; see ``latency.rounds.normalise``). ``medians`` collects its timings."""

    def __init__(self, backend: Backend, space: SearchSpace, template: Any, batch: int, medians: list[float] | None = None):
        arch = space.sample(template, random.Random(REFERENCE_SEED))
        self.arch = space.arch_to_json(arch)
        self.measure = backend.prepare(space.build(arch, template), network_input_shape(template, batch))
        self.medians: list[float] = list(medians or [])

    def timed(self, item) -> Timing:
        """``item()``'s timing, carrying the reference's median measured just before it."""
        reference_ms = self.measure().median
        self.medians.append(reference_ms)
        timing = item()
        timing.reference_ms = reference_ms
        return timing

    def canonical_ms(self) -> float | None:
        return canonical_reference_ms(self.medians)

    def record(self) -> dict[str, Any]:
        return {"seed": REFERENCE_SEED, "arch": self.arch, "medians": self.medians, "canonical_ms": self.canonical_ms()}


def reference_for(backend: Backend, space: SearchSpace, template: Any, batch: int, medians: list[float] | None = None):
    """A Reference when the backend's method asks for one, else None."""
    return Reference(backend, space, template, batch, medians) if backend.method.reference else None


def timed(prepared, reference: Reference | None):
    return reference.timed(prepared) if reference is not None else prepared()


def op_input_shape(inst: OpInstance, batch: int) -> tuple[int, int, int, int]:
    return (batch, inst.c_in, inst.h, inst.w)


def network_input_shape(template: Any, batch: int) -> tuple[int, int, int, int]:
    size = template.input_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return (batch, template.in_channels, h, w)


def new_table(space: SearchSpace, template: Any, backend: Backend, device: str, method: MeasureMethod) -> LatencyTable:
    return LatencyTable(
        space=space.name, template=template_dict(template), runtime=backend.name, device=device,
        fingerprint=fingerprint(device, method.threads), versions=backend.versions(), method=method.to_dict(),
    )


METHOD_FIELDS = ("warmup", "repeats", "threads", "dtype", "batch", "rounds", "max_rounds", "clock", "reference", "execution")
# what a table made before a field existed was measured with: every torch measurement was eager
LEGACY_METHOD = {"execution": "eager"}


def stored_method(table: LatencyTable) -> MeasureMethod:
    stored = {**LEGACY_METHOD, **table.method}
    return MeasureMethod(**{k: stored[k] for k in METHOD_FIELDS if k in stored})


def open_table(path: Path, space: SearchSpace, template: Any, backend: Backend, device: str, method: MeasureMethod, resume: bool) -> LatencyTable:
    """The table at ``path`` to continue (checked to match), or a fresh one.

    A table made on another machine or setup (the committed reference tables under ``latency_tables/``
    share this machine's folder when the CPU model string is the same) is never continued: its entries
    would mix two machines. It is profiled afresh over, and the log says why.
    """
    from nasdeploy.hardware.fingerprint import machine_mismatches
    from nasdeploy.latency.versions import version_mismatches

    if not (resume and path.exists()):
        return new_table(space, template, backend, device, method)
    table = load_table(path, space.name, template)
    here = fingerprint_id(fingerprint(device, method.threads))
    if (table.runtime, table.device) != (backend.name, device) or fingerprint_id(table.fingerprint) != here:
        raise NasDeployError(
            f"{path} holds {table.runtime} on {table.device} ({fingerprint_id(table.fingerprint)}), not {backend.name} on {device} ({here}); "
            "pass another --out or delete the file"
        )
    other = machine_mismatches(table.fingerprint, fingerprint(device, method.threads)) + version_mismatches(table.versions, backend.versions())
    if other:
        log.warning("not continuing %s, made on another machine or setup (%s): profiling this machine afresh over it "
                    "(a committed reference table stays in git)", path, "; ".join(other))
        return new_table(space, template, backend, device, method)
    stored = stored_method(table)
    if stored.to_dict() != method.to_dict():
        log.warning("continuing %s with its own method %s (asked for %s)", path, stored.to_dict(), method.to_dict())
        method.__dict__.update(stored.to_dict())
    return table


def profile_space(space_name: str, template: Any, runtime: str, device: str, method: MeasureMethod,
                  path: Path | str | None = None, resume: bool = True, *, backend: Backend | None = None,
                  fit_samples: int = DEFAULT_FIT_SAMPLES, save_every: int = SAVE_EVERY, root: Path | str | None = None,
                  more_fit_samples: int | None = None) -> LatencyTable:
    """Measure every ``space.op_instances(template)`` and fit the overhead model; returns the saved table.

    Work proceeds in ``method.rounds`` rounds (see ``latency.rounds``): each round times every op alone,
    then every fit network end to end, so ops and networks see the machine in the same states and each
    keeps its quietest round. The ``fit_samples`` fit networks are chosen after the first round among
    sampled architectures (seeds FIT_SEED..) to spread evenly over the predicted sum of entries, which
    pins the overhead model's slope; their seeds never overlap validation's (0..). When the fitted model
    misses those networks by more than MORE_FIT_LOO_PCT (leave-one-out), more are measured, up to
    ``more_fit_samples`` (default MORE_FIT_SAMPLES when ``fit_samples`` is at least the default, else none:
    a table asked for with few fit networks is a deliberately quick one), so per-instance corrections can
    be learned (``latency.overhead``).
    """
    space = get_space(space_name)
    backend = backend or get_backend(runtime, device, method)
    method = backend.method
    path = Path(path) if path else default_table_path(space_name, template, runtime, device, method.batch, root, method.threads)
    table = open_table(path, space, template, backend, device, method, resume)
    table.path = path
    table.command = profile_command(table, path)
    started = time.perf_counter()
    instances = space.op_instances(template)
    fit = FitNetworks(table, space, template, fit_samples)
    prepared: dict[str, Any] = {}  # op key -> its measurement, set up once for all rounds
    reference = reference_for(backend, space, template, method.batch, (table.reference or {}).get("medians"))
    fit.reference = reference
    with progress_bar() as bar:
        ops_task = bar.add_task(f"ops {table.runtime} {table.device}", total=len(instances) * method.rounds, info="")
        fit_task = bar.add_task("fit networks", total=len(fit.records or range(fit_samples)) * method.rounds, info="")
        done, wanted, decision = 0, method.rounds, None
        while done < wanted:
            measure_entries(table, space, instances, backend, done, save_every, bar, ops_task, prepared, reference)
            fit.measure_round(backend, done, bar, fit_task, save_every)
            done += 1
            if decision is None and done >= method.rounds:  # latency.rounds: steady, or max_rounds rounds and the median
                decision = rounds_decision(list(table.entries.values()) + fit.records, method.rounds, method.max_rounds)
                wanted = max(done, decision["rounds"])
                bar.update(ops_task, total=len(instances) * wanted)
                bar.update(fit_task, total=len(fit.records) * wanted)
    table.rounds_rule = {**decision, "rounds": done}
    log_rounds(table.rounds_rule, f"{len(table.entries)} ops and {len(fit.records)} fit networks")
    table.entries = {key: settle(entry, decision["statistic"]) for key, entry in table.entries.items()}
    fit.settle(decision["statistic"])
    normalise_table(table, fit, reference)
    fit.fit()
    if more_fit_samples is None:
        more_fit_samples = MORE_FIT_SAMPLES if fit_samples >= DEFAULT_FIT_SAMPLES else 0
    if fit.wants_more(more_fit_samples):
        log.info("the overhead model misses its %d fit networks by %.1f %% (leave-one-out): measuring %d more to learn "
                 "per-op corrections", len(fit.records), table.overhead["loo_rmse_pct"], more_fit_samples - len(fit.records))
        fit.add_more(more_fit_samples)
        with progress_bar() as bar:
            more_task = bar.add_task("more fit networks", total=len(fit.records) * done, info="")
            for r in range(done):  # as many rounds as the first fit networks had, settled alike
                fit.measure_round(backend, r, bar, more_task, save_every)
        fit.settle(decision["statistic"])
        normalise_table(table, fit, reference)
        fit.fit()
    save_table(table, path)
    mark_profiled_here(table)
    log.info("latency table %s: %d entries, done in %.1f s", path, len(table.entries), time.perf_counter() - started)
    return table


def log_rounds(decision: dict | None, what: str) -> None:
    if decision and not decision["steady"]:
        log.info("%s: the machine is unsteady (%.0f %% of rounds landed >%.0f %% above their item's best), so %d rounds "
                 "instead of %d and each item's %s instead of its best (latency.rounds)", what,
                 100 * decision["slow_share"], 100 * (decision["slow_ratio"] - 1), decision["rounds"], decision["base_rounds"],
                 STATISTIC_TEXT[decision["statistic"]])


def normalise_table(table: LatencyTable, fit: "FitNetworks", reference: Reference | None) -> None:
    """Every entry and fit network expressed at the reference's quiet state over the whole profile (rounds.normalise)."""
    if reference is None:
        return
    table.reference = reference.record()
    canonical = reference.canonical_ms()
    for key, entry in table.entries.items():
        table.entries[key] = normalise(entry, canonical)
    fit.records = [normalise(record, canonical) for record in fit.records]
    table.overhead = {**(table.overhead or {}), "samples": fit.records}


def measure_entries(table: LatencyTable, space: SearchSpace, instances: list[OpInstance], backend: Backend,
                    r: int, save_every: int, bar, task, prepared: dict[str, Any], reference: Reference | None = None) -> None:
    """Round ``r`` over the op instances: time each one not yet timed ``r + 1`` times. The ones not set up yet are
    all prepared first (``Backend.prepare_all``), so no set-up runs between timed ops."""
    todo = {inst.key(): inst for inst in instances
            if rounds_done(table.entries.get(inst.key())) <= r and inst.key() not in prepared}
    notes = {}  # e.g. ExecuTorch: ops its delegate did not take, per entry prepared now
    if todo:
        bar.update(task, info=f"preparing {len(todo)} ops")
    ready = backend.prepare_all([(lambda inst=inst: space.build_op(inst), op_input_shape(inst, table.batch)) for inst in todo.values()])
    for key, (measure, note) in zip(todo, ready):
        prepared[key], notes[key] = measure, note
    measured = 0
    for inst in instances:
        entry = table.entries.get(inst.key())
        if rounds_done(entry) > r:
            bar.update(task, advance=1)
            continue
        if inst.key() in notes:
            entry = {**(entry or {}), **notes[inst.key()]}
        timing = timed(prepared[inst.key()], reference)
        table.add(inst, add_round(entry, timing))
        measured += 1
        bar.update(task, advance=1, info=f"round {r + 1} {inst.op} {inst.h}x{inst.w} {timing.median:.3f} ms")
        if measured % save_every == 0:
            save_table(table, table.path)
    save_table(table, table.path)


def non_delegated_ops(table: LatencyTable) -> dict[str, list[str]]:
    """Op type -> the table's entries (and ``fit network N``) whose program left it to a slower fallback
    (``Backend.program_notes``)."""
    found: dict[str, list[str]] = {}
    samples = [(f"fit network {i}", s) for i, s in enumerate((table.overhead or {}).get("samples") or [])]
    for key, entry in sorted(table.entries.items()) + samples:
        for op_type in entry.get("non_delegated", {}):
            found.setdefault(op_type, []).append(key)
    return found


class FitNetworks:
    """The sampled networks the overhead model is fitted on, measured round by round (resumably)."""

    def __init__(self, table: LatencyTable, space: SearchSpace, template: Any, count: int):
        self.table, self.space, self.template, self.count = table, space, template, count
        self.records: list[dict] = list((table.overhead or {}).get("samples", []))
        self.prepared: dict[int, Any] = {}  # record index -> its measurement, set up once for all rounds
        self.reference: Reference | None = None

    def choose(self) -> None:
        """Pick ``count`` networks: the space's cheapest one, then a D-optimal design over a pool of 20x as many
        sampled architectures (``overhead.d_optimal_picks``: each op instance's count times its entry as features),
        so that the networks vary every instance's share as independently as possible. Budgeted searches end well
        below random networks (a tight budget's genotype is mostly skips and pools); without the cheapest network
        the overhead model would extrapolate there."""
        if self.records or self.count <= 0:
            return
        from nasdeploy.latency.predictor import cheapest_architecture

        cheapest = cheapest_architecture(self.table, self.space.name, self.template)
        pool = [(CHEAPEST_SEED, cheapest)] + [(seed, self.space.sample(self.template, random.Random(seed)))
                                             for seed in range(FIT_SEED, FIT_SEED + 20 * self.count)]
        picks = d_optimal_picks(self.design([arch for _, arch in pool]), self.count, start=[0])
        self.records = [{"seed": pool[i][0], "arch": self.space.arch_to_json(pool[i][1])} for i in picks]
        drawn = RANDOM_FIT_SAMPLES if self.count >= DEFAULT_FIT_SAMPLES else 0
        self.records += random_records(self.space, self.template, range(RANDOM_FIT_SEED, RANDOM_FIT_SEED + drawn))

    def design(self, archs: list) -> "np.ndarray":
        """One row per architecture: 1, then each op instance's count times its entry (ms)."""
        from collections import Counter

        rows = [Counter(i.key() for i in self.space.arch_op_instances(arch, self.template)) for arch in archs]
        keys = sorted({k for row in rows for k in row if k in self.table.entries})
        entry = np.array([self.table.entries[k]["median_ms"] for k in keys])
        counts = np.array([[row.get(k, 0) for k in keys] for row in rows], dtype=float)
        return np.column_stack([np.ones(len(rows)), counts * entry])

    def measure_round(self, backend: Backend, r: int, bar, task, save_every: int = SAVE_EVERY) -> None:
        """Round ``r`` over the fit networks; the table is saved every ``save_every`` networks and at the round's end."""
        self.choose()
        shape = network_input_shape(self.template, self.table.batch)
        todo = [i for i, record in enumerate(self.records) if rounds_done(record) <= r and i not in self.prepared]
        if todo:
            bar.update(task, info=f"preparing {len(todo)} networks")
        build = lambda i: self.space.build(self.space.arch_from_json(self.records[i]["arch"]), self.template)  # noqa: E731
        ready = backend.prepare_all([(lambda i=i: build(i), shape) for i in todo])
        notes = {}  # a whole network's fallbacks, as an op entry's
        for i, (measure, note) in zip(todo, ready):
            self.prepared[i], notes[i] = measure, note
        measured = 0
        for i, record in enumerate(self.records):
            if rounds_done(record) > r:
                bar.update(task, advance=1)
                continue
            if i in notes:
                record = {**record, **notes[i]}
            timing = timed(self.prepared[i], self.reference)
            self.records[i] = add_round(record, timing)
            self.table.overhead = {"samples": self.records, "coef": None}
            if self.reference is not None:
                self.table.reference = self.reference.record()  # its medians so far, for a resumed profile
            measured += 1
            if measured % save_every == 0:
                save_table(self.table, self.table.path)
            bar.update(task, advance=1, info=f"round {r + 1} {timing.median:.3f} ms")
        if measured:
            save_table(self.table, self.table.path)

    def settle(self, statistic: str) -> None:
        """Each network's stats from the round its statistic keeps (``rounds.settle``), kept in the table."""
        self.records = [settle(record, statistic) for record in self.records]
        self.table.overhead = {**(self.table.overhead or {}), "samples": self.records}

    def fit(self) -> None:
        if self.records:
            fit_table_overhead(self.table, self.records)

    def wants_more(self, total: int) -> bool:
        loo = (self.table.overhead or {}).get("loo_rmse_pct")
        return loo is not None and loo > MORE_FIT_LOO_PCT and len(self.records) < total

    def add_more(self, total: int) -> None:
        """Sampled networks (seeds MORE_FIT_SEED..) up to ``total`` fit networks, measured by later rounds."""
        seeds = {r["seed"] for r in self.records}
        extra = [seed for seed in range(MORE_FIT_SEED, MORE_FIT_SEED + total) if seed not in seeds][: total - len(self.records)]
        self.records += random_records(self.space, self.template, extra)
        self.count = len(self.records)


def random_records(space: SearchSpace, template: Any, seeds) -> list[dict]:
    """Fit-network records of uniformly sampled architectures, marked ``random`` (``overhead.add_corrections``)."""
    return [{"seed": seed, "arch": space.arch_to_json(space.sample(template, random.Random(seed))), "random": True}
            for seed in seeds]


def fit_table_overhead(table: LatencyTable, records: list[dict], keep_corrections: bool = False) -> LatencyTable:
    """Fit ``table``'s overhead model on measured networks (``{"arch", "median_ms", ...}``); their features come from its entries.

    By default the per-instance corrections are fitted afresh (when the networks are enough to tell); with
    ``keep_corrections`` (``--recalibrate`` on a few networks) the table's corrections stay and only a, b, c move.
    """
    space = get_space(table.space)
    template = space.template_from_dict(table.template)
    kept = (table.overhead or {}).get("corrections") if keep_corrections else None
    samples = [dict(r, measured_ms=r["median_ms"]) for r in records if "median_ms" in r]
    overhead = fit_overhead(with_features(table, space, template, samples, corrected=kept is not None, counts=kept is None))
    if kept:
        overhead["corrections"] = kept
    table.overhead = overhead
    return table


def measure_networks(backend: Backend, networks: list, shape: tuple[int, ...], records: list[dict], label: str,
                     reference: Reference | None = None) -> list[dict]:
    """Time each network once per round, interleaved; ``records[i]`` collects network i's rounds. Each network is
    built and prepared (exported, loaded) once, all before the first round. With a ``reference`` every round is timed
    next to it and the records come back expressed at its quiet state over this session (``rounds.normalise``).
    The set-up is ``Backend.prepare_all``: for ExecuTorch, lowering in a process pool, finished before any timing."""
    method = backend.method
    prepared = [measure for measure, _ in backend.prepare_all([(network, shape) for network in networks])]
    with progress_bar(transient=True) as bar:  # seconds of checks: the bar goes when done, the result is the line
        task = bar.add_task(label, total=len(networks) * method.rounds, info="")
        done, wanted, decision = 0, method.rounds, None
        while done < wanted:
            for i in range(len(networks)):
                timing = timed(prepared[i], reference)
                records[i] = add_round(records[i], timing)
                bar.update(task, advance=1, info=f"round {done + 1}/{wanted} {timing.median:.3f} ms")
            done += 1
            if decision is None and done >= method.rounds:  # the profiler's rule (latency.rounds), decided here afresh
                decision = rounds_decision(records, method.rounds, method.max_rounds)
                wanted = max(done, decision["rounds"])
                bar.update(task, total=len(networks) * wanted)
    log_rounds({**decision, "rounds": done}, label)
    records = [settle(record, decision["statistic"]) for record in records]
    if reference is not None:
        canonical = reference.canonical_ms()
        records = [normalise(record, canonical) for record in records]
    return records


def with_features(table: LatencyTable, space: SearchSpace, template: Any, samples: list[dict], corrected: bool = False,
                  counts: bool = True) -> list[dict]:
    """Samples with S (sum of entries; with the table's corrections if ``corrected``), N (number of ops), M (the work
    the runtime merges by feature, ``SearchSpace.merged_work``) and, with ``counts``, each op instance's occurrences,
    recomputed from the table's current entries."""
    from collections import Counter

    from nasdeploy.latency.predictor import ZERO_COST_OPS

    out = []
    for sample in samples:
        arch = space.arch_from_json(sample["arch"])
        instances = space.arch_op_instances(arch, template)
        total, count = sum_and_count(table, instances, corrected)
        found = {**{k: v for k, v in sample.items() if k != "counts"}, "sum_ms": total, "n_ops": count,
                 **dict.fromkeys(MERGED_WORK_FEATURES, 0.0), **space.merged_work(arch, template)}
        if counts:
            found["counts"] = dict(Counter(i.key() for i in instances if table.has(i) or i.op not in ZERO_COST_OPS))
        out.append(found)
    return out
