"""The architecture file every search writes and ``train``/``export`` read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasdeploy.errors import NasDeployError, what_is_wrong
from nasdeploy.io import atomic_write_json, read_json
from nasdeploy.spaces.base import SearchSpace, get_space

ARCH_SCHEMA_VERSION = 1


@dataclass
class ArchitectureRecord:
    """A searched architecture with the template it was searched for and its predicted costs.

    JSON form: ``{"schema_version", "space", "template", "arch", "metrics"}`` where ``metrics``
    holds e.g. ``predicted_latency_ms``, ``flops``, ``params``, ``latency_budget_ms``, ``table``.
    """

    space: str
    template: Any
    arch: Any
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def search_space(self) -> SearchSpace:
        return get_space(self.space)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": ARCH_SCHEMA_VERSION,
            "space": self.space,
            "template": self.template.to_dict(),
            "arch": self.search_space.arch_to_json(self.arch),
            "metrics": self.metrics,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], source: str = "architecture") -> "ArchitectureRecord":
        if isinstance(d, dict) and "schema_version" not in d:
            raise NasDeployError(f"{source} has no 'schema_version' field; if it is this nasdeploy's architecture format, "
                                 f"add \"schema_version\": {ARCH_SCHEMA_VERSION}, else re-run 'nasdeploy search'")
        try:
            version = d["schema_version"]
            if version != ARCH_SCHEMA_VERSION:
                raise NasDeployError(
                    f"{source} has schema version {version}, this nasdeploy reads {ARCH_SCHEMA_VERSION}; re-run the search"
                )
            space = get_space(d["space"])
            return cls(
                space=d["space"],
                template=space.template_from_dict(d["template"]),
                arch=space.arch_from_json(d["arch"]),
                metrics=dict(d.get("metrics", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NasDeployError(f"{source} is not a valid architecture file ({what_is_wrong(exc)}); pass a file written by "
                                 "'nasdeploy search'") from None

    def save(self, path: Path | str) -> None:
        atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path | str) -> "ArchitectureRecord":
        return cls.from_json(read_json(path, "architecture file"), source=str(path))

    def build(self):
        return self.search_space.build(self.arch, self.template)
