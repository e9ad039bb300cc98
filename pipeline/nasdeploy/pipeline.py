"""``nasdeploy run``: profile -> search -> retrain -> export + report, in one resumable run folder.

Layout of ``runs/<name>/``::

    run.json              settings, budget (and where it came from), each stage's status, final summary
    .nasdeploy.lock       who writes the folder now (one writer at a time, ``folder_lock``)
    profile/table.json    the latency table used (copied from the machine's table cache after its spot check, or profiled now)
    search/arch.json      the searched architecture (+ the strategy's log, plots, checkpoint)
    train/model.pt        retrained weights (+ metrics.json, checkpoint.pt)
    export/model.onnx     the validated ONNX graph (+ report.json, report.md; model.pte too on --runtime executorch)

Each stage is a plain function taking the :class:`RunConfig` and the run folder. A stage is finished
when its output file exists and validates; re-running skips finished stages and resumes unfinished ones
from their checkpoints.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from nasdeploy.errors import NasDeployError
from nasdeploy.hardware import MeasureMethod
from nasdeploy.io import atomic_write_json, read_json
from nasdeploy.latency.profiler import DEFAULT_FIT_SAMPLES, PROFILE_DEFAULTS
from nasdeploy.latency.trust import TablePolicy

log = logging.getLogger(__name__)

RUN_SCHEMA_VERSION = 1
STAGES = ("profile", "search", "train", "export")
PRESETS = ("tiny", "cpu", "paper")
# settings that change a stage's result: a run folder made with other values is not reused
RESULT_SETTINGS = ("space", "strategy", "latency_budget_ms", "data", "preset", "device", "runtime", "seed",
                   "train_epochs", "search_options")
# profiling effort per preset: cpu is a plain `nasdeploy profile` (so both make and find the same table);
# the tiny preset is for smoke tests (few repeats, small overhead fit)
PROFILE_METHOD = {"tiny": dict(warmup=3, repeats=10), "cpu": dict(PROFILE_DEFAULTS), "paper": dict(PROFILE_DEFAULTS, warmup=10, repeats=100)}
FIT_SAMPLES = {"tiny": 3, "cpu": DEFAULT_FIT_SAMPLES, "paper": DEFAULT_FIT_SAMPLES}
# default spot-check tolerance per preset: the tiny preset's tables (10 repeats, one round, 3 fit networks)
# are a smoke test and miss small networks by 10-30 % on a loaded machine; they are refused only when grossly off
SPOT_CHECK_TOLERANCE = {"tiny": 0.5, "cpu": 0.10, "paper": 0.10}


@dataclass
class RunConfig:
    out: Path = Path("runs/default")
    space: str = "darts"
    strategy: str | None = None  # None: the space's default strategy (icdarts for darts, senas for mobilenet)
    latency_budget_ms: float | None = None  # None: derived from the table (lower quartile of random architectures)
    data: str = "digits"
    preset: str = "cpu"
    device: str = "cpu"
    runtime: str | None = None  # latency table and deployment runtime; None: the device's best present (run_pipeline)
    seed: int = 0
    table: Path | None = None  # a ready latency table; None: the machine's cached table, profiled if absent
    table_root: Path | None = None  # None: latency.table.table_root() (the user cache, never the checkout)
    train_epochs: int | None = None  # None: the preset's schedule (cpu: scaled by the network's cost, run_train_epochs)
    search_options: dict[str, Any] = field(default_factory=dict)
    # how a reused table is checked (latency.trust): spot-check tolerance, --recalibrate, --trust-table
    spot_check_tolerance: float | None = None  # None: the preset's (SPOT_CHECK_TOLERANCE)
    recalibrate: bool = False
    trust_table: bool = False

    def __post_init__(self) -> None:
        from nasdeploy.hardware.devices import require_device
        from nasdeploy.hardware.runtimes import resolve_runtime

        require_device(self.device)  # an absent cuda:N is refused before any stage touches the run folder
        # resolved once, so run.json records it and every stage (table, search, export) uses the same runtime
        self.runtime = resolve_runtime(self.device, self.runtime).runtime

    def table_policy(self) -> TablePolicy:
        tolerance = self.spot_check_tolerance if self.spot_check_tolerance is not None else SPOT_CHECK_TOLERANCE.get(self.preset, 0.10)
        from nasdeploy.hardware.devices import default_threads

        # the run profiles and deploys with the default thread count: a --table timed with another is from another setup
        return TablePolicy(tolerance=tolerance, recalibrate=self.recalibrate, trust=self.trust_table, threads=default_threads())

    def settings(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


@dataclass
class StageResult:
    status: str  # "done" | "skipped" (already finished) | "failed"
    seconds: float
    outputs: dict[str, Any]


# ---------------------------------------------------------------- helpers


def stage_dir(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / stage


def space_and_template(config: RunConfig):
    """The space and the run's deployment template: the preset's, with the fields the strategy's settings fix
    (``SearchStrategy.template_overrides``; CTNAS' paper preset: appendix D's 18 cells x 44 channels)."""
    from nasdeploy.search.base import default_strategy, get_strategy
    from nasdeploy.spaces.base import get_space

    if config.preset not in PRESETS:
        raise NasDeployError(f"unknown preset {config.preset!r}; choose one of: {', '.join(PRESETS)}")
    space = get_space(config.space)
    template = space.default_template(config.preset)
    strategy = get_strategy(config.strategy or default_strategy(config.space))
    settings = strategy.settings(config.preset, config.search_options)
    # the table the run profiles has the preset's template: a setting that fixes a field without a table is not asked
    overrides = strategy.template_overrides(settings, template.to_dict(), config.space)
    return space, space.default_template(config.preset, **overrides)


def profile_method(config: RunConfig) -> MeasureMethod:
    return MeasureMethod(**PROFILE_METHOD[config.preset])


def table_is_complete(table, space, template) -> bool:
    return all(table.has(inst) for inst in space.op_instances(template))


def try_load_table(path: Path, space_name: str, template):
    """The table at ``path`` if it exists and was made for this space/template, else None."""
    from nasdeploy.latency.table import load_table

    if not Path(path).is_file():
        return None
    try:
        return load_table(path, space=space_name, template=template)
    except NasDeployError as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None


BUDGET_SAMPLES = 32
BUDGET_QUANTILE = 0.25


def derive_budget(table, space, template, seed: int) -> tuple[float, str]:
    """A budget a search can meet and the table predicts well: the lower quartile of random architectures.

    A quarter of uniformly sampled architectures fit under it, so it constrains the search; and it lies
    inside the range the table's overhead model was fitted on (random architectures), where predictions
    are trustworthy — a budget near the cheapest network would rely on extrapolating that fit.
    """
    from nasdeploy.latency.predictor import cheapest_latency_ms, sampled_latencies_ms

    cheapest = cheapest_latency_ms(table, space.name, template)
    sampled = sampled_latencies_ms(table, space.name, template, seed, BUDGET_SAMPLES)
    quartile = sampled[int(BUDGET_QUANTILE * (len(sampled) - 1))]
    budget = max(quartile, cheapest, 0.0)
    if budget <= 0:
        raise NasDeployError(f"the latency table predicts {budget:.3f} ms for random architectures; "
                             "profile again (nasdeploy profile) or pass --latency-budget, e.g. --latency-budget 5ms")
    return budget, (f"derived: lower quartile of {BUDGET_SAMPLES} random architectures "
                    f"({sampled[0]:.3f}–{sampled[-1]:.3f} ms; cheapest {cheapest:.3f} ms)")


# ---------------------------------------------------------------- stages


def stage_profile(config: RunConfig, run_dir: Path) -> StageResult:
    """The latency table for this machine, runtime, space and template, spot-checked before it is used.

    A finished stage's table is spot-checked again (cached per machine boot, so a re-run pays nothing). The
    machine's cached table (``config.table_root``) is copied after its spot check passes; when it fails, the
    run re-profiles this machine into that cache and says why (``--recalibrate`` refits it instead,
    ``--trust-table`` uses it anyway). A table passed with ``--table`` that fails stops the run with the fixes.
    """
    from nasdeploy.latency.trust import spot_check
    from nasdeploy.latency.table import save_table

    space, template = space_and_template(config)
    target = stage_dir(run_dir, "profile") / "table.json"
    policy = config.table_policy()
    existing = try_load_table(target, config.space, template)
    replaced = None
    if existing is not None and table_is_complete(existing, space, template):
        try:
            return StageResult("skipped", 0.0, {"table": str(target), "spot_check": spot_check(existing, policy)})
        except NasDeployError as exc:
            if config.table is not None:
                raise
            replaced = f"the run's table failed its spot check ({exc})"
            log.warning("profiling again: %s", replaced)
    started = time.perf_counter()
    if config.table is not None:
        source = Path(config.table)
        table = try_load_table(source, config.space, template)
        if table is None:
            raise NasDeployError(f"latency table {source} is missing or not for space {config.space!r} preset {config.preset!r}; "
                                 "drop --table to profile this machine")
        check = spot_check(table, policy)
    else:
        source, table, check, why = machine_table(config, space, template, policy)
        replaced = why or replaced
    save_table(table, target)
    if replaced is not None:
        stale_search(run_dir)
    outputs = {"table": str(target), "source": str(source), "spot_check": check}
    if replaced is not None:
        outputs["reprofiled_because"] = replaced
    return StageResult("done", time.perf_counter() - started, outputs)


def machine_table(config: RunConfig, space, template, policy: TablePolicy):
    """(path, table, spot check, why it was re-profiled or None): the machine's cached table, spot-checked.

    Profiled when absent or unfinished; re-profiled from scratch when its spot check fails.
    """
    from nasdeploy.latency.profiler import profile_space
    from nasdeploy.latency.table import default_table_path
    from nasdeploy.latency.trust import spot_check

    method = profile_method(config)
    source = default_table_path(config.space, template, config.runtime, config.device, method.batch, config.table_root)
    table = try_load_table(source, config.space, template)
    if table is None or not table_is_complete(table, space, template):
        log.info("no complete latency table for this machine at %s: profiling %s/%s (%s preset)", source,
                 config.runtime, config.device, config.preset)
        table = profile_space(config.space, template, config.runtime, config.device, method, path=source,
                              resume=True, fit_samples=FIT_SAMPLES[config.preset])
        return source, table, spot_check(table, policy), None
    try:
        check = spot_check(table, policy)
        log.info("using the cached latency table %s (%s)", source, check["summary"])
        return source, table, check, None
    except NasDeployError as exc:
        why = f"the cached table failed its spot check: {exc}"
    log.warning("%s; nasdeploy run re-profiles this machine into %s", why, source)
    table = profile_space(config.space, template, config.runtime, config.device, profile_method(config), path=source,
                          resume=False, fit_samples=FIT_SAMPLES[config.preset])
    return source, table, spot_check(table, policy), why


def stale_search(run_dir: Path) -> None:
    """A re-profiled table makes the search result stale: move arch.json aside so the search stage runs again."""
    arch = stage_dir(run_dir, "search") / "arch.json"
    if arch.is_file():
        arch.replace(arch.with_suffix(".json.stale"))
        log.info("the latency table changed: %s moved to %s, searching again", arch, arch.with_suffix(".json.stale"))


def stage_search(config: RunConfig, run_dir: Path, budget_ms: float) -> StageResult:
    """Search under the budget with ICDARTS (darts) / SE-NAS (mobilenet) or ``config.strategy``."""
    from nasdeploy.search.base import SearchRequest, default_strategy, get_strategy
    from nasdeploy.spaces.record import ArchitectureRecord

    out = stage_dir(run_dir, "search")
    arch_path = out / "arch.json"
    strategy = config.strategy or default_strategy(config.space)
    if arch_path.is_file():
        try:
            record = ArchitectureRecord.load(arch_path)
            if record.space == config.space and same_budget(record.metrics.get("latency_budget_ms"), budget_ms):
                return StageResult("skipped", 0.0, {"arch": str(arch_path), "strategy": strategy})
            log.warning("searching again: %s was searched for another space or budget (%s ms, now %.4g ms)", arch_path,
                        record.metrics.get("latency_budget_ms"), budget_ms)
            stale = out / "checkpoint.pt"
            if stale.is_file():
                stale.replace(stale.with_suffix(".pt.stale"))
        except NasDeployError as exc:
            log.warning("searching again: %s", exc)
    started = time.perf_counter()
    request = SearchRequest(
        space=config.space, out_dir=out, table_path=stage_dir(run_dir, "profile") / "table.json",
        latency_budget_ms=budget_ms, data=config.data, preset=config.preset, seed=config.seed,
        resume=(out / "checkpoint.pt").is_file(), device=config.device, options=dict(config.search_options),
        table_policy=config.table_policy(),
    )
    result = get_strategy(strategy).run(request)
    return StageResult("done", time.perf_counter() - started, {
        "arch": str(result.arch_path), "log": str(result.log_path), "strategy": strategy,
        "predicted_latency_ms": result.record.metrics.get("predicted_latency_ms"),
    })


def same_budget(searched_ms: float | None, budget_ms: float) -> bool:
    return searched_ms is not None and abs(float(searched_ms) - budget_ms) <= 1e-9 * max(abs(budget_ms), 1.0)


def train_finished(out: Path, record_json: dict[str, Any] | None = None, train_config=None) -> bool:
    """model.pt and metrics.json both readable, and (when given) trained from ``record_json`` with ``train_config``."""
    from nasdeploy.io import load_checkpoint
    from nasdeploy.train.trainer import METRICS, MODEL, RESUME_KEYS

    if not (out / MODEL).is_file() or not (out / METRICS).is_file():
        return False
    try:
        metrics = read_json(out / METRICS, "training metrics")
        if not isinstance(metrics, dict) or "test_accuracy" not in metrics:
            return False
        if train_config is not None and any(metrics.get("config", {}).get(k) != getattr(train_config, k) for k in RESUME_KEYS):
            log.info("retraining: %s was trained with other settings", out / MODEL)
            return False
        payload = load_checkpoint(out / MODEL, "trained model")
    except NasDeployError as exc:
        log.warning("retraining: %s", exc)
        return False
    if not isinstance(payload, dict) or "state_dict" not in payload:
        return False
    if record_json is not None and payload.get("record") != record_json:
        log.info("retraining: %s was trained from another architecture than search/arch.json", out / MODEL)
        return False
    return True


def usable_train_checkpoint(out: Path, record_json: dict[str, Any], train_config) -> None:
    """Move aside a training checkpoint that cannot be resumed (corrupt, other architecture or settings)."""
    from nasdeploy.io import load_checkpoint
    from nasdeploy.train.trainer import CHECKPOINT, check_resumable

    path = out / CHECKPOINT
    if not path.is_file():
        return
    reason = None
    try:
        state = load_checkpoint(path, "training checkpoint")
        if not isinstance(state, dict) or "model" not in state:
            reason = "it is not a training checkpoint"
        else:
            check_resumable(state, train_config, record_json, path)
    except NasDeployError as exc:
        reason = str(exc)
    if reason is not None:
        log.warning("training from scratch, %s moved to %s: %s", path, path.with_suffix(".pt.stale"), reason)
        path.replace(path.with_suffix(".pt.stale"))


# cpu preset: a fixed retraining compute budget, in epochs × multiply-adds per image — 3 epochs of a
# 30 M-MAC cell network (about 3 min on one core); a lighter network gets more epochs (3 to 30), so a
# 2 M-MAC MobileNet is not left at chance after 3 epochs.
CPU_TRAIN_EPOCH_MACS = 9e7
CPU_TRAIN_EPOCHS = (3, 30)


def run_train_epochs(record, preset: str) -> int | None:
    """Retraining epochs for ``nasdeploy run``: the preset's, scaled by network cost for the cpu preset."""
    from nasdeploy.train.trainer import count_flops

    if preset != "cpu":
        return None
    size = getattr(record.template, "input_size", 32)
    channels = getattr(record.template, "in_channels", 3)
    flops = count_flops(record.build(), (1, channels, size, size))
    if not flops:
        return None
    low, high = CPU_TRAIN_EPOCHS
    return int(min(max(round(CPU_TRAIN_EPOCH_MACS / flops), low), high))


