"""The state of CTNAS' controller phase a resumed search needs besides the modules (``LoopState``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoopState:
    """The controller phase's state besides the modules (checkpointed every ``checkpoint_every`` iterations)."""

    iteration: int = 0
    baseline: list[int] = field(default_factory=list)  # decisions of β
    baselines: list[list[int]] = field(default_factory=list)  # B
    last_samples: list[list[int]] = field(default_factory=list)  # S of the latest iteration
    explored_pairs: list[tuple[Any, Any]] = field(default_factory=list)  # D, as (decisions key, decisions key)
    explored_labels: list[int] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    baseline_updates: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"controller_samples": 0, "explore_samples": 0,
                                                            "masked_options": 0, "over_budget_redraws": 0})
    seconds: float = 0.0
