"""The contract every search space implements, and the op-instance key shared with the latency tables."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from nasdeploy.registry import Registry

if TYPE_CHECKING:
    from nasdeploy.spaces.graph import ArchGraph


@dataclass(frozen=True)
class OpInstance:
    """One operation at one shape: the unit a latency table stores.

    ``op`` is a registry name (``"sep_conv_3x3"``, ``"mb5_e6"``) or a fixed part of the template
    (``"stem"``, ``"preprocess_1x1"``, ``"factorized_reduce"``, ``"classifier"``...).
    ``h``/``w`` are the *input* spatial size; ``stride`` is the op's stride; ``c_in``/``c_out`` channels.
    ``extra`` holds anything else that changes the op's cost (e.g. ``"e6"``), or ``""``.
    """

    op: str
    c_in: int
    c_out: int
    h: int
    w: int
    stride: int = 1
    extra: str = ""

    def key(self) -> str:
        tail = f"|{self.extra}" if self.extra else ""
        return f"{self.op}|{self.c_in}>{self.c_out}|{self.h}x{self.w}|s{self.stride}{tail}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OpInstance":
        return cls(**d)


class SearchSpace(ABC):
    """A family of networks: templates, architecture encodings, builders and op enumeration.

    ``template`` objects are dataclasses with ``to_dict()``; ``arch`` objects are the space's own
    encoding with JSON round-trip via ``arch_to_json``/``arch_from_json``.
    """

    name: str

    @abstractmethod
    def default_template(self, preset: str = "cpu", **overrides: Any) -> Any:
        """A template for ``preset`` in {"tiny", "cpu", "paper"}, fields overridden by keyword."""

    @abstractmethod
    def template_from_dict(self, d: dict[str, Any]) -> Any: ...

    @abstractmethod
    def sample(self, template: Any, rng: random.Random) -> Any:
        """A uniformly random architecture valid for ``template``."""

    @abstractmethod
    def build(self, arch: Any, template: Any) -> nn.Module:
        """The concrete network (``forward(x) -> logits``; in train mode with an auxiliary head it may return ``(logits, aux)``)."""

    @abstractmethod
    def op_instances(self, template: Any) -> list[OpInstance]:
        """Every distinct op instance any architecture of this template can contain, fixed parts included."""

    @abstractmethod
    def arch_op_instances(self, arch: Any, template: Any) -> list[OpInstance]:
        """The op instances one architecture contains, with repetition, fixed parts included."""

    def merged_work(self, arch: Any, template: Any) -> dict[str, float]:
        """Thousands of input elements of work ``arch`` repeats on one tensor, which a graph optimiser that eliminates
        common subexpressions computes once, by overhead-model feature (``spaces.ops.shared_work``,
        ``latency.overhead``). Empty for spaces whose ops never share an input."""
        return {}

    @abstractmethod
    def build_op(self, inst: OpInstance) -> nn.Module:
        """A module computing exactly ``inst`` (used by the profiler to measure it in isolation)."""

    @abstractmethod
    def arch_to_json(self, arch: Any) -> dict[str, Any]: ...

    @abstractmethod
    def arch_from_json(self, d: dict[str, Any]) -> Any: ...

    def arch_graph(self, arch: Any, template: Any) -> "ArchGraph":
        """``arch`` as a DAG of operations (``spaces.graph.ArchGraph``: adjacency + one-hot node ops, CTNAS §4.1)."""
        from nasdeploy.errors import NasDeployError

        raise NasDeployError(f"space {self.name!r} cannot encode its architectures as graphs; graph-based "
                             "strategies (ctnas) need SearchSpace.arch_graph")

    def draw(self, arch: Any, template: Any, path: Path, title: str = "") -> Path:
        """Draw ``arch`` as a PNG at ``path`` (written atomically); returns the path."""
        raise NotImplementedError(f"space {self.name!r} has no drawing")


SPACES: Registry[type[SearchSpace]] = Registry("search space")


def get_space(name: str) -> SearchSpace:
    """Instantiate the registered space ``name`` (importing the built-in spaces first)."""
    import nasdeploy.spaces  # noqa: F401  (registers built-ins)

    return SPACES.get(name)()
