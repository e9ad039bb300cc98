"""The shared search context: what every strategy receives, resolved and checked once.

``build_context(strategy, request, config)`` does, before any training:

1. the latency table: ``--table``, or this machine's table for the space, runtime and template (profiled
   first when there is none) whenever a budget or the strategy needs one; checked against the space and
   the strategy's template settings, and spot-checked on this machine (``latency.trust``);
2. the deployment template: the table's, or the preset's with the data's classes, channels and size;
3. the data: the training split's two halves (train / val, §3.4.2 of the ICDARTS dissertation; the strategy's
   ``validation_fraction`` may hold out less, its ``validation_split`` "test" takes the whole training split and
   the test split, SS PCP-DARTS §III-B), materialised once; ``two_views`` gives two independently augmented
   views for self-supervised strategies;
4. the budgets, with the cheapest-feasible pre-check (a budget below the cheapest network fails at once);
5. the device, seeded RNGs (``seed_everything``, ``rng``) and a checkpoint helper with a settings fingerprint;
6. under torchrun, this process's place (``ctx.parallel``, ``nasdeploy.distributed``): a strategy marked
   ``data_parallel`` loads training batches with ``ctx.loader`` (its rank's share of the global batch) and calls
   ``ctx.average_gradients`` after each backward; the same seed stream on every rank keeps α, β and sampled
   paths equal, every checkpoint verifies it, rank 0 resolves the table and writes every file.

``ctx.write_result(outcome, config)`` is the one writer of ``arch.json``, ``search_log.json`` and the
architecture drawing; every strategy's log carries the same common keys (``COMMON_KEYS``).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from nasdeploy import distributed
from nasdeploy.errors import NasDeployError
from nasdeploy.io import atomic_torch_save, atomic_write_json, load_checkpoint
from nasdeploy.seeds import mix_seed, seed_everything  # noqa: F401  (re-exported: search.context.mix_seed)

# keys every strategy's search_log.json and arch.json metrics carry
COMMON_KEYS = ("strategy", "search_seconds", "latency_budget_ms", "flops_budget", "predicted_latency_ms", "flops",
               "params", "table", "spot_check", "cheapest_latency_ms")


def resolve_device(name: str) -> torch.device:
    """The device the search trains on; an absent ``cuda:N`` is refused (naming the visible ones) before any work."""
    from nasdeploy.hardware.devices import require_device

    index = require_device(name)
    return torch.device("cpu") if index is None else torch.device("cuda", index)


def materialise(dataset) -> TensorDataset:
    """Stack a (small, un-augmented) dataset into tensors once, so every epoch is cheap."""
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    return TensorDataset(torch.stack(xs), torch.tensor(ys, dtype=torch.long))


# ------------------------------------------------------------------------------------------ data
class TwoViews(Dataset):
    """Two independently augmented views of each image and no label (self-supervised strategies).

    The augmentations of PIRL / Barlow Twins at small scale: random resized crop, horizontal flip (not for
    digits, as in ``train.data``), colour jitter and random grayscale. The stored images are normalised, so
    each view is taken back to [0, 1] first (colour jitter and grayscale clamp to that range) and normalised
    again after. Randomness comes from torch's global generator, so ``ctx.seed_everything`` makes an epoch's
    views reproducible.
    """

    def __init__(self, images: torch.Tensor, size: int, mean, std, flip: bool = True, strength: float = 0.4):
        from torchvision.transforms import v2

        self.images = images
        self.mean = torch.as_tensor(mean, dtype=images.dtype).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=images.dtype).view(-1, 1, 1)
        steps = [v2.RandomResizedCrop(size, scale=(0.3, 1.0), antialias=True)]
        steps += [v2.RandomHorizontalFlip()] if flip else []
        steps += [v2.RandomApply([v2.ColorJitter(strength, strength, strength, 0.1)], p=0.8), v2.RandomGrayscale(p=0.2)]
        self.transform = v2.Compose(steps)

    def view(self, image: torch.Tensor) -> torch.Tensor:
        raw = (image * self.std + self.mean).clamp(0.0, 1.0)
        return (self.transform(raw) - self.mean) / self.std

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        return self.view(image), self.view(image)


@dataclass
class SearchData:
    """The search's train and validation images, materialised once (train: weights; val: α, scores, fitness): the
    training split's two halves by default (``load_search_data``)."""

    train: TensorDataset
    val: TensorDataset
    info: Any  # train.data.DatasetInfo
    mean: tuple[float, ...] = (0.0,)  # the normalisation the images carry (per channel)
    std: tuple[float, ...] = (1.0,)
    flip: bool = True  # False for digits: a mirrored 2, 3 or 7 is not that digit (train.data)

    def two_views(self, split: str = "train") -> TwoViews:
        images = (self.train if split == "train" else self.val).tensors[0]
        return TwoViews(images, int(images.shape[-1]), self.mean, self.std, self.flip)


