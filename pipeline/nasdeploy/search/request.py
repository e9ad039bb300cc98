"""What a search is asked (``SearchRequest``), what it returns (``SearchResult``) and the strategies it can name
(``STRATEGIES``, filled by ``@STRATEGIES.register`` in each strategy's folder).

Apart from ``search.base`` (the strategy contract, which re-exports all three) so that ``search.context`` can use
them without importing the contract that builds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasdeploy.latency.trust import TablePolicy
from nasdeploy.registry import Registry
from nasdeploy.spaces.record import ArchitectureRecord


@dataclass
class SearchRequest:
    """What the user asked for. ``options`` holds strategy settings (``--set key=value``; None = preset default)."""

    space: str
    out_dir: Path
    table_path: Path | None = None  # LUT; None: this machine's table when a budget needs one (profiled if absent)
    latency_budget_ms: float | None = None
    flops_budget: float | None = None  # multiply-adds
    data: str = "digits"  # "digits" (embedded), "cifar10:PATH", "cifar100:PATH", "imagefolder:PATH"
    preset: str = "cpu"  # "tiny" | "cpu" | "paper": template and schedule sizes
    seed: int = 0
    resume: bool = False
    device: str = "cpu"  # torch device the search trains on
    options: dict[str, Any] = field(default_factory=dict)
    runtime: str | None = None  # runtime of the table looked up / profiled without table_path; None: the device's best
    table_root: Path | None = None  # None: latency.table.table_root() (the user cache, $NASDEPLOY_TABLE_ROOT)
    # how a reused table is spot-checked on this machine (tolerance, --recalibrate, --trust-table)
    table_policy: TablePolicy = field(default_factory=TablePolicy)
    dist_backend: str = "auto"  # under torchrun: nccl on CUDA, gloo on CPU (nasdeploy.distributed)


@dataclass
class SearchResult:
    record: ArchitectureRecord
    arch_path: Path
    log_path: Path
    extra_files: list[Path] = field(default_factory=list)


# classes of ``search.base.SearchStrategy``
STRATEGIES: Registry[type[SearchStrategy]] = Registry("search strategy")  # noqa: F821  (an annotation only)
