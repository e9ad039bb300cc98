"""Data parallelism on PyTorch's own engine: what ``torchrun`` launches, in one place.

``torchrun --nproc-per-node N -m nasdeploy train|search ...`` starts N copies of the command with the
``env://`` contract (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); multi-node
(``--nnodes``, ``--rdzv-backend c10d``, ``--rdzv-endpoint``) sets the same variables, so nothing here assumes
one machine. :func:`join` checks the request and joins the process group (nccl on CUDA, gloo on CPU); the
returned :class:`Parallel` is what the trainer and the search context use:

* **Global batch, fixed.** ``--batch-size`` (or a strategy's ``batch_size``) is the *global* batch; each of
  the N ranks takes ``batch / N`` of it through a ``DistributedSampler`` and gradients are averaged over the
  ranks, so a step is the mean gradient over the same global batch as one process and the learning rate is
  unchanged (batch-norm statistics are per rank's local batch, as DDP does by default). To train faster on
  more devices at a larger batch, raise ``--batch-size`` and scale ``--lr`` linearly yourself (Goyal et al.
  2017), as the cpu recipes do. A batch N does not divide is refused on every rank before any training.
* **Identical replicas.** The retrainer wraps its network in ``DistributedDataParallel``. The weight-sharing
  searches step several networks and α with their own optimisers, several forward/backward passes per step,
  and rebuild networks as they go, which DDP's reducer does not follow; they call
  :meth:`Parallel.average_gradients` after each backward (the same all-reduce DDP does, one flat buffer per
  call). α, β and SE-NAS's path sampling come from the same seed stream on every rank, the gradients they
  get are averaged, so they stay equal; every checkpoint verifies it (:meth:`Parallel.check_replicas`).
* **Rank 0 writes.** ``io``'s atomic writers write only on rank 0 (:func:`is_main_process`), progress bars and
  info logs are rank 0's; files that are read (checkpoints, tables) are read by rank 0 and broadcast
  (:meth:`Parallel.from_rank0`), so ``--resume`` needs no shared file system.

Not launched by torchrun (or ``--nproc-per-node 1``), everything here is a no-op and a run is exactly the
single-process one.
"""

from __future__ import annotations

import atexit
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn

from nasdeploy.errors import NasDeployError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "gloo", "nccl")


# ------------------------------------------------------------------------------------------ the environment
def launched_world_size() -> int:
    """``WORLD_SIZE`` of the env:// contract torchrun sets; 1 when not launched by it."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def env_rank() -> int:
    return int(os.environ.get("RANK", "0") or 0) if launched_world_size() > 1 else 0


def is_main_process() -> bool:
    """True on rank 0 and in every single-process run (known before the process group is joined)."""
    return env_rank() == 0


# ------------------------------------------------------------------------------------------ one process's place
@dataclass(frozen=True)
class Parallel:
    """This process's place in a data-parallel run; the single-process default makes every method a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: str = "cpu"  # this rank's torch device (under torchrun a CUDA rank uses cuda:LOCAL_RANK)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend, "rank_device": self.device}

    # -------------------------------------------------------------- data
    def local_batch(self, global_batch: int, flag: str = "--batch-size {}") -> int:
        """The per-rank share of a global batch; a world size that does not divide it is refused (``flag`` names
        the option that sets it, for the fix)."""
        if global_batch % self.world_size:
            lower = global_batch // self.world_size * self.world_size
            options = " or ".join(flag.format(b) for b in (lower, lower + self.world_size) if b > 0)
            raise NasDeployError(
                f"the global batch {global_batch} is not divisible by the world size {self.world_size}; pass {options}, "
                f"or launch a number of processes that divides {global_batch}")
        return global_batch // self.world_size

    def loader(self, dataset, batch_size: int, shuffle: bool, seed: int, drop_last: bool = False):
        """A loader over this rank's shard of a *global* batch; one process: exactly ``train.data.make_loader``.

        The ranks' shards of batch k together are batch k of one ``DistributedSampler`` permutation (seeded by
        ``seed``, the same on every rank; ``set_epoch`` adds the epoch); every rank sees as many batches.
        """
        from torch.utils.data import DataLoader, DistributedSampler

        from nasdeploy.train.data import make_loader

        if not self.active:
            return make_loader(dataset, batch_size, shuffle, seed, drop_last)
        local = self.local_batch(batch_size)
        sampler = DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank, shuffle=shuffle, seed=seed,
                                     drop_last=drop_last)
        # a generator of its own, so building a loader never draws from the global stream (kept equal on all ranks)
        return DataLoader(dataset, batch_size=local, sampler=sampler, drop_last=drop_last, num_workers=0,
                          generator=torch.Generator().manual_seed(seed))

    # -------------------------------------------------------------- collectives
    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Average ``.grad`` over the ranks (what DDP's reducer does), one flat all-reduce per call.

        Parameters without a gradient are skipped; they are the same on every rank because every rank runs
        the same graph (same architecture, same sampled path).
        """
        if not self.active:
            return
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        groups: dict[tuple, list[torch.Tensor]] = {}  # one buffer per (device, dtype): SE-NAS keeps idle ops off the GPU
        for p in params:
            if p.grad is not None:
                groups.setdefault((str(p.grad.device), p.grad.dtype), []).append(p.grad)
        for _, grads in sorted(groups.items(), key=lambda item: str(item[0])):  # the same order on every rank
            flat = _flatten_dense_tensors(grads).to(self.device)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= self.world_size
            for grad, mean in zip(grads, _unflatten_dense_tensors(flat, grads)):
                grad.copy_(mean)

    def all_sum(self, values: list[float]) -> list[float]:
        """Sums of per-rank numbers (counts, loss sums) over the ranks."""
        if not self.active:
            return list(values)
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Rank 0's batch-norm running statistics on every rank (DDP syncs them before each forward only)."""
        if not self.active:
            return
        import torch.distributed as dist

        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)

    def from_rank0(self, load: Callable[[], Any]) -> Any:
        """``load()`` on rank 0 only, its value (or its one-line error) on every rank."""
        if not self.active:
            return load()
        import torch.distributed as dist

        payload: list[Any] = [None]
        if self.is_main:
            try:
                payload = [("ok", load())]
            except NasDeployError as exc:  # every rank fails with the same line instead of waiting
                payload = [("error", str(exc))]
        dist.broadcast_object_list(payload, src=0)
        kind, value = payload[0]
        if kind == "error":
            raise NasDeployError(value)
        return value

    def check_replicas(self, tensors: dict[str, torch.Tensor], what: str) -> None:
        """Fail when the ranks' copies differ: per tensor Σx and Σx², exact, compared over the ranks."""
        if not self.active or not tensors:
            return
        import torch.distributed as dist

        names = sorted(tensors)
        sums = torch.stack([torch.stack([tensors[n].detach().double().sum(), tensors[n].detach().double().pow(2).sum()]).cpu()
                            for n in names]).to(self.device)  # .cpu() first: a state may span devices (SE-NAS)
        low, high = sums.clone(), sums.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        differ = [names[i] for i in range(len(names)) if not torch.equal(low[i], high[i])]
        if differ:
            named = ", ".join(differ[:3]) + (f" and {len(differ) - 3} more" if len(differ) > 3 else "")
            raise NasDeployError(f"the {self.world_size} ranks' {what} differ ({named}): the data-parallel replicas "
                                 "diverged; report this as a bug (run with one process meanwhile)")

    def wrap(self, module: nn.Module) -> nn.Module:
        """``DistributedDataParallel(module)`` (rank 0's weights broadcast now, gradients all-reduced in backward)."""
        if not self.active:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [torch.device(self.device).index] if self.device.startswith("cuda") else None
        return DistributedDataParallel(module, device_ids=device_ids)


