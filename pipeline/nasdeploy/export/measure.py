"""Re-measure an exported network with the profiler's own backends and method, so LUT and reality compare.

Every result carries its method (warm-up, repeats, threads, dtype, batch), the device fingerprint
and runtime versions, as trtexec and ONNX Runtime's perf tool report them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from nasdeploy.export.onnx_export import onnx_input_shape
from nasdeploy.hardware import BACKENDS, MeasureMethod, Timing, fingerprint, get_backend

ONNX_RUNTIMES = tuple(name for name in BACKENDS if BACKENDS.get(name).measures_onnx)  # read from the registry


@dataclass
class Measurement:
    """One latency distribution with everything needed to interpret it."""

    runtime: str
    device: str
    input_shape: tuple[int, ...]
    timing: Timing
    method: MeasureMethod
    versions: dict[str, Any]
    fingerprint: dict[str, Any]
    round_medians_ms: list[float] = dataclasses.field(default_factory=list)  # every round's median

    @property
    def statistic(self) -> str:
        """Which round ``timing`` is (``best_round``'s rule, decided again from the first rounds): "best" when the
        machine was steady, "fast" or "median" when it was not (``latency.rounds``)."""
        return round_statistic(self.round_medians_ms, self.method.rounds, self.method.max_rounds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "device": self.device,
            "input_shape": list(self.input_shape),
            **self.timing.summary(),
            "round_medians_ms": self.round_medians_ms,
            "round_statistic": self.statistic,
            "method": self.method.to_dict(),
            "versions": self.versions,
            "fingerprint": self.fingerprint,
        }


def method_from_dict(d: dict[str, Any] | None, **overrides: Any) -> MeasureMethod:
    """A MeasureMethod from a table's ``method`` dict (unknown keys ignored), fields overridden."""
    names = {f.name for f in dataclasses.fields(MeasureMethod)}
    values = {k: v for k, v in (d or {}).items() if k in names}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return MeasureMethod(**values)


def measure_onnx(
    path: Path | str,
    runtime: str = "onnxruntime",
    device: str = "cpu",
    method: MeasureMethod | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> Timing:
    """The latency distribution of an ONNX file (design contract); see :func:`onnx_measurement` for the full record."""
    return onnx_measurement(path, runtime, device, method, input_shape).timing


def onnx_measurement(
    path: Path | str,
    runtime: str = "onnxruntime",
    device: str = "cpu",
    method: MeasureMethod | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> Measurement:
    """Latency of an ONNX file on ``runtime``/``device``; the input shape is read from the graph if not given."""
    method = dataclasses.replace(method) if method is not None else MeasureMethod()
    shape = tuple(input_shape) if input_shape else onnx_input_shape(path, method.batch)
    method.batch = shape[0]
    backend = get_backend(runtime, device, method)
    timing, medians = best_round(lambda: backend.measure_onnx(Path(path), shape), method.rounds, method.max_rounds)
    return Measurement(runtime, device, shape, timing, backend.method, backend.versions(),
                       fingerprint(device, getattr(backend, "threads", None)), medians)


def module_measurement(
    module: nn.Module,
    input_shape: tuple[int, ...],
    runtime: str = "torch",
    device: str = "cpu",
    method: MeasureMethod | None = None,
) -> Measurement:
    """Latency of an eval-mode PyTorch module (the torch runtime: eager execution)."""
    method = dataclasses.replace(method) if method is not None else MeasureMethod()
    method.batch = input_shape[0]
    backend = get_backend(runtime, device, method)
    timing, medians = best_round(lambda: backend.measure_module(module.eval(), tuple(input_shape)), method.rounds, method.max_rounds)
    return Measurement(runtime, device, tuple(input_shape), timing, backend.method, backend.versions(),
                       fingerprint(device, getattr(backend, "threads", None)), medians)


def best_round(measure: Callable[[], Timing], rounds: int, max_rounds: int | None = None) -> tuple[Timing, list[float]]:
    """``measure`` run ``rounds`` times, and ``max_rounds`` times when those rounds show the machine unsteady; the
    best round's timing (steady) or the round of the state ``rounds_decision`` chose (unsteady: the median fast round
    or the median round), and every round's median.

    The rule a table's entries and fit networks follow (``latency.rounds``): an exported network measured with its
    table's method is then compared like with like with that table's prediction (a single round sits a few per
    cent above a best-of-three on a shared machine, and the prediction error would carry that bias).
    """
    from nasdeploy.latency.rounds import pick_round

    timings = [measure() for _ in range(max(1, rounds))]
    decision = first_rounds_decision([t.median for t in timings], rounds, max_rounds)
    timings += [measure() for _ in range(decision["rounds"] - len(timings))]
    medians = [t.median for t in timings]
    return timings[pick_round(medians, decision["statistic"])], medians


def first_rounds_decision(medians: list[float], rounds: int, max_rounds: int | None) -> dict[str, Any]:
    """The rounds rule's decision for one network, from its first ``rounds`` round medians (``rounds_decision``)."""
    from nasdeploy.latency.rounds import rounds_decision

    return rounds_decision([{"rounds": [{"median_ms": m} for m in medians[:max(1, rounds)]]}], rounds, max_rounds)


def round_statistic(medians: list[float], rounds: int, max_rounds: int | None) -> str:
    """The statistic ``best_round`` applied to rounds with these ``medians``: "best" unless it took more rounds than
    asked for, else what its decision on the first ``rounds`` said."""
    return first_rounds_decision(medians, rounds, max_rounds)["statistic"] if len(medians) > max(1, rounds) else "best"


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``"1,3,224,224"`` -> ``(1, 3, 224, 224)``."""
    from nasdeploy.errors import NasDeployError

    if text is None or text == "":
        return None
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise NasDeployError(f"cannot read input shape {text!r}; write positive integers separated by commas, e.g. 1,3,224,224")
    return shape