def stage_train(config: RunConfig, run_dir: Path) -> StageResult:
    """Retrain the searched architecture from scratch (its strategy's recipe, the preset's epochs)."""
    from nasdeploy.spaces.record import ArchitectureRecord
    from nasdeploy.search.base import searched_recipe
    from nasdeploy.train.trainer import preset_config, train_architecture

    out = stage_dir(run_dir, "train")
    record = ArchitectureRecord.load(stage_dir(run_dir, "search") / "arch.json")
    record_json = record.to_json()
    epochs = config.train_epochs if config.train_epochs is not None else run_train_epochs(record, config.preset)
    recipe = searched_recipe(record)  # the searching strategy's own recipe (its paper's epochs on the paper preset)
    train_config = preset_config(config.preset, recipe, epochs=epochs, seed=config.seed, device=config.device)
    if train_finished(out, record_json, train_config):
        return StageResult("skipped", 0.0, {"model": str(out / "model.pt"), "metrics": str(out / "metrics.json"),
                                            "recipe": recipe})
    started = time.perf_counter()
    usable_train_checkpoint(out, record_json, train_config)
    metrics = train_architecture(record, config.data, train_config, out, resume=True)
    return StageResult("done", time.perf_counter() - started, {
        "model": str(out / "model.pt"), "metrics": str(out / "metrics.json"), "test_accuracy": metrics["test_accuracy"],
        "epochs": train_config.epochs, "recipe": recipe,
    })


