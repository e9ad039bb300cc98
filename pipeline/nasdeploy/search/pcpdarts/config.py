"""PCP-DARTS / SS PCP-DARTS settings (Deevi et al. 2024) and their tiny / cpu / paper presets.

``nasdeploy strategies pcp-darts`` (or ``ss-pcp-darts``) lists every setting; ``--set key=value`` changes one.
``pcp-darts`` trains α on cross-entropy; ``ss-pcp-darts`` adds the Barlow Twins settings (``ssf``, ``bt_lambda``,
projector) of its subclass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from nasdeploy.errors import NasDeployError
from nasdeploy.search.shared.barlow_twins import LAMBDA_ZBONTAR
from nasdeploy.search.icdarts.config import LAMBDA_ETA_FEW_STEPS
from nasdeploy.search.settings import setting

VAL_SPLITS = ("halves", "test")

PRESETS: dict[str, dict[str, Any]] = {
    # §III-B: SGD 0.025 cosine, batch 256, weights on the 50K training images and α, β on the 10K test images;
    # §IV-A.1: the 7 ops of op space 3 (+ P-DARTS' zero op: 8 -> 5 -> 3); P-DARTS' stages 5 -> 11 -> 17 cells,
    # 25 epochs each, skip-connect dropout 0.0 / 0.4 / 0.7 (CIFAR-10); α frozen for the first 15 epochs of a
    # phase (§IV-A.2, progressive case); PC-DARTS' K = 4, C = 16.
    "paper": dict(phase_layers=[5, 11, 17], keep_ops=[5, 3], skip_dropout=[0.0, 0.4, 0.7], epochs_per_phase=25,
                  frozen_epochs=15, batch_size=256, search_channels=16, partial_channels=4, val_split="test"),
    # cpu: about 3-4 min on one core for the embedded digits (phase depths scaled to the 8-cell cpu template,
    # 3 epochs per phase of 8 steps); α learns 10x faster than the paper's rate: it gets 16 steps a phase, not 2,000.
    # cpu and tiny search on the training split's halves (val_split "halves", our choice): the digits' 300 test
    # images are the only measure of the retrained net `nasdeploy run` reports, so α does not select on them
    # lambda_eta: ICDARTS' few-step η (icdarts.config.LAMBDA_ETA_FEW_STEPS, chosen once for the family)
    "cpu": dict(phase_layers=[3, 5, 8], keep_ops=[5, 3], skip_dropout=[0.0, 0.2, 0.4], epochs_per_phase=3,
                frozen_epochs=1, batch_size=32, search_channels=8, partial_channels=4, steps_per_epoch=8,
                alpha_lr=6e-3, lambda_eta=LAMBDA_ETA_FEW_STEPS),
    # tiny: 4 α steps a phase (measured on a hand-made table: with 2, λ has acted on one step only and the
    # α/β genotype was the same whatever the budget)
    "tiny": dict(phase_layers=[3, 4], keep_ops=[4], skip_dropout=[0.0, 0.3], epochs_per_phase=2, frozen_epochs=1,
                 batch_size=8, search_channels=4, partial_channels=2, steps_per_epoch=4, alpha_lr=3e-2,
                 lambda_eta=LAMBDA_ETA_FEW_STEPS),
}
# SS PCP-DARTS: the same, with a projector narrower than Zbontar et al.'s 8192 (paper: 512, cpu 64, tiny 16). Its
# α loss (L_BT ~10x L_CE) needs no η of its own: the decoupled latency step counts λ in α's learning rates, whatever
# the loss's scale (search.shared.latency_control).
SS_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(PRESETS["paper"], projector_dim=512),
    "cpu": dict(PRESETS["cpu"], projector_dim=64),
    "tiny": dict(PRESETS["tiny"], projector_dim=16),
}


@dataclass
class PCPDARTSConfig:
    phase_layers: list = setting([5, 11, 17], "cells of the search network in each phase (P-DARTS 5 -> 11 -> 17)")
    keep_ops: list = setting([5, 3], "ops kept per edge after each phase but the last (P-DARTS 8 -> 5 -> 3: [5, 3])")
    skip_dropout: list = setting([0.0, 0.4, 0.7], "initial skip-connect dropout rate of each phase (P-DARTS, CIFAR-10)")
    skip_dropout_decay: float = setting(0.2, "P-DARTS' decay: rate·exp(-decay·(e - frozen)) once α trains")
    max_skips: int | None = setting(2, "P-DARTS' cap on skip_connect in the final normal cell (None: no cap)")
    epochs_per_phase: int = setting(25, "search epochs of each phase (P-DARTS 25)")
    frozen_epochs: int = setting(15, "epochs at the start of each phase with α and β frozen (paper 15)")
    steps_per_epoch: int | None = setting(None, "cap on steps per epoch (None: a full pass)")
    val_split: str = setting("halves", "α and β's data: 'test' (§III-B's 50K / 10K: w on the whole training split, α, β on "
                                       "the test split) | 'halves' (the training split's two halves, as DARTS)")
    batch_size: int = setting(256, "search batch size (paper 256)")
    partial_channels: int = setting(4, "K: each mixed op sees a random 1/K of the channels (PC-DARTS K = 4)")
    search_channels: int = setting(16, "width C of the search network (divisible by K)")
    op_space: str | None = setting(None, "operation space 1..4 | combined (None: the latency table's, else 3 = the paper's 7 ops)")
    zero_config: str = setting("V0", "zero op: V0 = 'none' mixed in the search, never selected (P-DARTS); V1 = none")
    w_lr: float = setting(0.025, "SGD learning rate of the weights, cosine-annealed over each phase (paper 0.025)")
    w_lr_min: float = setting(0.0, "final learning rate of each phase's cosine schedule")
    w_momentum: float = setting(0.9, "SGD momentum of the weights")
    w_weight_decay: float = setting(3e-4, "SGD weight decay of the weights")
    w_grad_clip: float = setting(5.0, "gradient-norm clip of the weights")
    alpha_lr: float = setting(6e-4, "Adam learning rate of α and β (PC-DARTS / P-DARTS 6e-4)")
    alpha_beta1: float = setting(0.5, "Adam β1 of α and β")
    alpha_beta2: float = setting(0.999, "Adam β2 of α and β")
    alpha_weight_decay: float = setting(1e-3, "Adam weight decay of α and β")
    latency_control: str = setting("lagrangian", "lagrangian: λ·P(α, β)/P(α_0, β_0) in α's loss, λ by dual ascent on the "
                                   "discretised genotype's predicted latency (as ICDARTS) | off")
    lambda_step: str = setting("decoupled", "decoupled: λ's latency step after Adam's, α -= lr·λ·∇P/max|∇P| (each op in proportion to its cost) | adam: λ·P/P(α_0) inside α's loss")
    lambda_eta: float = setting(1.0, "dual step size η of the λ update")
    lambda_margin: float = setting(0.03, "λ aims at budget·(1 − margin)")
    lambda_shrink: float = setting(0.25, "step on slack (under budget) relative to η, ≤ 1")
    lambda_init: float = setting(0.0, "λ before the first α step")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def self_supervised_factor(self) -> float:
        return 0.0  # vanilla PCP-DARTS: α on cross-entropy only


@dataclass
class SSPCPDARTSConfig(PCPDARTSConfig):
    ssf: float = setting(0.75, "ss_factor: α's loss is ssf·L_BT + (1 − ssf)·L_CE (§IV-B; 0.75 is Table II's best)")
    bt_lambda: float = setting(LAMBDA_ZBONTAR, "λ of the Barlow Twins redundancy term (Zbontar et al. 5e-3)")
    projector_dim: int = setting(512, "width of the Barlow Twins projector's layers")
    projector_layers: int = setting(3, "layers of the projector (Zbontar et al. 3)")

    @property
    def self_supervised_factor(self) -> float:
        return self.ssf


def validate(config: PCPDARTSConfig) -> None:
    from nasdeploy.search.shared.discretize import get_zero_config
    from nasdeploy.search.shared.latency_control import ControllerConfig

    config.zero_config = get_zero_config(config.zero_config).name
    phases = len(config.phase_layers)
    if phases < 1 or any(not isinstance(n, int) or n < 1 for n in config.phase_layers):
        raise NasDeployError(f"phase_layers must be a list of positive cell counts, got {config.phase_layers}; "
                             "pass e.g. --set phase_layers=[5,11,17]")
    if len(config.keep_ops) != phases - 1 or any(not isinstance(n, int) or n < 1 for n in config.keep_ops) \
            or list(config.keep_ops) != sorted(config.keep_ops, reverse=True):
        raise NasDeployError(f"keep_ops must list {phases - 1} decreasing op counts (one after each phase but the last), "
                             f"got {config.keep_ops}; pass e.g. --set keep_ops=[5,3]")
    if len(config.skip_dropout) != phases or any(not 0 <= float(p) < 1 for p in config.skip_dropout):
        raise NasDeployError(f"skip_dropout must list {phases} rates in [0, 1), got {config.skip_dropout}; "
                             "pass e.g. --set skip_dropout=[0.0,0.4,0.7]")
    for name in ("epochs_per_phase", "batch_size", "partial_channels", "search_channels"):
        if getattr(config, name) < 1:
            raise NasDeployError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.search_channels % config.partial_channels:
        raise NasDeployError(f"partial_channels K = {config.partial_channels} must divide search_channels = "
                             f"{config.search_channels}; pass e.g. --set partial_channels=4 --set search_channels=16")
    if not 0 <= config.frozen_epochs < config.epochs_per_phase:
        raise NasDeployError(f"frozen_epochs must be in [0, epochs_per_phase) so that α trains in every phase, got "
                             f"{config.frozen_epochs} of {config.epochs_per_phase}")
    if config.max_skips is not None and config.max_skips < 0:
        raise NasDeployError(f"max_skips must be >= 0 or None, got {config.max_skips}")
    if config.val_split not in VAL_SPLITS:
        raise NasDeployError(f"unknown val_split {config.val_split!r}; pass --set val_split={' or '.join(VAL_SPLITS)}")
    if config.steps_per_epoch is not None and config.steps_per_epoch < 1:
        raise NasDeployError(f"steps_per_epoch must be positive, got {config.steps_per_epoch}")
    if config.latency_control == "fixed":
        raise NasDeployError("pcp-darts has no fixed δ; use latency_control=lagrangian (with --latency-budget) or off")
    ControllerConfig.from_settings(config)  # raises on bad values
    if isinstance(config, SSPCPDARTSConfig):
        if not 0.0 <= config.ssf <= 1.0:
            raise NasDeployError(f"ssf must be in [0, 1], got {config.ssf}; pass e.g. --set ssf=0.75")
        if config.bt_lambda < 0 or config.projector_dim < 1 or config.projector_layers < 1:
            raise NasDeployError("bt_lambda must be >= 0 and projector_dim, projector_layers >= 1")
