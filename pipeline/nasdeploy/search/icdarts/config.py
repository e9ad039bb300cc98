"""ICDARTS settings: one dataclass with the paper's defaults (§3.4.2), and the tiny / cpu / paper / paper-mo presets.

``nasdeploy strategies icdarts`` lists every setting with its type, default and help line;
``nasdeploy search --set key=value`` changes one (``search.settings.make_settings`` parses and type-checks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from nasdeploy.errors import NasDeployError
from nasdeploy.search.settings import setting

# η of the tiny and cpu presets of every budget-controlled DARTS strategy (ICDARTS, hierarchical ICDARTS, PCP-DARTS,
# SS PCP-DARTS), chosen once for all seeds and strategies. With the decoupled latency step λ counts α's learning rates
# (``search.shared.latency_control``), so one η suits every task loss (SS PCP-DARTS' L_BT ~10x L_CE included). These
# presets give α 3-24 steps, so λ must reach a few learning rates within one or two of them: η = 5 takes a genotype
# twice its target to λ ≈ 5 after one step. Measured on the tiny preset's cost-model table at issue 27's tight budget
# (seeds 0-2, benchmarks/replacement_table.py): η = 5 left ICDARTS' α-only genotype 8-43 % under the budget, η = 20
# 38-42 % under (an overshoot that costs accuracy for nothing); the coupled step (λ inside Adam's loss, η = 1) left it
# 23 % and 26 % over on seeds 0 and 2 (2 fix-up replacements each).
LAMBDA_ETA_FEW_STEPS = 5.0

PRESETS: dict[str, dict[str, Any]] = {
    # §3.4.2: 30 epochs + 2 pre-training + 1 warm-up per E; SGD 0.08 / 3e-4 / 0.9; Adam 3e-4, β (0.5, 0.999).
    "paper": dict(epochs=30, pretrain_epochs=2, batch_size=64, alpha_lr=3e-4,
                  search_layers=8, search_channels=16, eval_layers=20, eval_channels=36),
    # cpu: ~5 min on one core for the embedded digits with the deployment template (C=16, 8 layers) as E
    # (measured: pre-training ~30 s, each search epoch incl. E's rebuild and warm-up ~90 s).
    "cpu": dict(epochs=3, pretrain_epochs=1, batch_size=32, alpha_lr=6e-3, search_layers=5, search_channels=4,
                steps_per_epoch=8, lambda_eta=LAMBDA_ETA_FEW_STEPS),
    "tiny": dict(epochs=1, pretrain_epochs=1, batch_size=16, alpha_lr=3e-2, search_layers=3, search_channels=4,
                 steps_per_epoch=3, lambda_eta=LAMBDA_ETA_FEW_STEPS),
}
# paper-mo: multiobjective ICDARTS as in Table 4.7 (§4.3): the paper schedule with XDARTS cells (§4.2), Eq. 4.1's
# fixed δ (Table 4.7 has 0.01, 0.05, 0.1; 0.1 gave the lowest latency at the same accuracy; --set delta=... for the
# others) and Algorithm 3 costed by Table 4.6's stem-repeat weights (``latency_weights=table-4.6``; a file from
# ``nasdeploy profile --method stem-repeat`` gives this machine's instead). A fixed δ needs a latency table (to price
# the result). Deployment template and retraining recipe: the paper preset's (``paper_preset``).
PRESETS["paper-mo"] = dict(PRESETS["paper"], discretization="xdarts", delta=0.1, latency_weights="table-4.6")


@dataclass
class ICDARTSConfig:
    epochs: int = setting(6, "search epochs, pre-training excluded (paper 30, cpu 3, tiny 1)")
    pretrain_epochs: int = setting(1, "pre-training epochs of the search network, Eq. 3.4 (paper 2, cpu 1, tiny 1)")
    warmup_epochs: int = setting(1, "warm-up epochs of every new evaluation network E")
    update_every: int | None = setting(None, "S_U: search steps between evaluation-network rebuilds (None: one epoch of steps)")
    steps_per_epoch: int | None = setting(None, "cap on steps per epoch (None: a full pass)")
    batch_size: int = setting(64, "search batch size (paper 64)")
    op_space: str | None = setting(None, "operation space 1..4 | combined, Tables 4.1-4.2 (None: the latency table's, else 3)")
    discretization: str = setting("darts", "darts | idarts | xdarts (§4.2)")
    k: int = setting(2, "inputs kept per node by the darts / idarts rules")
    zero_config: str = setting("V1", "zero-operation configuration V0..V4 (Table 3.1; V1: no zero op)")
    tiers: int | None = setting(None, "tournament tiers T of Algorithm 2 (None: no tournament)")
    max_ops_per_edge: int = setting(4, "O_max: ops per edge set in the tournament's first tier")
    game_epochs: int | None = setting(None, "search epochs of each tournament game (None: max(1, epochs // tiers))")
    distill_lambda: float = setting(1.0, "distillation weight λ of Eq. 3.9 / 3.10 (also accepted as 'lambda')")
    temperature: float = setting(2.0, "distillation temperature T of Eq. 3.7-3.8")
    aux_weight: float = setting(0.4, "weight of the head's loss in L^S and L^E, as in retraining (§3.4.2: 0.4)")
    aux_head: str = setting("cdarts", "cdarts: heads on both reduction cells combined with the final logits, in S and E "
                            "(§3.1.1) | darts: DARTS' tower on E only | none")
    delta: float | None = setting(None, "fixed latency penalty coefficient δ of Eq. 4.1 (δ·P(α), P unnormalised); replaces the controller")
    latency_control: str = setting("lagrangian", "lagrangian: λ·P(α)/P(α_0) in α's loss, λ updated after every α step from the discretised genotype's predicted latency | off")
    lambda_step: str = setting("decoupled", "decoupled: λ's latency step after Adam's, α -= lr·λ·∇P/max|∇P| (each op in proportion to its cost) | adam: λ·P/P(α_0) inside α's loss")
    lambda_eta: float = setting(1.0, "dual step size η of the λ update")
    lambda_margin: float = setting(0.03, "λ aims at budget·(1 − margin)")
    lambda_shrink: float = setting(0.25, "step on slack (under budget) relative to η, ≤ 1")
    lambda_init: float = setting(0.0, "λ before the first α step")
    latency_weights: str | None = setting(None, "stem-repeat weights JSON (profile --method stem-repeat, Table 4.6) as Algorithm 3's costs (None: the table's ms)")
    w_lr: float = setting(0.08, "SGD learning rate of w_S and w_E, cosine-annealed to w_lr_min")
    w_lr_min: float = setting(0.001, "final learning rate of the cosine schedule")
    w_momentum: float = setting(0.9, "SGD momentum of w_S and w_E")
    w_weight_decay: float = setting(3e-4, "SGD weight decay of w_S and w_E")
    w_grad_clip: float = setting(5.0, "gradient-norm clip for w_S and w_E")
    eval_warmup_lr: float | None = setting(None, "SGD rate of each new E's warm-up (None: w_lr)")
    eval_warmup_data: str = setting("val", "split each new E warms up on: val (Algorithm 1's Eq. 3.5) | train (Eq. 3.11's split)")
    alpha_lr: float = setting(3e-4, "Adam learning rate of α (paper 3e-4; cpu 6e-3, tiny 3e-2: far fewer steps)")
    alpha_beta1: float = setting(0.5, "Adam β1 of α")
    alpha_beta2: float = setting(0.999, "Adam β2 of α")
    alpha_weight_decay: float = setting(0.0, "Adam weight decay of α")
    search_layers: int = setting(5, "depth of the search network S (paper 8)")
    search_channels: int = setting(8, "width C of S (paper 16)")
    eval_layers: int | None = setting(None, "depth of the evaluation network E (None: the deployment template's; paper 20)")
    eval_channels: int | None = setting(None, "width of E (None: the deployment template's; paper 36)")
    nodes: int | None = setting(None, "intermediate nodes per cell (None: the deployment template's)")


    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ALIASES = {"lambda": "distill_lambda"}


def validate(config: ICDARTSConfig) -> None:
    from nasdeploy.search.shared.discretize import DISCRETIZATIONS, get_zero_config

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
    from nasdeploy.spaces.heads import AUX_HEADS

    if config.aux_head not in AUX_HEADS:
        raise NasDeployError(f"ICDARTS option aux_head must be one of {', '.join(AUX_HEADS)}, got {config.aux_head!r}")
    if config.eval_warmup_data not in ("val", "train"):
        raise NasDeployError(f"ICDARTS option eval_warmup_data must be val or train, got {config.eval_warmup_data!r}")
    if config.delta is not None and config.delta < 0:
        raise NasDeployError(f"ICDARTS option delta must be >= 0, got {config.delta}")
    from nasdeploy.search.shared.latency_control import ControllerConfig

    ControllerConfig.from_settings(config)  # raises on bad values