def export_finished(out: Path, checkpoint: Path) -> bool:
    """report.json readable with passing parity, its ONNX file valid, and made from ``checkpoint`` as it is now."""
    try:
        report = read_json(out / "report.json", "export report")
    except NasDeployError as exc:
        if (out / "report.json").exists():
            log.warning("exporting again: %s", exc)
        return False
    files = report.get("files", {})
    onnx_path = Path(files.get("onnx", ""))
    if not report.get("parity") or not all(p.get("passed") for p in report["parity"]) or not onnx_path.is_file():
        return False
    if "pte" in files and not Path(files["pte"]).is_file():
        return False
    if report.get("checkpoint_sha256") != file_sha256(checkpoint):
        log.info("exporting again: %s changed since the last export", checkpoint)
        return False
    try:
        import onnx

        onnx.checker.check_model(onnx.load(str(onnx_path)))
    except Exception as exc:  # any parse/check failure means the file is not the validated one
        log.warning("exporting again: %s is not a valid ONNX file (%s)", onnx_path, exc.__class__.__name__)
        return False
    return True


def file_sha256(path: Path) -> str | None:
    from nasdeploy.export.deploy import file_sha256 as sha

    return sha(path)


def run_comparisons(device: str, target: str) -> list[tuple[str, ...]]:
    """Every other deployment runtime of the device, then torch (on a GPU both CUDA graphs and eager); those absent
    here are skipped with a line in the report, the target's own measurement is not repeated."""
    from nasdeploy.export.deploy import torch_comparisons
    from nasdeploy.hardware.runtimes import deployment_order

    others = [(runtime, device) for runtime in deployment_order(device) if runtime not in (target, "torch")]
    return others + torch_comparisons(device)


