"""Retrain a searched architecture from scratch with its strategy's recipe (``train.recipes``).

Defaults of :class:`TrainConfig` are the ICDARTS/CDARTS recipe (dissertation §3.4.2): SGD (lr 0.025, momentum
0.9, weight decay 5e-4), cosine annealing to 0, batch 128, cutout 16, drop-path 0.3 increased linearly from 0
over the epochs (as in DARTS), auxiliary tower weight 0.4 (cell networks), gradient-norm clipping 5, 600
epochs. ``schedule="linear"`` decays the rate per iteration as lr·(1 − e/T) (SE-NAS §4).

Resumable: a checkpoint is written atomically after every epoch; every epoch reseeds the global RNG,
the augmentation and the shuffle from ``(seed, epoch)``, so ``resume`` reproduces an uninterrupted run
bit for bit (same weights, same metrics apart from wall-clock times).

Data-parallel under ``torchrun`` (``nasdeploy.distributed``): the network is wrapped in DistributedDataParallel,
``batch_size`` is the global batch (each rank takes batch / N through a DistributedSampler, learning rate
unchanged), the test set is split over the ranks and the counts summed, rank 0 writes the files and the checkpoint
is read by rank 0 and broadcast. Rank r > 0 draws drop-path masks from its own stream (seed mixed with r), so
the ranks' halves of a batch are not dropped alike.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nasdeploy import distributed
from nasdeploy.errors import NasDeployError
from nasdeploy.io import atomic_torch_save, atomic_write_json, load_checkpoint
from nasdeploy.progress import progress_bar
from nasdeploy.spaces.record import ArchitectureRecord
from nasdeploy.train.config import TrainConfig
from nasdeploy.train.recipes import recipe_source
from nasdeploy.train.data import load_dataset, make_loader, set_epoch

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
METRICS = "metrics.json"
METRICS_SCHEMA_VERSION = 1

SCHEDULES = ("cosine", "linear")


def preset_config(preset: str = "paper", recipe: str = "icdarts", **overrides: Any) -> TrainConfig:
    """TrainConfig of ``recipe`` for a schedule preset ("tiny", "cpu", "paper"); ``None`` overrides are ignored."""
    from nasdeploy.train.recipes import recipe_config

    return recipe_config(recipe, preset, **overrides)


OPTIMIZERS = ("sgd", "adam")


def make_optimizer(model, config: TrainConfig):
    """The recipe's optimiser: SGD with momentum (DARTS family) or Adam (SS PCP-DARTS' retraining, §III-B)."""
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, betas=tuple(config.adam_betas),
                                weight_decay=config.weight_decay)
    if config.optimizer != "sgd":
        raise NasDeployError(f"unknown optimizer {config.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def make_scheduler(optimizer, config: TrainConfig, batches_per_epoch: int):
    """Cosine annealing stepped per epoch (§3.4.2), or lr·(1 − e/T) stepped per iteration (SE-NAS §4)."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs, eta_min=config.lr_min)
    if config.schedule == "linear":
        total = max(config.epochs * batches_per_epoch, 1)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: max(0.0, 1.0 - e / total))
    raise NasDeployError(f"unknown schedule {config.schedule!r}; choose one of: {', '.join(SCHEDULES)}")


# ---------------------------------------------------------------- pure pieces


def drop_path_at(epoch: int, epochs: int, drop_path: float) -> float:
    """DARTS schedule: drop-path probability grows linearly from 0 to ``drop_path`` over training."""
    return drop_path * epoch / max(epochs, 1)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def rank_seed(seed: int, rank: int) -> int:
    """Rank 0 (and a single process) keeps ``seed``; other ranks get their own global stream (drop-path masks)."""
    if rank == 0:
        return seed
    from nasdeploy.seeds import mix_seed

    return mix_seed(seed, rank)


def shuffle_for_epoch(loader, seed: int, epoch: int) -> None:
    """Reseed the shuffle for ``epoch``: the loader's generator, or the DistributedSampler's epoch (whose base
    seed is ``epoch_seed(seed, 0)``, so both give the permutation of ``epoch_seed(seed, epoch)``)."""
    from torch.utils.data import DistributedSampler

    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    else:
        loader.generator.manual_seed(epoch_seed(seed, epoch))


