"""The retraining settings (``TrainConfig``): what a recipe (``train.recipes``) fills in and the trainer runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class TrainConfig:
    """A retraining recipe's settings; the defaults are §3.4.2's (see ``train.recipes`` for each recipe)."""

    recipe: str = "icdarts"
    schedule: str = "cosine"  # "cosine" (per epoch, to lr_min) | "linear" (per iteration, lr·(1 − e/T))
    optimizer: str = "sgd"  # "sgd" (momentum, weight_decay) | "adam" (adam_betas, weight_decay; SS PCP-DARTS §III-B)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    epochs: int = 600
    batch_size: int = 128
    lr: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_min: float = 0.0
    cutout: int = 16
    drop_path: float = 0.3
    auxiliary_weight: float = 0.4  # 0 disables the auxiliary tower
    grad_clip: float = 5.0
    seed: int = 0
    device: str = "cpu"
    max_batches: int | None = None  # cap batches per epoch (smoke tests only)
    threads: int | None = None  # CPU threads for torch (None: torch's default, all cores)
    dist_backend: str = "auto"  # under torchrun: nccl on CUDA, gloo on CPU (nasdeploy.distributed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