def stage_export(config: RunConfig, run_dir: Path, budget_ms: float) -> StageResult:
    """Export to ONNX with parity (and, on runtime executorch, to ``model.pte`` with its own parity), re-measure on the
    run's runtime and compare with the device's other runtimes and torch, write the report."""
    from nasdeploy.export.deploy import ExportOptions, export_checkpoint

    out = stage_dir(run_dir, "export")
    if export_finished(out, stage_dir(run_dir, "train") / "model.pt"):
        return StageResult("skipped", 0.0, {"report": str(out / "report.json")})
    started = time.perf_counter()
    comparisons = run_comparisons(config.device, config.runtime)
    options = ExportOptions(
        budget_ms=budget_ms, table=stage_dir(run_dir, "profile") / "table.json", runtime=config.runtime,
        device=config.device, compare=comparisons, table_policy=config.table_policy(),
    )
    report = export_checkpoint(stage_dir(run_dir, "train") / "model.pt", out / "model.onnx", out, options)
    files = {kind: report["files"][kind] for kind in ("onnx", "pte") if kind in report["files"]}
    return StageResult("done", time.perf_counter() - started, {"report": str(out / "report.json"), **files})


# ---------------------------------------------------------------- the run


def load_run_state(run_dir: Path, config: RunConfig) -> dict[str, Any]:
    """run.json of an earlier run in this folder (settings must match), or a fresh state."""
    path = Path(run_dir) / "run.json"
    settings = config.settings()
    if not path.is_file():
        return {"schema_version": RUN_SCHEMA_VERSION, "settings": settings, "stages": {}}
    state = read_json(path, "run state")
    old = state.get("settings", {})
    changed = [k for k in RESULT_SETTINGS if old.get(k) != settings.get(k)]
    if changed:
        raise NasDeployError(
            f"run folder {run_dir} was made with other settings ({', '.join(f'{k}={old.get(k)!r}' for k in changed)}); "
            "pass the same settings to continue it, or choose another --out"
        )
    state["settings"] = settings
    return state