SINGLE = Parallel()
_joined: Parallel | None = None


def current() -> Parallel:
    """The Parallel this process joined (``SINGLE`` before :func:`join` or without torchrun)."""
    return _joined or SINGLE


def state_tensors(state: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a nested state (dicts, lists) by path, without batch-norm running statistics (per rank)."""
    found: dict[str, torch.Tensor] = {}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not name.endswith(("running_mean", "running_var")):
                found[name] = value
        else:
            found.update(state_tensors(value, name + "."))
    return found


# ------------------------------------------------------------------------------------------ joining
def choose_backend(requested: str, device: str) -> str:
    """nccl for CUDA devices, gloo for CPU (``auto``), or the requested one when the device can use it."""
    if requested not in BACKENDS:
        raise NasDeployError(f"unknown distributed backend {requested!r}; pass --dist-backend {' | '.join(BACKENDS)}")
    cuda = device.startswith("cuda")
    backend = requested if requested != "auto" else ("nccl" if cuda else "gloo")
    if backend == "nccl" and not cuda:
        raise NasDeployError(f"backend nccl cannot use device {device!r} (it reduces CUDA tensors only); "
                             "pass --dist-backend gloo (or auto) for CPU, or --device cuda on GPU hosts")
    if backend == "nccl" and not (torch.cuda.is_available() and torch.distributed.is_nccl_available()):
        raise NasDeployError("backend nccl is not available here (no CUDA device or torch without NCCL); "
                             "pass --dist-backend gloo --device cpu, or run on GPU hosts")
    if cuda and not torch.cuda.is_available():
        raise NasDeployError(f"device {device!r} asked for but no CUDA device is visible; pass --device cpu")
    return backend


def rank_device(device: str, local_rank: int) -> str:
    """Under torchrun a CUDA rank uses cuda:LOCAL_RANK (the index in ``--device`` is ignored, as is usual)."""
    if not device.startswith("cuda"):
        return device
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise NasDeployError(f"local rank {local_rank} needs cuda:{local_rank} but {count} CUDA device(s) are visible; "
                             f"pass --nproc-per-node {count} or fewer")
    return f"cuda:{local_rank}"


def join(device: str = "cpu", backend: str = "auto", global_batch: int | None = None,
         batch_flag: str = "--batch-size {}") -> Parallel:
    """Check the request and join torchrun's process group once per process; single process: ``SINGLE``.

    The checks (backend against device, ``global_batch`` against the world size, named by ``batch_flag``) come
    before the rendezvous, so a bad request is the same one-line error on every rank and no rank waits.
    """
    global _joined
    chosen = choose_backend(backend, device)
    world = launched_world_size()
    if global_batch is not None:
        Parallel(world_size=max(world, 1)).local_batch(global_batch, batch_flag)
    if world <= 1:
        return Parallel(device=device)
    if _joined is not None:
        return _joined
    import torch.distributed as dist

    if not dist.is_available():
        raise NasDeployError("this torch build has no torch.distributed; launch without torchrun")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    this_device = rank_device(device, local_rank)
    if this_device.startswith("cuda"):
        torch.cuda.set_device(this_device)
    if not dist.is_initialized():
        dist.init_process_group(chosen, init_method="env://", rank=rank, world_size=world)
        atexit.register(_leave)
    _joined = Parallel(rank=rank, world_size=world, local_rank=local_rank, backend=chosen, device=this_device)
    log.info("data-parallel: rank %d of %d, backend %s, device %s", rank, world, chosen, this_device)
    return _joined


def _leave() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
