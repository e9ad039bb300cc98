"""The strategy contract: ``nasdeploy search --strategy NAME`` looks NAME up here and calls ``run``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasdeploy.registry import Registry
from nasdeploy.spaces.record import ArchitectureRecord


@dataclass
class SearchRequest:
    """What every strategy receives. ``options`` holds strategy-specific settings (None = default)."""

    space: str
    out_dir: Path
    table_path: Path | None = None  # LUT; None only when no latency budget/penalty is used
    latency_budget_ms: float | None = None
    flops_budget: float | None = None  # multiply-adds
    data: str = "digits"  # "digits" (embedded), "cifar10:PATH", "cifar100:PATH", "imagefolder:PATH"
    preset: str = "cpu"  # "tiny" | "cpu" | "paper": template and schedule sizes
    seed: int = 0
    resume: bool = False
    device: str = "cpu"  # torch device the search trains on
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchResult:
    record: ArchitectureRecord
    arch_path: Path
    log_path: Path
    extra_files: list[Path] = field(default_factory=list)


class SearchStrategy(ABC):
    name: str
    default_for_spaces: tuple[str, ...] = ()

    @abstractmethod
    def run(self, request: SearchRequest) -> SearchResult:
        """Search, writing ``arch.json``, a log, plots and checkpoints under ``request.out_dir``."""


STRATEGIES: Registry[type[SearchStrategy]] = Registry("search strategy")


def default_strategy(space: str) -> str:
    import nasdeploy.search  # noqa: F401  (registers built-ins)

    for name in STRATEGIES:
        if space in STRATEGIES.get(name).default_for_spaces:
            return name
    return "icdarts"


def get_strategy(name: str) -> SearchStrategy:
    import nasdeploy.search  # noqa: F401

    return STRATEGIES.get(name)()
