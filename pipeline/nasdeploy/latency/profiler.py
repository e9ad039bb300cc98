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

from nasdeploy.errors import NasDeployError
from nasdeploy.hardware import Backend, MeasureMethod, fingerprint, fingerprint_id, get_backend
from nasdeploy.latency.overhead import fit_overhead
from nasdeploy.latency.predictor import sum_and_count
from nasdeploy.latency.rounds import add_round, rounds_done
from nasdeploy.latency.table import LatencyTable, default_table_path, load_table, profile_command, save_table, template_dict
from nasdeploy.progress import progress_bar
from nasdeploy.spaces.base import OpInstance, SearchSpace, get_space

log = logging.getLogger(__name__)

FIT_SEED = 10_000  # fit networks are sampled from their own seeds, apart from validation's (0, 1, ...)

# What a plain `nasdeploy profile` does, and what `search`/`run` do when they profile a missing table,
# so all of them make (and find) the same file.
PROFILE_DEFAULTS = {"warmup": 5, "repeats": 40, "rounds": 3}
DEFAULT_FIT_SAMPLES = 20
# When the plain overhead model misses its own fit networks by more than this (leave-one-out RMSE, %), the
# isolated entries do not add up to a network (tiny ONNX Runtime networks: per-call overhead, cache effects):
# the profiler measures fit networks up to MORE_FIT_SAMPLES, enough to learn per-instance corrections. 200, not
# 100: the ORT MobileNet cpu table has 58 instances, and with 100 networks (< 2 per correction) its corrections
# missed held-out networks by 4.9 % RMSE, with 150 by 3.5 % (same machine, idle; 1 more minute of profiling).
MORE_FIT_LOO_PCT = 6.0
MORE_FIT_SAMPLES = 200
MORE_FIT_SEED = FIT_SEED + 100_000
CHEAPEST_SEED = -1  # the fit network that is the space's cheapest architecture (not a sampled seed)


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


METHOD_FIELDS = ("warmup", "repeats", "threads", "dtype", "batch", "rounds", "clock")


def stored_method(table: LatencyTable) -> MeasureMethod:
    return MeasureMethod(**{k: table.method[k] for k in METHOD_FIELDS if k in table.method})


def open_table(path: Path, space: SearchSpace, template: Any, backend: Backend, device: str, method: MeasureMethod, resume: bool) -> LatencyTable:
    """The table at ``path`` to continue (checked to match), or a fresh one.

    A table made on another machine or setup (the committed reference tables under ``latency_tables/``
    share this machine's folder when the CPU model string is the same) is never continued: its entries
    would mix two machines. It is profiled afresh over, and the log says why.
    """
    from nasdeploy.hardware.fingerprint import machine_mismatches
    from nasdeploy.latency.trust import version_mismatches

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
                  fit_samples: int = DEFAULT_FIT_SAMPLES, save_every: int = 5, root: Path | str = "latency_tables",
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
    with progress_bar() as bar:
        ops_task = bar.add_task(f"ops {table.runtime} {table.device}", total=len(instances) * method.rounds, info="")
        fit_task = bar.add_task("fit networks", total=len(fit.records or range(fit_samples)) * method.rounds, info="")
        for r in range(method.rounds):
            measure_entries(table, space, instances, backend, r, save_every, bar, ops_task)
            fit.measure_round(backend, r, bar, fit_task)
    fit.fit()
    if more_fit_samples is None:
        more_fit_samples = MORE_FIT_SAMPLES if fit_samples >= DEFAULT_FIT_SAMPLES else 0
    if fit.wants_more(more_fit_samples):
        log.info("the overhead model misses its %d fit networks by %.1f %% (leave-one-out): measuring %d more to learn "
                 "per-op corrections", len(fit.records), table.overhead["loo_rmse_pct"], more_fit_samples - len(fit.records))
        fit.add_more(more_fit_samples)
        with progress_bar() as bar:
            more_task = bar.add_task("more fit networks", total=len(fit.records) * method.rounds, info="")
            for r in range(method.rounds):
                fit.measure_round(backend, r, bar, more_task)
        fit.fit()
    save_table(table, path)
    log.info("latency table %s: %d entries, done in %.1f s", path, len(table.entries), time.perf_counter() - started)
    return table