VALIDATION_SPLITS = ("train", "test")


def load_search_data(spec: str, input_size: int, seed: int, val_fraction: float = 0.5, split: str = "train") -> SearchData:
    """train / val: ``val_fraction`` of the training split held out (``split="train"``), or the whole training split
    and the test split (``split="test"``, SS PCP-DARTS §III-B: CIFAR-10's 50K / 10K)."""
    from nasdeploy.train.data import load_dataset, split_holdout

    if split not in VALIDATION_SPLITS:
        raise NasDeployError(f"unknown validation split {split!r}; choose one of: {', '.join(VALIDATION_SPLITS)}")
    dataset, info = load_dataset(spec, train=True, input_size=input_size, seed=seed)
    if split == "test":
        train_part, val_part = dataset, load_dataset(spec, train=False, input_size=input_size, seed=seed)[0]
    else:
        train_part, val_part = split_holdout(dataset, seed, val_fraction)
    mean = tuple(getattr(dataset, "mean", torch.zeros(info.channels)).flatten().tolist())
    std = tuple(getattr(dataset, "std", torch.ones(info.channels)).flatten().tolist())
    return SearchData(materialise(train_part), materialise(val_part), info, mean, std, flip=info.name != "digits")


# ------------------------------------------------------------------------------------------ checkpoints
class Checkpoint:
    """A checkpoint file whose state is only resumed by a search with the same settings (its fingerprint)."""

    def __init__(self, path: Path, fingerprint: dict[str, Any], what: str,
                 parallel: distributed.Parallel = distributed.SINGLE):
        self.path, self.fingerprint, self.what, self.parallel = Path(path), fingerprint, what, parallel

    def exists(self) -> bool:
        return self.parallel.from_rank0(self.path.is_file)

    def save(self, state: dict[str, Any]) -> None:
        """Under torchrun: verify the ranks hold the same state (weights, α, optimiser moments), rank 0 writes."""
        self.parallel.check_replicas(distributed.state_tensors(state), f"{self.what} search states")
        atomic_torch_save({"format": self.what, "fingerprint": self.fingerprint, "state": state}, self.path)

    def load(self) -> dict[str, Any]:
        """Read by rank 0 and broadcast, so a resumed multi-node run needs no shared file system."""
        return self.parallel.from_rank0(self._load)

    def _load(self) -> dict[str, Any]:
        saved = load_checkpoint(self.path, f"{self.what} checkpoint")
        if not isinstance(saved, dict) or saved.get("format") != self.what:
            raise NasDeployError(f"{self.path} is not a {self.what} checkpoint of this version; drop --resume to start again")
        if saved.get("fingerprint") != self.fingerprint:
            raise NasDeployError(f"checkpoint {self.path} was written by a search with other settings (options, seed, data, "
                                 "table or template); re-run with the same settings or drop --resume")
        return saved["state"]


# ------------------------------------------------------------------------------------------ outcome
@dataclass
class SearchOutcome:
    """What a strategy hands back: the architecture, its own metrics and log, and the time it searched."""

    arch: Any
    search_seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)  # strategy-specific, next to the common keys
    log: dict[str, Any] = field(default_factory=dict)  # strategy-specific search_log.json content
    extra_files: list[Path] = field(default_factory=list)
    title: str = ""