def medians_by_runtime(report: dict[str, Any]) -> tuple[dict[str, float], float | None]:
    """({runtime: median} as each runs by default, torch's eager median on a GPU or None) from an export report."""
    by_runtime = {report["runtime"]: report["measured_median_ms"]}
    eager = None
    for other in report.get("comparisons", []):
        if (other.get("method") or {}).get("execution") == "eager" and other["device"] != "cpu":
            eager = other["median_ms"]
        else:
            by_runtime.setdefault(other["runtime"], other["median_ms"])
    return by_runtime, eager


def run_summary(run_dir: Path) -> dict[str, Any]:
    """The figures the terminal summary shows, read back from the export report."""
    from nasdeploy.search.shared.budget import fixup_summary
    from nasdeploy.spaces.record import ArchitectureRecord

    report = read_json(stage_dir(run_dir, "export") / "report.json", "export report")
    searched = ArchitectureRecord.load(stage_dir(run_dir, "search") / "arch.json").metrics
    by_runtime, eager = medians_by_runtime(report)
    return {
        "test_accuracy": report.get("test_accuracy"),
        "budget_ms": report.get("budget_ms"),
        "predicted_latency_ms": report.get("predicted_latency_ms"),
        # how the search met the budget: the α-only genotype's prediction and the fix-up's replacements, apart
        "alpha_only_latency_ms": searched.get("alpha_only_latency_ms"),
        "fixup_replacements": searched.get("fixup_replacements"),
        "fixups": fixup_summary(searched),  # phase by phase (hierarchical: micro, before the macro phase, macro)
        "strategy": searched.get("strategy"),
        "measured_median_ms": report.get("measured_median_ms"),
        "measured_p90_ms": report.get("measured_p90_ms"),
        "relative_prediction_error": report.get("relative_prediction_error"),
        "within_budget": report.get("within_budget"),
        "runtime": report.get("runtime"),
        "device": report.get("device"),
        "onnxruntime_median_ms": by_runtime.get("onnxruntime"),
        "torch_median_ms": by_runtime.get("torch"),
        "torch_eager_median_ms": eager,
        "skipped_comparisons": report.get("skipped_comparisons", []),
        "parity_max_abs_diff": report["parity"][0]["max_abs_diff"],
        # the other files' parity (ExecuTorch .pte, TensorRT engine), each against torch
        "other_parity": [{"runtime": p["runtime"], "max_abs_diff": p["max_abs_diff"], "passed": p["passed"]}
                         for p in report["parity"][1:]],
        "spot_check": (report.get("spot_check") or {}).get("summary"),
        "flops": report.get("flops"),
        "params": report.get("params"),
    }


