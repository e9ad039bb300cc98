"""CTNAS settings (Chen et al. 2021, Algorithm 1, appendix B-C, G) and presets.

``nasdeploy strategies ctnas`` lists them; ``--set key=value`` changes one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nasdeploy.errors import NasDeployError
from nasdeploy.search.settings import setting


@dataclass
class CTNASConfig:
    # ---- Algorithm 1 step 1: supernet labels (appendix B, DARTS space)
    supernet_epochs: int = setting(120, "epochs of the uniform-sampling weight-sharing supernet (SPOS) on one half of the training split (appendix B: 120)")
    supernet_batch_size: int = setting(96, "supernet batch size (appendix B: 96)")
    supernet_lr: float = setting(0.01, "initial SGD learning rate of the supernet, cosine-annealed (appendix B: 0.01)")
    supernet_momentum: float = setting(0.9, "supernet SGD momentum (SPOS; the paper gives none)")
    supernet_weight_decay: float = setting(4e-5, "supernet SGD weight decay (SPOS; the paper gives none)")
    supernet_grad_clip: float | None = setting(5.0, "gradient-norm clip of the supernet (None: off)")
    steps_per_epoch: int | None = setting(None, "cap on supernet mini-batches per epoch (None: the whole half)")
    supernet_input_size: int | None = setting(None, "side the supernet's images are resized to (None: the data's own; the deployment template is unchanged)")
    labelled_archs: int = setting(1000, "M: architectures sampled uniformly (within the budgets) and scored by the supernet (appendix B: 1000)")
    label_epochs: int = setting(10, "label = mean validation accuracy over the last this many supernet epochs (appendix B: 10)")
    val_samples: int | None = setting(None, "cap on validation images per evaluation (None: the whole other half)")
    bn_batches: int = setting(4, "training batches re-estimating a path's batch-norm statistics before it is evaluated (SPOS)")
    holdout: float = setting(0.1, "share of the labelled architectures kept out of NAC training, for its pairwise accuracy and Kendall τ")
    # ---- NAC (§4.1, appendix C)
    nac_hidden: int = setting(128, "width of the two GCN layers (Eq. 7) (authors' code: 128)")
    nac_lr: float = setting(2e-4, "Adam learning rate of the NAC (appendix C: 2e-4)")
    nac_weight_decay: float = setting(5e-4, "Adam weight decay of the NAC (appendix C: 5e-4)")
    nac_batch_size: int = setting(256, "NAC batch size (appendix C: 256)")
    nac_warmup_steps: int = setting(2000, "NAC steps on the labelled pairs before the controller starts (paper: not given)")
    nac_steps: int = setting(1, "NAC steps per iteration on C = labelled ∪ explored pairs (Algorithm 1 step 7)")
    explored_share: float = setting(0.5, "share of each NAC batch drawn from the explored (predicted-label) pairs once there are some (§4.2: 0.5)")
    # ---- controller (§3.2, appendix C/G)
    iterations: int = setting(10000, "T: controller iterations (appendix C: 10k)")
    controller_batch: int = setting(1, "N: architectures per policy-gradient step (appendix G: batch 1, as ENAS)")
    controller_hidden: int = setting(64, "LSTM hidden size of the controller (ENAS-style; the paper gives none)")
    controller_lr: float = setting(3.5e-4, "Adam learning rate of the controller (ENAS's; the paper gives none)")
    entropy_weight: float = setting(5e-4, "weight of the sample entropy added to the reward (appendix C: 5e-4)")
    reward_decay: float = setting(0.95, "decay of the moving-average reward baseline subtracted in REINFORCE (ENAS; 0: none)")
    # ---- data exploration (Algorithm 3) and baseline updating (Algorithm 2)
    explore_samples: int = setting(32, "architectures the controller samples per iteration for data exploration (Algorithm 1 step 12)")
    explore_pairs: int = setting(512, "pairs of them labelled by the NAC per iteration (appendix C: 512)")
    explore_keep: int = setting(256, "K: most confident pairs kept, |p - 0.5| (appendix C: 256)")
    explored_cap: int = setting(200000, "most explored pairs kept in C (oldest dropped first)")
    baseline_every: int = setting(1000, "iterations between baseline updates by Algorithm 2 (appendix C: 1000)")
    checkpoint_every: int = setting(200, "iterations between checkpoints of the controller phase")
    # ---- the evaluated network (appendix D, DARTS space): the deployment template run profiles, retrains, exports
    deploy_layers: int | None = setting(None, "cells of the retrained and deployed DARTS network (None: the table's, else the preset template's; App. D: 18 = 16 normal + 2 reduction)")
    deploy_channels: int | None = setting(None, "its initial channels (None: the table's, else the preset template's; App. D: 44)")


PRESETS: dict[str, dict[str, Any]] = {
    # appendix B/C/G as written: supernet 120 epochs, batch 96, lr 0.01; M = 1000, last 10 epochs; NAC Adam 2e-4 /
    # 5e-4, batch 256; 10k controller iterations of batch 1, baseline every 1000, 512 -> 256 explored pairs;
    # entropy 5e-4. Appendix D's evaluation network, 18 cells x 44 channels, is the deployment template (DARTS
    # space); it retrains with the ``ctnas`` recipe (``ctnas.recipe``, appendix D)
    "paper": {"deploy_layers": 18, "deploy_channels": 44},
    # cpu: `nasdeploy run --strategy ctnas` in <= 15 min on 2 cores with the embedded digits. The supernet sees the
    # digits at their native 8x8 (the data's 32x32 is an upsampling; at 32 px one epoch took 47 s and one labelled
    # evaluation 3 s on the loaded 2-core box) for 40 epochs of 23 batches of 32 at lr 0.05 (more, smaller steps:
    # single-path supernets need many), M = 60 architectures scored over its last 3 epochs on 300 validation images;
    # the controller 300 iterations of 4 samples (a larger lr: 300 steps instead of 10k), baselines every 60. The
    # NAC gets 600 warm-up steps at lr 1e-3 instead of >= 10k at 2e-4: on one run's 60 supernet labels, 300 steps at
    # 2e-4 left it at chance on the held-out pairs (52 %, τ 0.05), 1200 at 2e-4 reached 74 % / 0.49 and 600 at 1e-3
    # 76 % / 0.52; the rest of the NAC and exploration settings are the paper's (exploration 128 -> 64 pairs).
    "cpu": {"supernet_epochs": 40, "supernet_input_size": 8, "supernet_batch_size": 32, "supernet_lr": 0.05,
            "labelled_archs": 60, "label_epochs": 3, "val_samples": 300, "bn_batches": 2,
            "holdout": 0.25, "nac_lr": 1e-3, "nac_warmup_steps": 600, "iterations": 300, "controller_batch": 4, "controller_lr": 5e-3,
            "explore_samples": 16, "explore_pairs": 128, "explore_keep": 64, "baseline_every": 60, "checkpoint_every": 50},
    "tiny": {"supernet_epochs": 2, "supernet_batch_size": 32, "supernet_input_size": 16, "steps_per_epoch": 2, "labelled_archs": 8, "label_epochs": 1,
             "val_samples": 32, "bn_batches": 1, "holdout": 0.25, "nac_hidden": 16, "nac_batch_size": 16,
             "nac_warmup_steps": 5, "iterations": 6, "controller_batch": 2, "controller_hidden": 16, "explore_samples": 4,
             "explore_pairs": 8, "explore_keep": 4, "baseline_every": 3, "checkpoint_every": 2},
}


def validate(config: CTNASConfig) -> None:
    positive = ("supernet_epochs", "supernet_batch_size", "labelled_archs", "label_epochs", "bn_batches", "nac_hidden",
                "nac_batch_size", "iterations", "controller_batch", "controller_hidden", "explore_samples",
                "explore_pairs", "baseline_every", "checkpoint_every", "explored_cap")
    for name in positive:
        if getattr(config, name) < 1:
            raise NasDeployError(f"CTNAS setting {name} must be >= 1, got {getattr(config, name)}")
    for name in ("steps_per_epoch", "val_samples", "supernet_input_size", "deploy_layers", "deploy_channels"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise NasDeployError(f"CTNAS setting {name} must be >= 1 or None, got {value}")
    if config.label_epochs > config.supernet_epochs:
        raise NasDeployError(f"CTNAS setting label_epochs ({config.label_epochs}) must be <= supernet_epochs ({config.supernet_epochs})")
    if config.labelled_archs < 4:
        raise NasDeployError("CTNAS setting labelled_archs must be >= 4: NAC needs pairs to train on and pairs held out")
    if config.explore_samples < 2:
        raise NasDeployError("CTNAS setting explore_samples must be >= 2: data exploration compares pairs of them")
    if not 0 < config.holdout < 1 or not 0 <= config.explored_share < 1 or not 0 <= config.reward_decay < 1:
        raise NasDeployError("CTNAS settings holdout must be in (0, 1), explored_share and reward_decay in [0, 1)")
    if config.nac_warmup_steps < 0 or config.nac_steps < 0 or config.explore_keep < 0 or config.entropy_weight < 0:
        raise NasDeployError("CTNAS settings nac_warmup_steps, nac_steps, explore_keep and entropy_weight must be >= 0")
    if min(config.supernet_lr, config.nac_lr, config.controller_lr) <= 0:
        raise NasDeployError("CTNAS learning rates (supernet_lr, nac_lr, controller_lr) must be positive")