# ------------------------------------------------------------------------------------------ context
@dataclass
class SearchContext:
    strategy: str
    request: Any  # SearchRequest
    space: Any
    template: Any  # the deployment template: arch.json is built, predicted and exported at it
    table: Any  # LatencyTable | None
    data: SearchData
    device: torch.device
    settings: dict[str, Any]  # the strategy's config as a dict (fingerprint, log)
    cheapest_latency_ms: float | None = None
    spot_check: dict[str, Any] | None = None
    parallel: distributed.Parallel = distributed.SINGLE  # under torchrun: rank, world size, backend

    # -------------------------------------------------------------- plain facts
    @property
    def seed(self) -> int:
        return self.request.seed

    @property
    def out_dir(self) -> Path:
        return Path(self.request.out_dir)

    @property
    def latency_budget_ms(self) -> float | None:
        return self.request.latency_budget_ms

    @property
    def flops_budget(self) -> float | None:
        return self.request.flops_budget

    @property
    def resume(self) -> bool:
        return self.request.resume

    # -------------------------------------------------------------- randomness
    def seed_everything(self, *parts: int) -> None:
        """Seed random / numpy / torch from (seed, *parts), so each epoch or phase is reproducible after a resume."""
        seed_everything(mix_seed(self.seed, *parts))

    def rng(self, *parts: int) -> random.Random:
        return random.Random(mix_seed(self.seed, *parts))

    # -------------------------------------------------------------- data parallelism (no-ops in one process)
    def loader(self, dataset, batch_size: int, shuffle: bool, seed: int, drop_last: bool = False):
        """Training batches of global size ``batch_size``: one process, ``train.data.make_loader``; under torchrun
        this rank's share through a DistributedSampler."""
        return self.parallel.loader(dataset, batch_size, shuffle, seed, drop_last)

    def average_gradients(self, params) -> None:
        """After each backward of a data-parallel strategy: the gradients' mean over the ranks."""
        self.parallel.average_gradients(params)

    # -------------------------------------------------------------- latency
    def predict_latency_ms(self, arch: Any) -> float | None:
        if self.table is None:
            return None
        from nasdeploy.latency.predictor import predict_latency_ms

        return predict_latency_ms(self.table, arch, self.space, self.template)

    # -------------------------------------------------------------- checkpoints
    def fingerprint(self) -> dict[str, Any]:
        """What must match for a checkpoint of this search to be resumed."""
        return {"strategy": self.strategy, "settings": self.settings, "seed": self.seed, "data": self.request.data,
                "space": self.space.name, "template": self.template.to_dict(),
                "latency_budget_ms": self.latency_budget_ms, "flops_budget": self.flops_budget,
                "table": table_digest(self.table)}

    def checkpoint(self, path: Path | None = None, **extra: Any) -> Checkpoint:
        return Checkpoint(path or self.out_dir / "checkpoint.pt", {**self.fingerprint(), **extra}, self.strategy,
                          self.parallel)

    # -------------------------------------------------------------- outputs
    def common_metrics(self, arch: Any, search_seconds: float) -> dict[str, Any]:
        from nasdeploy.spaces.flops import count_flops
        from nasdeploy.train.trainer import inference_params

        network = self.space.build(arch, self.template).eval()
        size = self.template.input_size
        shape = (1, self.template.in_channels, *((size, size) if isinstance(size, int) else size))
        params = inference_params(network)  # without the training-only auxiliary head
        return {
            "strategy": self.strategy, "search_seconds": round(float(search_seconds), 2),
            "latency_budget_ms": self.latency_budget_ms, "flops_budget": self.flops_budget,
            "predicted_latency_ms": self.predict_latency_ms(arch), "flops": int(count_flops(network, shape)),
            "params": params, "table": str(self.table.path) if self.table is not None else None,
            "spot_check": (self.spot_check or {}).get("summary"), "cheapest_latency_ms": self.cheapest_latency_ms,
        }

    def write_result(self, outcome: SearchOutcome):
        """Write arch.json, search_log.json and architecture.png; the common keys come from here only."""
        from nasdeploy.search.request import SearchResult
        from nasdeploy.spaces.record import ArchitectureRecord

        self.check_same_architecture(outcome.arch)
        common = self.common_metrics(outcome.arch, outcome.search_seconds)
        if self.parallel.active:
            common["distributed"] = self.parallel.describe()
        metrics = {**outcome.metrics, **common}
        record = ArchitectureRecord(space=self.space.name, template=self.template, arch=outcome.arch, metrics=metrics)
        arch_path = self.out_dir / "arch.json"
        log_path = self.out_dir / "search_log.json"
        if not self.parallel.is_main:  # rank 0 writes; every rank returns the same result
            return SearchResult(record=record, arch_path=arch_path, log_path=log_path, extra_files=list(outcome.extra_files))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record.save(arch_path)
        atomic_write_json(log_path, {
            **common, "settings": self.settings, "preset": self.request.preset, "seed": self.seed,
            "data": self.request.data, "space": self.space.name, "template": self.template.to_dict(),
            "spot_check_detail": self.spot_check, **outcome.log,
            "result": {"arch": self.space.arch_to_json(outcome.arch), "metrics": metrics},
        })
        drawing = self.space.draw(outcome.arch, self.template, self.out_dir / "architecture.png",
                                  outcome.title or f"{self.strategy} ({self.space.name})")
        return SearchResult(record=record, arch_path=arch_path, log_path=log_path,
                            extra_files=[Path(drawing), *outcome.extra_files])

    def check_same_architecture(self, arch: Any) -> None:
        """Under torchrun every rank must have searched the same architecture (the replicas stayed equal)."""
        if not self.parallel.active:
            return
        mine = json.dumps(self.space.arch_to_json(arch), sort_keys=True)
        if self.parallel.from_rank0(lambda: mine) != mine:
            raise NasDeployError(f"rank {self.parallel.rank} searched another architecture than rank 0: the data-parallel "
                                 "replicas diverged; report this as a bug (run with one process meanwhile)")


