"""The backend contract: measure a module or an ONNX graph at an input shape, return a distribution of times."""

from __future__ import annotations

import statistics
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from nasdeploy.registry import Registry


@dataclass
class MeasureMethod:
    """How a latency is measured; recorded in every table and report."""

    warmup: int = 10
    repeats: int = 50
    threads: int | None = None  # None: the backend fixes and records its own choice
    dtype: str = "float32"
    batch: int = 1
    # Rounds over the whole set of ops / networks, interleaved; a latency is the smallest round median,
    # so a transient disturbance of the machine during one round does not enter the result.
    rounds: int = 1
    # Up to this many rounds when the first ``rounds`` show the machine often in a slow phase (latency.rounds); None: exactly ``rounds``.
    max_rounds: int | None = None
    # "thread": CPU time of the calling thread, "wall": wall clock, "cuda-event": CUDA events; "auto" lets
    # the backend choose ("thread" on CPU with one thread, where the op runs on the calling thread and its
    # thread time equals its wall time on an idle core, but other processes time-slicing the core do not count).
    clock: str = "auto"
    # Time a fixed reference network right before every op or network and express each round's median at the
    # reference's quiet-state speed (``latency.rounds.normalise``): a shared machine's speed moves in phases of
    # seconds to minutes, and an item timed in a slow phase is then scaled back, instead of entering the table slow.
    reference: bool = False
    # How torch runs a module on CUDA: "cuda-graph" replays one captured graph (the regime a deployed engine runs in:
    # no per-kernel launch from Python; eager was 6.7-7.7x slower on small DARTS nets on an H200), "eager" launches
    # each kernel from Python; "auto": cuda-graph on CUDA, eager on CPU. Tables made before this field were eager.
    execution: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Timing:
    """Per-run latencies in milliseconds and their summary statistics."""

    samples_ms: list[float] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)  # wall-clock times, when samples_ms use another clock
    reference_ms: float | None = None  # the reference network's median timed just before (MeasureMethod.reference)

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)

    def percentile(self, q: float) -> float:
        data = sorted(self.samples_ms)
        if len(data) == 1:
            return data[0]
        pos = (len(data) - 1) * q / 100.0
        lo, hi = int(pos), min(int(pos) + 1, len(data) - 1)
        return data[lo] + (data[hi] - data[lo]) * (pos - lo)

    @property
    def p10(self) -> float:
        return self.percentile(10)

    @property
    def p90(self) -> float:
        return self.percentile(90)

    @property
    def iqr(self) -> float:
        return self.percentile(75) - self.percentile(25)

    def summary(self) -> dict[str, float]:
        found = {
            "median_ms": self.median,
            "p10_ms": self.p10,
            "p90_ms": self.p90,
            "iqr_ms": self.iqr,
            "mean_ms": statistics.fmean(self.samples_ms),
            "n": len(self.samples_ms),
        }
        if self.wall_ms:
            found["wall_median_ms"] = statistics.median(self.wall_ms)
        if self.reference_ms is not None:
            found["ref_ms"] = self.reference_ms
        return found


@dataclass(frozen=True)
class Availability:
    """One runtime on one device: present or not, its version, what is missing and the command that adds it."""

    runtime: str
    present: bool
    version: str | None = None
    missing: str = ""  # why it is absent ("" when present)
    install: str = ""  # how to get it
    label: str = ""  # how it runs there when that is not obvious, e.g. "CUDA graphs"

    def describe(self) -> str:
        return f"{self.runtime} ({self.label})" if self.label else self.runtime


class Backend(ABC):
    """A runtime on a device. Construction fails with NasDeployError if either is absent."""

    name: str
    # rank as a deployment runtime per device kind ("cpu", "cuda"), lower first; a kind left out: never chosen
    # there by default (``hardware.runtimes.resolve_runtime`` reads it, so no list of names exists elsewhere)
    preference: dict[str, int] = {}
    measures_onnx: bool = True  # runs an ONNX file (``nasdeploy measure model.onnx``)

    @classmethod
    def availability(cls, device: str) -> Availability:
        """Whether this runtime can run on ``device`` here, without building anything heavy. A backend that does not
        say is taken as present; with no ``preference`` it is never a default, only used when named."""
        return Availability(cls.name, True)

    def __init__(self, device: str, method: MeasureMethod):
        self.device = device
        self.method = method

    @abstractmethod
    def measure_module(self, module: nn.Module, input_shape: tuple[int, ...]) -> Timing:
        """Latency of ``module(x)`` for ``x`` of ``input_shape`` (batch included), module in eval mode."""

    @abstractmethod
    def measure_onnx(self, onnx_path: Path, input_shape: tuple[int, ...]) -> Timing: ...

    def prepare(self, module: nn.Module, input_shape: tuple[int, ...]) -> Callable[[], Timing]:
        """A measurement of ``module`` to repeat round after round without redoing its set-up (an ONNX export, a
        session): interleaved rounds then cost only their timed runs."""
        return lambda: self.measure_module(module, input_shape)

    def prepare_all(self, items: list[tuple[Callable[[], nn.Module], tuple[int, ...]]]) -> list[tuple[Callable[[], Timing], dict[str, Any]]]:
        """``prepare`` for each ``(build the module, input shape)``, all of them before any is timed, with each
        program's notes (``program_notes``). A backend whose set-up is long CPU work may spread it over processes
        here (ExecuTorch: lowering), since none of it overlaps a timed run."""
        prepared = []
        for build, shape in items:
            measure = self.prepare(build(), shape)
            prepared.append((measure, self.program_notes()))
        return prepared

    def program_notes(self) -> dict[str, Any]:
        """Facts about the program prepared last that a latency table keeps next to its entry (ExecuTorch: the ops
        its delegate did not take); none by default."""
        return {}

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Runtime versions to record (torch, onnxruntime, tensorrt, CUDA, cuDNN...)."""


BACKENDS: Registry[type[Backend]] = Registry("runtime")
