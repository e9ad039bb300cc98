"""SE-NAS' settings and presets (``nasdeploy strategies senas``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nasdeploy.errors import NasDeployError
from nasdeploy.search.settings import setting
from nasdeploy.search.shared.space_adapters import DARTS_CELLS


@dataclass
class SenasConfig:
    epochs: int | None = setting(None, "first-stage supernet epochs (None: the paper's for the space, §4.3: MobileNet 100, DARTS 200)")
    stage_epochs: int = setting(5, "supernet epochs after each shrink-and-expand stage (§4.3)")
    shrink_stages: int | None = setting(
        None, "shrinking stages (None: Algorithm 1's rule: shrink until the whole space fits one merged child space of "
              "<= T architectures, every layer has one operator, or a stage can remove nothing)")
    val_fraction: float = setting(0.1, "share of the training split held out for scores, shrinking and evolution (§4.1: "
                                       "CIFAR 5,000 of 50,000; the supernet trains on the rest)")
    lr_schedule: str = setting("run", "'run': lr·(1 − e/T) over the iterations of the whole planned search (§4.3); "
                                      "'stage': the same decay restarted at every stage")
    darts_cell: str = setting("paper", "DARTS space: 'paper' (all 14 edges, the op space + none, §3.5) or 'two-inputs' "
                                       "(two sampled inputs per node: DARTS genotypes)")
    shrink_k: int = setting(10, "operators removed per stage, k (§4.3)")
    merge_threshold: int = setting(50, "merge threshold T of the expanding step (§3.4)")
    snapshots: int = setting(10, "weight snapshots K averaged in Eq. 4 (our choice)")
    score_samples: int = setting(1000, "feasible paths per operator for SI, Eq. 5")
    population: int = setting(50, "evolutionary population size")
    generations: int = setting(20, "evolutionary generations")
    mutation_prob: float = setting(0.1, "per-layer mutation probability")
    batch_size: int = setting(1024, "supernet batch size")
    lr: float = setting(0.5, "initial SGD learning rate, decayed linearly (lr_schedule, §4.3)")
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(4e-5, "SGD weight decay")
    bn_batches: int = setting(20, "training batches for batch-norm recalibration of each evaluated path")
    steps_per_epoch: int | None = setting(None, "cap on mini-batches per epoch (None: a whole epoch)")
    val_samples: int | None = setting(None, "cap on validation images (None: all)")
    max_tries: int = setting(100, "rejection-sampling draws before repairing a path to fit the budget")
    final_samples: int = setting(20, "random paths whose mean accuracy is logged as the final supernet accuracy")
    grad_clip: float | None = setting(None, "gradient-norm clip (None: off, as in the paper)")


LR_SCHEDULES = ("run", "stage")

PRESETS: dict[str, dict[str, Any]] = {
    # §4.1/§4.3: 5k-of-50k held out, 100 (MobileNet) or 200 (DARTS) + 5 epochs per stage until Algorithm 1's rule
    # stops, k = 10, T = 50, 1000 paths per operator, SGD 0.5 / 4e-5, batch 1024, lr·(1 − e/T) over the search
    "paper": {},
    # cpu: digits at 32x32, the 9-layer MobileNet cpu template, ~6 min on one core. Shortened: 2 shrink stages of
    # k = 8 (not the stopping rule), T = 12, 10 epochs per later stage, 2 paths per operator, a 10 x 3 evolution,
    # batch 32 at lr 0.05 with gradient clipping (the narrow supernet diverges at 0.5). 100 first-stage epochs on
    # 80 % of the images = the same ~3,700 steps as the former 160 epochs on half; 20 % (299 images) held out.
    "cpu": dict(epochs=100, stage_epochs=10, shrink_stages=2, shrink_k=8, merge_threshold=12, snapshots=4, score_samples=2,
                population=10, generations=3, batch_size=32, lr=0.05, grad_clip=5.0, bn_batches=2, val_fraction=0.2,
                final_samples=8),
    "tiny": dict(epochs=1, stage_epochs=1, shrink_stages=1, shrink_k=3, merge_threshold=4, snapshots=2, score_samples=1,
                 population=4, generations=1, batch_size=16, lr=0.05, bn_batches=1, steps_per_epoch=3, val_samples=32,
                 val_fraction=0.2, final_samples=2),
}


def validate(config: SenasConfig) -> None:
    if min(config.epochs or 1, config.stage_epochs, config.merge_threshold, config.snapshots, config.batch_size,
           config.score_samples) < 1 or config.shrink_k < 0 or (config.shrink_stages or 0) < 0 or config.population < 2:
        raise NasDeployError(
            "SE-NAS settings out of range: epochs, stage_epochs, merge_threshold, snapshots, batch_size and "
            "score_samples must be >= 1, shrink_k and shrink_stages >= 0, population >= 2"
        )
    if not 0.0 < config.val_fraction <= 0.5:
        raise NasDeployError(f"val_fraction {config.val_fraction} is out of range; pass --set val_fraction=0.1 (any value in (0, 0.5])")
    if config.darts_cell not in DARTS_CELLS:
        raise NasDeployError(f"unknown darts_cell {config.darts_cell!r}; pass --set darts_cell={' or '.join(DARTS_CELLS)}")
    if config.lr_schedule not in LR_SCHEDULES:
        raise NasDeployError(f"unknown lr_schedule {config.lr_schedule!r}; pass --set lr_schedule={' or '.join(LR_SCHEDULES)}")