def table_digest(table) -> str | None:
    """A short hash of a table's entries and overhead model: a checkpoint is bound to the numbers it searched with."""
    if table is None:
        return None
    payload = json.dumps({"entries": table.entries, "overhead": table.overhead}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ building it
def build_context(strategy, request, config) -> SearchContext:
    """Resolve table, template, data, device and budgets for ``strategy`` (a SearchStrategy) before any training."""
    from dataclasses import asdict, replace

    from nasdeploy.spaces.base import get_space

    if request.space not in strategy.spaces:
        raise NasDeployError(f"{strategy.name} searches the {' / '.join(strategy.spaces)} space(s), not {request.space!r}; "
                             f"pass --space {strategy.spaces[0]} or another --strategy")
    space = get_space(request.space)
    resolve_device(request.device)  # a device the search can use, named in one line if not
    parallel = join_for_search(strategy, request, config)
    device = torch.device(parallel.device)  # under torchrun a CUDA rank's cuda:LOCAL_RANK
    table = parallel.from_rank0(lambda: load_given_table(request, space.name))
    overrides = strategy.template_overrides(config, table.template if table is not None else None, space.name)
    if table is not None:
        template = space.template_from_dict(table.template)
        template = check_overrides(template, overrides)
    else:
        template = space.default_template(request.preset, **overrides)
    data = load_search_data(request.data, template.input_size, request.seed, strategy.validation_fraction(config),
                            strategy.validation_split(config))
    info = data.info
    if table is None:
        template = replace(template, num_classes=info.num_classes, in_channels=info.channels, input_size=info.input_size)
        if request.latency_budget_ms is not None or strategy.wants_table(config):
            table = parallel.from_rank0(lambda: discover_table(request, space.name, template))  # rank 0 profiles
    elif (info.num_classes, info.channels) != (template.num_classes, template.in_channels):
        raise NasDeployError(
            f"data {request.data!r} has {info.num_classes} classes and {info.channels} channels but the latency table's "
            f"template has {template.num_classes} and {template.in_channels}; profile a table for this data"
        )
    if request.flops_budget is not None and not strategy.uses_flops_budget:
        raise NasDeployError(f"{strategy.name} does not take a FLOPs budget; drop --flops-budget or use a strategy that does "
                             "(nasdeploy strategies)")
    ctx = SearchContext(strategy=strategy.name, request=request, space=space, template=template, table=table, data=data,
                        device=device, settings=asdict(config), parallel=parallel)
    if table is not None:
        ctx.spot_check = parallel.from_rank0(lambda: check_table(table, request))  # rank 0 measures
        apply_drift(table, ctx.spot_check)  # every rank predicts in today's ms
        ctx.cheapest_latency_ms = strategy.cheapest_latency_ms(ctx, config)
        check_latency_budget(ctx)
    return ctx


def join_for_search(strategy, request, config) -> distributed.Parallel:
    """Under torchrun: refuse a strategy that does not run data-parallel and a global batch the world size does not
    divide, on every rank, before any collective; then join the process group."""
    if distributed.launched_world_size() > 1 and not strategy.data_parallel:
        from nasdeploy.search.request import STRATEGIES

        able = ", ".join(name for name in STRATEGIES if STRATEGIES.get(name).data_parallel)
        raise NasDeployError(f"{strategy.name} does not run data-parallel; launch it without torchrun "
                             f"(data-parallel strategies: {able})")
    return distributed.join(request.device, request.dist_backend, getattr(config, "batch_size", None), "--set batch_size={}")


def load_given_table(request, space_name: str):
    if request.table_path is None:
        return None
    from nasdeploy.latency.table import load_table

    return load_table(request.table_path, space=space_name)


def discover_table(request, space_name: str, template):
    """This machine's table for the space, runtime and template; profiled first when there is none."""
    from nasdeploy.latency.table import load_table
    from nasdeploy.latency.trust import table_for_search

    from nasdeploy.hardware.runtimes import resolve_runtime

    runtime = resolve_runtime(request.device, request.runtime).runtime  # the same choice as profile, run and export
    path = table_for_search(space_name, template, runtime, request.device, root=request.table_root)  # names it
    return load_table(path, space=space_name, template=template)


def apply_drift(table, result) -> None:
    from nasdeploy.latency.trust import apply_drift as scale_by_drift

    scale_by_drift(table, result)


def check_table(table, request) -> dict[str, Any]:
    """Spot-check a table on this machine before it drives the search (``latency.trust``; it logs the result)."""
    from nasdeploy.latency.trust import spot_check

    return spot_check(table, request.table_policy)


def check_overrides(template, overrides: dict[str, Any]):
    """A strategy setting that fixes a template field must agree with the latency table's template; fields that
    change training only (``latency.table.LATENCY_IRRELEVANT_FIELDS``, e.g. ``aux_head``) are taken as set.
    Returns the template with those."""
    from nasdeploy.latency.table import LATENCY_IRRELEVANT_FIELDS

    training_only = {k: v for k, v in overrides.items() if k in LATENCY_IRRELEVANT_FIELDS}
    overrides = {k: v for k, v in overrides.items() if k not in training_only}
    for key, value in overrides.items():
        have = getattr(template, key)
        if str(have) != str(value):
            if key == "op_space":
                fix = f"profile a table with --op-space {value}"
            else:  # no profile option sets it: `search` without --table finds or profiles this machine's table
                fix = f"drop --table (this machine's table for {key}={value} is found or profiled)"
            raise NasDeployError(f"{key}={value} differs from the latency table's {key}={have}; {fix} or drop the setting")
    return replace(template, **training_only) if training_only else template


def check_latency_budget(ctx: SearchContext) -> None:
    """Fail before training when no architecture of this strategy can meet the budget."""
    budget, cheapest = ctx.latency_budget_ms, ctx.cheapest_latency_ms
    if budget is not None and cheapest is not None and budget < cheapest:
        raise NasDeployError(
            f"latency budget {budget:.4g} ms is below the cheapest {ctx.space.name} network {ctx.strategy} can output "
            f"({cheapest:.4f} ms predicted from {ctx.table.path}); raise --latency-budget to at least "
            f"{cheapest:.4f}ms or profile a smaller template"
        )
