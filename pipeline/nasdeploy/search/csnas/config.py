"""CSNAS settings: one dataclass with the paper's CIFAR-10 values (Nguyen & Chang, §IV-A, appendix A), and presets.

``nasdeploy strategies csnas`` lists them; ``--set key=value`` changes one. The TPE settings keep Optuna's
names (``n_startup_trials``, ``n_ei_candidates``, ``gamma``, ``multivariate``, ``constant_liar``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nasdeploy.errors import NasDeployError
from nasdeploy.search.settings import setting


@dataclass
class CSNASConfig:
    # ---- TPE (Algorithm 1, Eqs. 4-6) and the study
    n_trials: int = setting(100, "trained trials the study runs to, all workers together; repeats of a trained θ do not count (paper: not given)")
    n_startup_trials: int = setting(20, "random trials before TPE models l/g (§IV-A: 20); budget-rejected trials count, as in Optuna")
    n_ei_candidates: int = setting(20000, "points drawn from l(θ) to maximise EI, Eq. 6 (§IV-A: '20K')")
    gamma: float = setting(0.2, "top-γ share of finished trials forming l(θ), Eq. 5 (§IV-A: 20 %); Optuna's gamma(n) = ceil(γ·n)")
    multivariate: bool = setting(True, "Optuna's multivariate TPE, one joint l(θ)/g(θ) (its default; False: per-edge TPE, far more over-budget and repeated proposals under a budget)")
    constant_liar: bool = setting(True, "Optuna's constant liar: running trials of other workers count as bad while sampling")
    storage: str | None = setting(None, "Optuna storage: sqlite:///F.db, postgresql://..., journal:PATH (None: journal file in the out folder)")
    study: str | None = setting(None, "study name; workers naming the same storage and study share it (None: csnas-<digest of the settings>)")
    max_rejections: int = setting(500, "proposals in a row training nothing new (over budget or repeats) before a worker stops; none trained: error")
    # ---- search space (§III-A, §IV-A)
    nodes: int | None = setting(None, "intermediate nodes N per cell (None: the deployment template's, 4; the paper also runs 5)")
    op_space: str | None = setting(None, "op space (None: the latency table's, else 3 = the paper's 7 ops); 'none' is always added")
    # ---- candidate training (§III-B, appendix / §V-B)
    search_layers: int = setting(8, "depth of each candidate while searching (paper 8)")
    search_channels: int = setting(32, "initial channels of each candidate while searching (App. A, CIFAR-10: 32; §V-B.1's 16 is the case study's)")
    search_input_size: int | None = setting(None, "side the search images are resized to for the candidates (None: the data's own)")
    data_fraction: float = setting(0.1, "share of the training split's images searched on, drawn by index (paper 10 %)")
    batch_size: int = setting(150, "mini-batch K: 2(K-1) in-batch negatives per image (paper 150 -> 298)")
    epochs: int = setting(10, "epochs each candidate trains on the search images (paper: not given)")
    steps_per_epoch: int | None = setting(None, "cap on mini-batches per epoch (None: every search image)")
    lr: float = setting(1e-3, "SGD learning rate of each candidate (paper 0.001)")
    momentum: float = setting(0.9, "SGD momentum (paper 0.9)")
    threads: int | None = setting(None, "torch CPU threads while a candidate trains (None: torch's default; cpu preset 1: small nets, run more workers instead)")
    weight_decay: float = setting(0.0, "SGD weight decay (paper: not given)")
    tau: float = setting(0.07, "NCE temperature τ, Eq. 1 (paper 0.07)")
    lam: float = setting(0.5, "λ of Eq. 3, weight of the views term (paper 0.5; also accepted as 'lambda')")
    projection_dim: int = setting(128, "p: output size of the projection heads g and l (paper 128)")
    bank_momentum: float = setting(0.5, "memory-bank EMA: r <- m·r + (1-m)·z (PIRL's 0.5; the paper gives none)")


ALIASES = {"lambda": "lam"}

PRESETS: dict[str, dict[str, Any]] = {
    # §IV-A / appendix A: 20 random starts, EI over 20 000 points, γ = 20 %, K = 150, τ 0.07, λ 0.5, SGD 1e-3 /
    # 0.9, candidates of 8 layers x 32 channels on 10 % of the images. Evaluation (appendix B): the paper
    # template's 20 x 36 network, retrained with the ``csnas`` recipe (``csnas.recipe``: 1200 epochs, ...).
    "paper": {},
    # cpu: `nasdeploy run --strategy csnas` in <= 15 min on 2 cores (embedded digits); shortens the trial count
    # (16, 8 of them random), the candidates (5 layers x 8 channels, images resized to 16x16: the digits are 8x8
    # scans), their schedule (8 epochs = 8 mini-batches of K = 150) and the EI sample (2000); the objective, K,
    # τ, λ, the SGD settings (a larger lr made Eq. 3 rise, not fall, in 8 steps), data share and γ stay the paper's.
    "cpu": {"n_trials": 16, "n_startup_trials": 8, "n_ei_candidates": 2000, "search_layers": 5, "search_channels": 8,
            "search_input_size": 16, "epochs": 8, "threads": 1},
    "tiny": {"n_trials": 3, "n_startup_trials": 2, "n_ei_candidates": 24, "search_layers": 3, "search_channels": 4,
             "search_input_size": 16, "data_fraction": 0.05, "batch_size": 32, "epochs": 1, "steps_per_epoch": 2,
             "projection_dim": 16},
}


def validate(config: CSNASConfig) -> None:
    positive = ("n_trials", "n_ei_candidates", "max_rejections", "search_layers", "search_channels", "batch_size", "epochs",
                "projection_dim")
    for name in positive:
        if getattr(config, name) < 1:
            raise NasDeployError(f"CSNAS setting {name} must be >= 1, got {getattr(config, name)}")
    for name in ("nodes", "steps_per_epoch", "search_input_size", "threads"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise NasDeployError(f"CSNAS setting {name} must be >= 1 or None, got {value}")
    if config.batch_size < 2:
        raise NasDeployError("CSNAS setting batch_size must be >= 2: the negatives of an image are the other images' views")
    if config.n_startup_trials < 0:
        raise NasDeployError(f"CSNAS setting n_startup_trials must be >= 0, got {config.n_startup_trials}")
    checks = (("data_fraction", 0.0, 1.0), ("gamma", 0.0, 1.0), ("lam", 0.0, 1.0), ("bank_momentum", 0.0, 1.0))
    for name, low, high in checks:
        value = getattr(config, name)
        if not low < value <= high and not (name in ("lam", "bank_momentum") and value == 0.0):
            raise NasDeployError(f"CSNAS setting {name} must be in ({low}, {high}], got {value}")
    if config.tau <= 0 or config.lr <= 0:
        raise NasDeployError("CSNAS settings tau and lr must be positive")
    if config.study is not None and not config.study.strip():
        raise NasDeployError("CSNAS setting study must be a non-empty name, e.g. --set study=csnas")