def measure_entries(table: LatencyTable, space: SearchSpace, instances: list[OpInstance], backend: Backend,
                    r: int, save_every: int, bar, task) -> None:
    """Round ``r`` over the op instances: time each one not yet timed ``r + 1`` times."""
    measured = 0
    for inst in instances:
        entry = table.entries.get(inst.key())
        if rounds_done(entry) > r:
            bar.update(task, advance=1)
            continue
        timing = backend.measure_module(space.build_op(inst), op_input_shape(inst, table.batch))
        table.add(inst, add_round(entry, timing))
        measured += 1
        bar.update(task, advance=1, info=f"round {r + 1} {inst.op} {inst.h}x{inst.w} {timing.median:.3f} ms")
        if measured % save_every == 0:
            save_table(table, table.path)
    save_table(table, table.path)


class FitNetworks:
    """The sampled networks the overhead model is fitted on, measured round by round (resumably)."""

    def __init__(self, table: LatencyTable, space: SearchSpace, template: Any, count: int):
        self.table, self.space, self.template, self.count = table, space, template, count
        self.records: list[dict] = list((table.overhead or {}).get("samples", []))

    def choose(self) -> None:
        """Pick ``count`` networks: the space's cheapest one, then seeds whose predicted sums spread evenly over a
        pool of 20x as many samples. Budgeted searches end well below random networks (a tight budget's genotype
        is mostly skips and pools); without the cheapest network the overhead model would extrapolate there."""
        if self.records or self.count <= 0:
            return
        from nasdeploy.latency.predictor import cheapest_architecture

        pool = []
        for seed in range(FIT_SEED, FIT_SEED + 20 * self.count):
            arch = self.space.sample(self.template, random.Random(seed))
            pool.append((sum_and_count(self.table, self.space.arch_op_instances(arch, self.template), corrected=False)[0], seed, arch))
        pool.sort(key=lambda item: item[0])
        spread = max(self.count - 1, 1)
        picks = sorted({round(i * (len(pool) - 1) / max(spread - 1, 1)) for i in range(spread)}) if self.count > 1 else []
        cheapest = cheapest_architecture(self.table, self.space.name, self.template)
        self.records = [{"seed": CHEAPEST_SEED, "arch": self.space.arch_to_json(cheapest)}]
        self.records += [{"seed": pool[i][1], "arch": self.space.arch_to_json(pool[i][2])} for i in picks]

    def measure_round(self, backend: Backend, r: int, bar, task) -> None:
        self.choose()
        shape = network_input_shape(self.template, self.table.batch)
        for i, record in enumerate(self.records):
            if rounds_done(record) > r:
                bar.update(task, advance=1)
                continue
            network = self.space.build(self.space.arch_from_json(record["arch"]), self.template)
            timing = backend.measure_module(network, shape)
            self.records[i] = add_round(record, timing)
            self.table.overhead = {"samples": self.records, "coef": None}
            save_table(self.table, self.table.path)
            bar.update(task, advance=1, info=f"round {r + 1} {timing.median:.3f} ms")

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
        self.records += [{"seed": seed, "arch": self.space.arch_to_json(self.space.sample(self.template, random.Random(seed)))}
                         for seed in extra]
        self.count = len(self.records)


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


def measure_networks(backend: Backend, networks: list, shape: tuple[int, ...], records: list[dict], label: str) -> list[dict]:
    """Time each network once per round, interleaved; ``records[i]`` collects network i's rounds."""
    rounds = backend.method.rounds
    with progress_bar() as bar:
        task = bar.add_task(label, total=len(networks) * rounds, info="")
        for r in range(rounds):
            for i, network in enumerate(networks):
                timing = backend.measure_module(network(), shape)
                records[i] = add_round(records[i], timing)
                bar.update(task, advance=1, info=f"round {r + 1}/{rounds} {timing.median:.3f} ms")
    return records


def with_features(table: LatencyTable, space: SearchSpace, template: Any, samples: list[dict], corrected: bool = False,
                  counts: bool = True) -> list[dict]:
    """Samples with S (sum of entries; with the table's corrections if ``corrected``), N (number of ops) and,
    with ``counts``, each op instance's occurrences, recomputed from the table's current entries."""
    from collections import Counter

    from nasdeploy.latency.predictor import ZERO_COST_OPS

    out = []
    for sample in samples:
        instances = space.arch_op_instances(space.arch_from_json(sample["arch"]), template)
        total, count = sum_and_count(table, instances, corrected)
        found = {**{k: v for k, v in sample.items() if k != "counts"}, "sum_ms": total, "n_ops": count}
        if counts:
            found["counts"] = dict(Counter(i.key() for i in instances if table.has(i) or i.op not in ZERO_COST_OPS))
        out.append(found)
    return out