def run_budget(config: RunConfig, run_dir: Path, state: dict[str, Any]) -> tuple[float, str]:
    """The derived budget in today's ms (the table's predictions scaled by the profile stage's drift); derived once per
    table and kept in run.json, so a continued run searches for the same budget."""
    from nasdeploy.latency.table import load_table, table_sha256
    from nasdeploy.latency.trust import apply_drift

    space, template = space_and_template(config)
    table = load_table(stage_dir(run_dir, "profile") / "table.json", config.space, template)
    sha = table_sha256(table)
    if state.get("budget_table_sha256") == sha and str(state.get("budget_source", "")).startswith("derived"):
        return state["budget_ms"], state["budget_source"]
    apply_drift(table, state.get("spot_check"))
    budget, source = derive_budget(table, space, template, config.seed)
    if table.speed_ratio != 1.0:
        source += f"; predictions scaled by the drift {table.speed_ratio:.3f}"
    state["budget_table_sha256"] = sha
    log.info("no --latency-budget given: using %.3f ms (%s)", budget, source)
    return budget, source


def run_pipeline(config: RunConfig, on_stage: Callable[[str, StageResult], None] | None = None) -> dict[str, Any]:
    """Run (or continue) every stage, holding the run folder's lock (one writer); returns the final run.json contents."""
    from nasdeploy.folder_lock import hold_folder

    with hold_folder(config.out, "run folder") as run_dir:
        return run_stages(config, run_dir, on_stage)


