"""Export an inference network as an ExecuTorch program (``.pte``, XNNPACK-delegated) and prove it computes what
PyTorch computes; measure a ``.pte`` file.

The flow is the ONNX export's (``export.onnx_export``): lower -> write a temporary file next to the target -> load it
with the ExecuTorch runtime -> run it and PyTorch on the same fixed random inputs and real inputs -> the largest
absolute difference on the logits must be ``<= atol`` (1e-4 in fp32, the ONNX rule) -> atomic rename. A failed check
raises NasDeployError naming the difference and the tolerance, and nothing is left at the final path.
A ``.pte`` is planned for one input shape, so there is no dynamic batch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nasdeploy.errors import NasDeployError
from nasdeploy.export.measure import Measurement, best_round
from nasdeploy.export.onnx_export import FP32_ATOL, ParityResult, compare, parity_inputs, torch_outputs
from nasdeploy.hardware import MeasureMethod, fingerprint, get_backend
from nasdeploy.hardware.executorch_backend import PTE_SUFFIX, import_executorch, load_method, lower, pte_input_shape

log = logging.getLogger(__name__)

RUNTIME = "executorch"
FORMATS = ("onnx", "pte")


def export_format(name: str | Path, format: str | None = None) -> str:
    """``format`` if given (onnx | pte), else the file name's suffix decides (``.pte``: pte, anything else: onnx)."""
    if format is not None and format not in FORMATS:
        raise NasDeployError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)}")
    return format or ("pte" if Path(name).suffix == PTE_SUFFIX else "onnx")


def pte_name(name: str | Path) -> str:
    """The file name a pte export writes: ``model.onnx`` -> ``model.pte``."""
    return Path(name).with_suffix(PTE_SUFFIX).name


def pte_runtime(runtime: str | None, tensorrt: bool, device: str) -> str:
    """The runtime a .pte is re-measured on: executorch, checked present (one line naming the extra otherwise)."""
    from nasdeploy.hardware import BACKENDS

    if tensorrt or runtime not in (None, RUNTIME):
        raise NasDeployError(f"a .pte program runs on --runtime executorch, not {'tensorrt' if tensorrt else runtime}; "
                             "drop --runtime/--tensorrt, or export model.onnx")
    fact = BACKENDS.get(RUNTIME).availability(device)
    if not fact.present:
        raise NasDeployError(f"a .pte program runs on ExecuTorch, absent on {device}: {fact.missing}; {fact.install}, "
                             "or export model.onnx")
    return RUNTIME


def without_onnx(wanted: list[tuple], skipped: list[dict]) -> tuple[list[tuple], list[dict]]:
    """Comparisons of a .pte export ((runtime, device, execution) entries): those that run an ONNX file are skipped
    with the reason (a line in the report)."""
    from nasdeploy.hardware import BACKENDS

    onnx = [entry for entry in wanted if BACKENDS.get(entry[0]).measures_onnx]
    reason = "a .pte export writes no ONNX file; export model.onnx to compare"
    return ([w for w in wanted if w not in onnx],
            skipped + [{"runtime": entry[0], "device": entry[1], "reason": reason} for entry in onnx])


def pte_outputs(path: Path, batches: list[np.ndarray]) -> list[np.ndarray]:
    method = load_method(path)
    return [method.execute((torch.from_numpy(b),))[0].float().numpy() for b in batches]


def check_parity(model: nn.Module, path: Path, input_shape: tuple[int, ...], atol: float,
                 real_inputs: torch.Tensor | None) -> ParityResult:
    """ExecuTorch's logits against PyTorch's on fixed random and real inputs (the ONNX export's inputs and rule)."""
    random_batches, real_batches = parity_inputs(input_shape, real_inputs)
    diff_random, agree_random = compare(torch_outputs(model, random_batches), pte_outputs(path, random_batches))
    diff_real, agree_real = (None, 1.0)
    if real_batches:
        diff_real, agree_real = compare(torch_outputs(model, real_batches), pte_outputs(path, real_batches))
    worst = max(diff_random, diff_real or 0.0)
    return ParityResult(
        runtime="executorch-xnnpack", max_abs_diff=worst, atol=atol, passed=worst <= atol,
        top1_agreement=agree_real if real_batches else agree_random,
        random_inputs=len(random_batches) * input_shape[0], real_inputs=sum(len(b) for b in real_batches),
        max_abs_diff_random=diff_random, max_abs_diff_real=diff_real, exporter="torch.export+xnnpack", opset=0,
    )


def export_pte(model: nn.Module, input_shape: tuple[int, ...], path: Path | str, atol: float = FP32_ATOL,
               real_inputs: torch.Tensor | None = None) -> ParityResult:
    """Write ``model`` as an XNNPACK-delegated ``.pte`` to ``path`` only if ExecuTorch matches PyTorch within ``atol``.

    The ops XNNPACK did not take are logged and listed in the result's notes. Raises NasDeployError when the check
    fails; ``path`` is then untouched.
    """
    import_executorch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu().float()
    input_shape = tuple(int(d) for d in input_shape)
    program = lower(model, input_shape)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".pte.tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.write_bytes(program.buffer)
        result = check_parity(model, tmp, input_shape, atol, real_inputs)
        result.notes = [f"not delegated to XNNPACK (portable kernels): {op} x{n}" for op, n in program.non_delegated.items()]
        for note in result.notes:
            log.warning("%s: %s", path.name, note)
        if not result.passed:
            raise NasDeployError(
                f"ExecuTorch differs from PyTorch by max |diff| {result.max_abs_diff:.3g} > tolerance {atol:g} "
                f"({result.random_inputs} random + {result.real_inputs} real inputs); {path} was not written — report this network"
            )
        os.replace(tmp, path)
        log.info("exported %s (parity max |diff| %.2e <= %g)", path, result.max_abs_diff, atol)
        return result
    finally:
        tmp.unlink(missing_ok=True)


def pte_measurement(path: Path | str, device: str = "cpu", method: MeasureMethod | None = None,
                    input_shape: tuple[int, ...] | None = None) -> Measurement:
    """Latency of a ``.pte`` file on ExecuTorch; the input shape is the program's own unless given."""
    method = dataclasses.replace(method) if method is not None else MeasureMethod()
    backend = get_backend(RUNTIME, device, method)  # checks device and package first
    shape = tuple(input_shape) if input_shape else pte_input_shape(path)
    backend.method.batch = shape[0]
    timing, medians = best_round(lambda: backend.measure_pte(Path(path), shape), method.rounds, method.max_rounds)  # the table's rule
    return Measurement(RUNTIME, device, shape, timing, backend.method, backend.versions(), fingerprint(device, backend.threads),
                       medians)
