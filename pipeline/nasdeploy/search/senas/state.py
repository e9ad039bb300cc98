"""What a resumed SE-NAS search needs besides the weights (``SearchState``, saved in ``checkpoint.pt``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from nasdeploy.search.shared.evolution import EvolutionState


@dataclass
class SearchState:
    """Everything a resumed search needs besides the weights."""

    stage: int = 0
    epochs_done: int = 0  # in the current stage
    phase: str = "train"  # "train" | "evolve" | "done"
    alive: list[list[str]] = dataclasses.field(default_factory=list)
    stages: list[dict] = dataclasses.field(default_factory=list)
    evolution: EvolutionState | None = None
    final_accuracy: float | None = None
    elapsed_s: float = 0.0
    stop_reason: str | None = None  # why Algorithm 1's loop ended