def run_stages(config: RunConfig, run_dir: Path, on_stage: Callable[[str, StageResult], None] | None) -> dict[str, Any]:
    state = load_run_state(run_dir, config)
    state_path = run_dir / "run.json"
    started = time.perf_counter()

    def record(stage: str, step: Callable[[], StageResult]) -> StageResult:
        previous = state["stages"].get(stage, {})
        state["stages"][stage] = {"status": "running", "seconds": 0.0, "outputs": {}}
        atomic_write_json(state_path, state)
        try:
            result = step()
        except BaseException as exc:
            state["stages"][stage] = {"status": "failed", "seconds": 0.0, "outputs": {}, "error": str(exc)}
            atomic_write_json(state_path, state)
            raise
        state["stages"][stage] = dataclasses.asdict(result)
        if result.status == "skipped" and previous.get("status") in ("done", "skipped"):
            # keep what the run that did the work measured
            state["stages"][stage].update(seconds=previous.get("seconds", 0.0), outputs={**previous.get("outputs", {}), **result.outputs})
        atomic_write_json(state_path, state)
        log.info("stage %s: %s (%.1f s)", stage, result.status, result.seconds)
        if on_stage is not None:
            on_stage(stage, result)
        return result

    record("profile", lambda: stage_profile(config, run_dir))
    state["spot_check"] = state["stages"]["profile"]["outputs"].get("spot_check")
    if config.latency_budget_ms is not None:
        budget, source = config.latency_budget_ms, "given"
        state.pop("budget_table_sha256", None)
    else:
        budget, source = run_budget(config, run_dir, state)
    state.update({"budget_ms": budget, "budget_source": source})
    record("search", lambda: stage_search(config, run_dir, budget))
    record("train", lambda: stage_train(config, run_dir))
    record("export", lambda: stage_export(config, run_dir, budget))
    state["summary"] = run_summary(run_dir)
    state["wall_time_s"] = time.perf_counter() - started  # this invocation
    state["stage_time_s"] = sum(state["stages"][s].get("seconds", 0.0) for s in STAGES)  # all invocations
    atomic_write_json(state_path, state)
    return state
