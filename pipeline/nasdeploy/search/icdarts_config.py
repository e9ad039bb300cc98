"""ICDARTS settings: one dataclass, per-preset defaults (§3.4.2 for "paper"), and the ``request.options`` parser.

Options (``request.options`` keys; None or missing = default; the CLI's ``--set key=value`` reaches all):

=====================  =========================================================================================
key                    meaning (default)
=====================  =========================================================================================
delta                  fixed latency penalty coefficient δ of Eq. 4.1 (δ·P(α), P unnormalised); replaces the
                       controller (None: λ by dual ascent when there is a budget)
latency_control        "lagrangian" | "off" (``search.latency_control``): λ·P(α)/P(α_0) in α's loss, λ updated
                       after every α step from the discretised genotype's predicted latency ("lagrangian")
lambda_eta             dual step size η of the λ update (1.0)
lambda_margin          λ aims at budget·(1 − margin) (0.03)
lambda_shrink          step on slack relative to η, ≤ 1 (0.25)
lambda_init            λ before the first α step (0.0)
latency_weights        stem-repeat weights JSON (``profile --method stem-repeat``, Table 4.6) as Algorithm 3's
                       costs: P(α) unitless, so a fixed δ means Table 4.7's δ (None: the table's ms)
op_space               operation space "1".."4" | "combined" (Tables 4.1, 4.2) ("3", or the LUT template's)
discretization         "darts" | "idarts" | "xdarts" (§4.2) ("darts")
k                      inputs kept per node by darts / idarts (2)
zero_config            "V0".."V4" (Table 3.1) ("V1": no zero op, the paper's ICDARTS default)
tiers                  tournament tiers T of Algorithm 2 (None: no tournament)
max_ops_per_edge       O_max, ops per edge set in the tournament's first tier (4)
game_epochs            search epochs of each tournament game (None: max(1, epochs // tiers))
epochs                 search epochs, pre-training excluded (paper 30, cpu 3, tiny 1)
pretrain_epochs        pre-training epochs of the search network, Eq. 3.4 (paper 2, cpu 1, tiny 1)
warmup_epochs          warm-up epochs of every new evaluation network (1)
update_every           S_U: search steps between evaluation-network rebuilds (None: one epoch of steps)
steps_per_epoch        cap on steps per epoch (None: a full pass; cpu 8, tiny 3)
lambda                 distillation weight λ of Eq. 3.9 / 3.10 (1.0)
temperature            distillation temperature T of Eq. 3.7-3.8 (2.0)
aux_weight             weight of E's auxiliary-head loss inside L_train^E (0.4, §3.4.2)
batch_size             search batch size (paper 64, cpu 32, tiny 16)
w_lr, w_lr_min         SGD learning rate of w_S and w_E, cosine-annealed to w_lr_min (0.08, 0.001)
w_momentum             SGD momentum (0.9)
w_weight_decay         SGD weight decay (3e-4)
w_grad_clip            gradient-norm clip for w_S and w_E (5.0)
eval_warmup_lr         SGD rate of each new E's warm-up epochs (None: w_lr; E then follows the cosine rate)
alpha_lr               Adam learning rate of α (paper 3e-4; cpu 6e-3 and tiny 3e-2: far fewer steps on CPU)
alpha_beta1, alpha_beta2, alpha_weight_decay   Adam settings of α (0.5, 0.999, 0.0)
search_layers, search_channels   depth and width of the search network S (paper 8/16, cpu 5/4, tiny 3/4)
eval_layers, eval_channels       depth and width of the evaluation network E (paper 20/36; cpu, tiny: the
                                 deployment template's)
nodes                  intermediate nodes per cell (the deployment template's)
=====================  =========================================================================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from nasdeploy.errors import NasDeployError

PRESETS: dict[str, dict[str, Any]] = {
    # §3.4.2: 30 epochs + 2 pre-training + 1 warm-up per E; SGD 0.08 / 3e-4 / 0.9; Adam 3e-4, β (0.5, 0.999).
    "paper": dict(epochs=30, pretrain_epochs=2, batch_size=64, alpha_lr=3e-4,
                  search_layers=8, search_channels=16, eval_layers=20, eval_channels=36),
    # cpu: ~5 min on one core for the embedded digits with the deployment template (C=16, 8 layers) as E
    # (measured: pre-training ~30 s, each search epoch incl. E's rebuild and warm-up ~90 s).
    "cpu": dict(epochs=3, pretrain_epochs=1, batch_size=32, alpha_lr=6e-3, search_layers=5, search_channels=4,
                steps_per_epoch=8),
    "tiny": dict(epochs=1, pretrain_epochs=1, batch_size=16, alpha_lr=3e-2, search_layers=3, search_channels=4,
                 steps_per_epoch=3),
}

# Keys the search CLI names for other strategies: ignored here with a warning instead of an error.
FOREIGN_KEYS = {"lr", "stage_epochs", "shrink_stages", "shrink_k", "merge_threshold", "snapshots",
                "score_samples", "population", "generations", "mutation_prob"}


@dataclass
class ICDARTSConfig:
    epochs: int = 6
    pretrain_epochs: int = 1
    warmup_epochs: int = 1
    update_every: int | None = None
    steps_per_epoch: int | None = None
    batch_size: int = 64
    op_space: str | None = None
    discretization: str = "darts"
    k: int = 2
    zero_config: str = "V1"
    tiers: int | None = None
    max_ops_per_edge: int = 4
    game_epochs: int | None = None
    distill_lambda: float = 1.0
    temperature: float = 2.0
    aux_weight: float = 0.4
    delta: float | None = None
    latency_control: str = "lagrangian"
    lambda_eta: float = 1.0
    lambda_margin: float = 0.03
    lambda_shrink: float = 0.25
    lambda_init: float = 0.0
    latency_weights: str | None = None
    w_lr: float = 0.08
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    w_grad_clip: float = 5.0
    eval_warmup_lr: float | None = None
    alpha_lr: float = 3e-4
    alpha_beta1: float = 0.5
    alpha_beta2: float = 0.999
    alpha_weight_decay: float = 0.0
    search_layers: int = 5
    search_channels: int = 8
    eval_layers: int | None = None
    eval_channels: int | None = None
    nodes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


OPTION_ALIASES = {"lambda": "distill_lambda"}


def _coerce(name: str, value: Any, current: Any, annotation: str) -> Any:
    if value is None:
        return None
    try:
        if "float" in annotation:
            return float(value)
        if "int" in annotation:
            if float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        return str(value)
    except (TypeError, ValueError):
        raise NasDeployError(f"ICDARTS option {name}={value!r} is not a valid {annotation}; pass e.g. {name}={current}") from None


def make_config(preset: str, options: dict[str, Any], log=None) -> ICDARTSConfig:
    """Defaults < preset < ``options``; unknown keys fail with the list of valid ones."""
    if preset not in PRESETS:
        raise NasDeployError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    config = ICDARTSConfig(**PRESETS[preset])
    types = {f.name: str(f.type) for f in fields(ICDARTSConfig)}
    for key, value in (options or {}).items():
        name = OPTION_ALIASES.get(key, key)
        if name not in types:
            if key in FOREIGN_KEYS:
                if log is not None:
                    log.warning("option %r is not used by ICDARTS; ignored", key)
                continue
            valid = ", ".join(sorted(set(types) - set(OPTION_ALIASES.values()) | set(OPTION_ALIASES)))
            raise NasDeployError(f"unknown ICDARTS option {key!r}; valid options: {valid}")
        if value is None:
            continue
        setattr(config, name, _coerce(key, value, getattr(config, name), types[name]))
    validate(config)
    return config


def validate(config: ICDARTSConfig) -> None:
    from nasdeploy.search.discretize import DISCRETIZATIONS, get_zero_config

    DISCRETIZATIONS.get(config.discretization)
    config.zero_config = get_zero_config(config.zero_config).name
    positive = ("batch_size", "search_layers", "search_channels", "k", "max_ops_per_edge", "temperature")
    for name in positive:
        if getattr(config, name) <= 0:
            raise NasDeployError(f"ICDARTS option {name} must be positive, got {getattr(config, name)}")
    for name in ("epochs", "pretrain_epochs", "warmup_epochs"):
        if getattr(config, name) < 0:
            raise NasDeployError(f"ICDARTS option {name} must be >= 0, got {getattr(config, name)}")
    for name in ("update_every", "steps_per_epoch", "tiers", "game_epochs", "eval_layers", "eval_channels", "nodes"):
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise NasDeployError(f"ICDARTS option {name} must be positive, got {value}")
    if config.delta is not None and config.delta < 0:
        raise NasDeployError(f"ICDARTS option delta must be >= 0, got {config.delta}")
    from nasdeploy.search.latency_control import ControllerConfig

    ControllerConfig(mode=config.latency_control, eta=config.lambda_eta, margin=config.lambda_margin,
                     shrink=config.lambda_shrink, lambda_init=config.lambda_init)  # raises on bad values