def split_outputs(output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logits, aux)`` from a network that may or may not return an auxiliary prediction."""
    if isinstance(output, (tuple, list)):
        return output[0], (output[1] if len(output) > 1 else None)
    return output, None


def training_loss(logits: torch.Tensor, aux: torch.Tensor | None, target: torch.Tensor, aux_weight: float) -> torch.Tensor:
    """Cross-entropy plus the head's cross-entropy weighted by ``aux_weight``: DARTS' tower, or ICDARTS §3.1.1's
    combined output (``spaces.heads``; the same loss as E's in the search)."""
    loss = F.cross_entropy(logits, target)
    if aux is not None and aux_weight > 0:
        loss = loss + aux_weight * F.cross_entropy(aux, target)
    return loss


def train_template(record: ArchitectureRecord, config: TrainConfig, num_classes: int) -> Any:
    """The record's template adapted for retraining: dataset classes, auxiliary tower and drop-path on."""
    template = record.template
    changes: dict[str, Any] = {}
    fields = {f.name for f in dataclasses.fields(template)} if dataclasses.is_dataclass(template) else set()
    if "num_classes" in fields and template.num_classes != num_classes:
        changes["num_classes"] = num_classes
    if "auxiliary" in fields:
        changes["auxiliary"] = config.auxiliary_weight > 0
    if "drop_path" in fields:
        changes["drop_path"] = config.drop_path
    return dataclasses.replace(template, **changes) if changes else template


def inference_params(model: nn.Module) -> int:
    """Parameters of the deployed network: all but the training-only heads (tower, §3.1.1's ``aux_heads``)."""
    aux_ids = set()
    for name, module in model.named_modules():
        if name.split(".")[-1].startswith("aux") or type(module).__name__ == "AuxiliaryHead":
            aux_ids.update(id(p) for p in module.parameters())
    return sum(p.numel() for p in model.parameters() if id(p) not in aux_ids)


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int | None:
    try:
        from nasdeploy.spaces.flops import count_flops as space_count_flops
    except ImportError:  # spaces.flops not available: report FLOPs as unknown rather than fail
        return None
    was_training = model.training
    model.eval()
    try:
        return int(space_count_flops(model, input_shape))
    finally:
        model.train(was_training)


def set_drop_path(model: nn.Module, prob: float) -> None:
    if hasattr(model, "drop_path_prob"):
        model.drop_path_prob = prob


# ---------------------------------------------------------------- loops


def evaluate(model: nn.Module, loader, device: str, parallel: distributed.Parallel = distributed.SINGLE) -> dict[str, float]:
    """Mean loss and accuracy; under torchrun over every rank's part of the data (sums all-reduced)."""
    model.eval()
    total, correct, loss_sum = 0, 0, 0.0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits, _ = split_outputs(model(x))
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            total += len(y)
    loss_sum, correct, total = parallel.all_sum([loss_sum, correct, total])
    return {"loss": loss_sum / max(total, 1), "accuracy": correct / max(total, 1)}


def train_epoch(model, loader, optimizer, config: TrainConfig, bar=None, task=None, scheduler=None,
                parallel: distributed.Parallel = distributed.SINGLE) -> dict[str, float]:
    """One pass; ``scheduler`` (per-iteration schedules only) steps after every batch; statistics over all ranks."""
    model.train()
    total, correct, loss_sum = 0, 0, 0.0
    for step, (x, y) in enumerate(loader):
        if config.max_batches is not None and step >= config.max_batches:
            break
        x, y = x.to(config.device), y.to(config.device)
        optimizer.zero_grad(set_to_none=True)
        logits, aux = split_outputs(model(x))
        loss = training_loss(logits, aux, y, config.auxiliary_weight)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        total += len(y)
        if bar is not None:
            bar.update(task, advance=1, info=f"loss {loss_sum / total:.3f}")
    loss_sum, correct, total = parallel.all_sum([loss_sum, correct, total])
    return {"loss": loss_sum / max(total, 1), "accuracy": correct / max(total, 1)}


# settings that change the trained weights: a checkpoint or result made with other values is not reused
RESUME_KEYS = ("recipe", "schedule", "epochs", "batch_size", "lr", "seed", "cutout", "drop_path", "auxiliary_weight",
               "weight_decay", "optimizer")


def check_resumable(state: dict, config: TrainConfig, record_json: dict, path: Path) -> None:
    saved = state.get("config", {})
    for key in RESUME_KEYS:
        if saved.get(key) != getattr(config, key):
            raise NasDeployError(
                f"checkpoint {path} was made with {key}={saved.get(key)!r}, not {getattr(config, key)!r}; "
                "pass the same settings to resume, or drop --resume to start again"
            )
    if state.get("record") != record_json:
        raise NasDeployError(f"checkpoint {path} is for another architecture; drop --resume or use another --out folder")


def _set_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise NasDeployError(f"no CUDA device {device!r} on this machine; use --device cpu or run on a GPU host")


def train_architecture(
    record: ArchitectureRecord,
    data_spec: str,
    config: TrainConfig,
    out_dir: Path | str,
    resume: bool = False,
) -> dict[str, Any]:
    """Retrain ``record`` on ``data_spec``; writes OUT/checkpoint.pt (each epoch), model.pt, metrics.json.

    Returns the metrics dict (also in ``metrics.json``). Under torchrun every rank returns it; rank 0 writes.
    """
    return train_model(record, data_spec, config, out_dir, resume)[1]


def train_model(record: ArchitectureRecord, data_spec: str, config: TrainConfig, out_dir: Path | str,
                resume: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`train_architecture` that also hands back the trained network (this rank's replica)."""
    if config.threads is None:
        return _train_model(record, data_spec, config, out_dir, resume)
    from nasdeploy.hardware.torch_backend import torch_threads

    with torch_threads(config.threads):
        return _train_model(record, data_spec, config, out_dir, resume)


def resume_state(checkpoint_path: Path, config: TrainConfig, record_json: dict, parallel: distributed.Parallel) -> dict | None:
    """The checkpoint to continue from (None: start at epoch 0); read by rank 0, the same on every rank."""
    def load() -> dict | None:
        if not checkpoint_path.is_file():
            return None
        state = load_checkpoint(checkpoint_path, "training checkpoint")
        check_resumable(state, config, record_json, checkpoint_path)
        return state

    return parallel.from_rank0(load)


def _train_model(record: ArchitectureRecord, data_spec: str, config: TrainConfig, out_dir: Path | str,
                 resume: bool) -> tuple[nn.Module, dict[str, Any]]:
    out_dir = Path(out_dir)
    _set_device(config.device)
    # backend and batch are checked before the rendezvous: a bad request is the same line on every rank
    parallel = distributed.join(config.device, config.dist_backend, config.batch_size)
    config = dataclasses.replace(config, device=parallel.device)
    if config.epochs < 1:
        raise NasDeployError(f"epochs must be at least 1, got {config.epochs}; pass e.g. --epochs 10")
    if parallel.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    input_size = getattr(record.template, "input_size", None)
    train_set, info = load_dataset(data_spec, train=True, input_size=input_size, augment=True, cutout=config.cutout, seed=config.seed)
    test_set, _ = load_dataset(data_spec, train=False, input_size=input_size)
    template = train_template(record, config, info.num_classes)
    trained = ArchitectureRecord(record.space, template, record.arch, dict(record.metrics))
    record_json = record.to_json()

    torch.manual_seed(config.seed)
    net = trained.build().to(config.device)
    optimizer = make_optimizer(net, config)
    # reseeded every epoch (shuffle_for_epoch); a DistributedSampler's seed + epoch is then epoch_seed(seed, epoch)
    train_loader = parallel.loader(train_set, config.batch_size, shuffle=True, seed=epoch_seed(config.seed, 0))
    batches = len(train_loader) if config.max_batches is None else min(len(train_loader), config.max_batches)
    scheduler = make_scheduler(optimizer, config, batches)
    per_batch = scheduler if config.schedule == "linear" else None
    test_loader = make_loader(shard(test_set, parallel), max(config.batch_size, 256), shuffle=False, seed=0)

    history: list[dict[str, Any]] = []
    start_epoch, train_time = 0, 0.0
    checkpoint_path = out_dir / CHECKPOINT
    state = resume_state(checkpoint_path, config, record_json, parallel) if resume else None
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, start_epoch, train_time = state["history"], state["epoch"] + 1, state["train_time_s"]
        log.info("resuming %s from epoch %d/%d", checkpoint_path, start_epoch, config.epochs)
        if state.get("world_size", 1) != parallel.world_size:
            log.warning("checkpoint written by %d process(es), resumed by %d: same global batch, but the remaining epochs "
                        "shuffle and normalise batches differently than an uninterrupted run", state.get("world_size", 1),
                        parallel.world_size)
    elif resume:
        log.info("no checkpoint in %s; starting from epoch 0", out_dir)
    model = parallel.wrap(net)  # DDP: rank 0's weights on every rank, gradients averaged in backward

    with progress_bar() as bar:
        epochs_task = bar.add_task("retrain", total=config.epochs, completed=start_epoch, info="")
        for epoch in range(start_epoch, config.epochs):
            began = time.perf_counter()
            # reseed everything from (seed, epoch): a resumed epoch equals the uninterrupted one
            seed = rank_seed(epoch_seed(config.seed, epoch), parallel.rank)
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            shuffle_for_epoch(train_loader, config.seed, epoch)
            set_epoch(train_set, epoch)
            set_drop_path(net, drop_path_at(epoch, config.epochs, config.drop_path))
            lr = scheduler.get_last_lr()[0]
            batch_task = bar.add_task(f"epoch {epoch + 1}", total=batches, info="")
            train_stats = train_epoch(model, train_loader, optimizer, config, bar, batch_task, per_batch, parallel)
            bar.remove_task(batch_task)
            if per_batch is None:
                scheduler.step()
            parallel.broadcast_buffers(net)  # every rank evaluates (and rank 0 saves) the same batch-norm statistics
            test_stats = evaluate(net, test_loader, config.device, parallel)
            seconds = time.perf_counter() - began
            train_time += seconds
            history.append({
                "epoch": epoch + 1, "lr": lr, "drop_path": drop_path_at(epoch, config.epochs, config.drop_path),
                "train_loss": train_stats["loss"], "train_accuracy": train_stats["accuracy"],
                "test_loss": test_stats["loss"], "test_accuracy": test_stats["accuracy"], "time_s": seconds,
            })
            checkpoint = {
                "model": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "epoch": epoch, "history": history, "train_time_s": train_time,
                "config": config.to_dict(), "record": record_json, "world_size": parallel.world_size,
            }
            parallel.check_replicas(distributed.state_tensors(checkpoint), "weights")
            atomic_torch_save(checkpoint, checkpoint_path)  # rank 0 only (io)
            bar.update(epochs_task, advance=1, info=f"test acc {test_stats['accuracy']:.3f}")
            log.info("epoch %d/%d loss %.4f train acc %.4f test acc %.4f (%.1fs)", epoch + 1, config.epochs,
                     train_stats["loss"], train_stats["accuracy"], test_stats["accuracy"], seconds)

    net.eval()
    input_shape = (1, info.channels, info.input_size, info.input_size)
    final = history[-1]
    metrics = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "test_accuracy": final["test_accuracy"],
        "test_loss": final["test_loss"],
        "train_accuracy": final["train_accuracy"],
        "params": inference_params(net),
        "flops": count_flops(net, input_shape),
        "train_time_s": train_time,
        "epochs": history,
        "input_shape": list(input_shape),
        "data": {"spec": data_spec, **info.to_dict()},
        "config": config.to_dict(),  # every value of the recipe, its name in config.recipe
        "recipe_source": recipe_source(config.recipe),
        "search_metrics": record.metrics,
    }
    if parallel.active:
        metrics["distributed"] = {**parallel.describe(), "local_batch": parallel.local_batch(config.batch_size)}
    atomic_torch_save({
        "record": record_json,  # as searched: predicts latency with the search's table
        "train_record": trained.to_json(),  # as built for training: export rebuilds this one
        "state_dict": net.state_dict(),
        "input_shape": list(input_shape),
        "data": {"spec": data_spec, **info.to_dict()},
        "metrics": {k: v for k, v in metrics.items() if k != "epochs"},
    }, out_dir / MODEL)
    atomic_write_json(out_dir / METRICS, metrics)
    log.info("retrained: test accuracy %.4f, %d params -> %s", metrics["test_accuracy"], metrics["params"], out_dir / MODEL)
    return net, metrics


def shard(dataset, parallel: distributed.Parallel):
    """Every N-th sample from this rank's index on (no padding: evaluation counts each test image once)."""
    if not parallel.active:
        return dataset
    from torch.utils.data import Subset

    return Subset(dataset, range(parallel.rank, len(dataset), parallel.world_size))


def load_trained_model(path: Path | str) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network saved by :func:`train_architecture` in eval mode, with its saved payload."""
    payload = load_checkpoint(path, "trained model")
    if not isinstance(payload, dict) or "state_dict" not in payload or "train_record" not in payload:
        raise NasDeployError(f"{path} is not a model.pt written by 'nasdeploy train'; pass OUT/model.pt from a train run")
    record = ArchitectureRecord.from_json(payload["train_record"], source=str(path))
    model = record.build()
    model.load_state_dict(payload["state_dict"])
    model.eval()
    set_drop_path(model, 0.0)
    return model, payload
