"""Hierarchical ICDARTS settings: every ICDARTS setting (the micro phase runs ICDARTS as it is) plus the macro phase's.

The presets are ICDARTS' with the macro phase's on top. Paper (§6): the micro phases use ICDARTS' parameters; the
macro phases a learning rate of 3e-3 (we read it as γ's, the macro phase's architecture rate: ICDARTS' α rate is
3e-4 and w's 0.08), and version 2 warms each new E_macro up for two epochs instead of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nasdeploy.errors import NasDeployError
from nasdeploy.search.icdarts.config import ALIASES as ICDARTS_ALIASES
from nasdeploy.search.icdarts.config import PRESETS as ICDARTS_PRESETS
from nasdeploy.search.icdarts.config import ICDARTSConfig
from nasdeploy.search.icdarts.config import validate as validate_icdarts
from nasdeploy.search.settings import setting

VERSIONS = (1, 2)

MACRO_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(macro_epochs=30, macro_lr=3e-3),
    # cpu: few γ steps, so a larger rate (as ICDARTS' cpu α rate is 20x the paper's); S_micro 8 cells deep (the
    # paper's) so that version 2's four normal types all occur in it (5 cells hold only 3 normal cells)
    "cpu": dict(macro_epochs=2, macro_lr=3e-2, macro_channels=8, search_layers=8),
    # tiny: η = 10, twice ICDARTS' few-step η: S_micro is 6 cells deep (ICDARTS' tiny 3) for the same 3 α steps, and
    # with η = 5 version 2's α-only genotype was 9.6 % over the tight budget on seed 1 (3 fix-up replacements); with
    # 10 every seed 0-2 of both versions is under it (benchmarks/replacement_table.py, README)
    "tiny": dict(macro_epochs=1, macro_lr=1e-1, macro_channels=4, search_layers=6, lambda_eta=10.0),
}
PRESETS = {name: {**ICDARTS_PRESETS[name], **MACRO_PRESETS[name]} for name in MACRO_PRESETS}
ALIASES = dict(ICDARTS_ALIASES)


@dataclass
class HierarchicalConfig(ICDARTSConfig):
    version: int = setting(1, "1: search each cell's skip input (Figure 6.2) | 2: search cell placement (Figure 6.4)")
    macro_epochs: int = setting(6, "macro-phase search epochs, Algorithm 4 (paper 30, cpu 2, tiny 1)")
    macro_pretrain_epochs: int = setting(0, "macro-phase epochs training w_S alone first (Algorithm 4 has none)")
    macro_lr: float = setting(3e-3, "Adam learning rate of γ (paper 3e-3; cpu 3e-2, tiny 1e-1: far fewer steps)")
    macro_warmup_epochs: int | None = setting(None, "warm-up epochs of every new E_macro (None: 1 for version 1, 2 for version 2, §6)")
    macro_update_every: int | None = setting(None, "S_U of the macro phase: steps between E_macro rebuilds (None: one epoch)")
    macro_channels: int | None = setting(None, "width C of the macro search network S_macro (None: E_macro's)")
    gamma_init: float = setting(0.5, "γ of cell k's i-th nearest skip source starts at -gamma_init·i (nearest heaviest, §6)")
    aux_head: str = setting("darts", "darts: DARTS' tower on E_micro and E_macro | none (§3.1.1's combined heads: "
                            "plain icdarts only, docs/design.md)")

    def macro_warmup(self) -> int:
        if self.macro_warmup_epochs is not None:
            return self.macro_warmup_epochs
        return 2 if self.version == 2 else 1


def validate(config: HierarchicalConfig) -> None:
    validate_icdarts(config)
    if config.version not in VERSIONS:
        raise NasDeployError(f"hierarchical-icdarts version must be 1 or 2, got {config.version}; pass --set version=1")
    if config.tiers:
        raise NasDeployError("hierarchical-icdarts runs the micro phase without the tournament; drop --set tiers")
    if config.aux_head == "cdarts":
        raise NasDeployError("hierarchical-icdarts keeps DARTS' auxiliary tower (its typed and macro search networks have "
                             "no §3.1.1 heads); pass --set aux_head=darts or none")
    for name in ("macro_epochs", "macro_pretrain_epochs"):
        if getattr(config, name) < 0:
            raise NasDeployError(f"hierarchical-icdarts option {name} must be >= 0, got {getattr(config, name)}")
    for name in ("macro_warmup_epochs",):
        value = getattr(config, name)
        if value is not None and value < 0:
            raise NasDeployError(f"hierarchical-icdarts option {name} must be >= 0, got {value}")
    for name in ("macro_update_every", "macro_channels"):
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise NasDeployError(f"hierarchical-icdarts option {name} must be positive, got {value}")
    if config.macro_lr <= 0:
        raise NasDeployError(f"hierarchical-icdarts option macro_lr must be positive, got {config.macro_lr}")
