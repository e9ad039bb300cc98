"""Export an inference network to ONNX and prove it computes what PyTorch computes.

Flow (as in optimum's exporters): export to a temporary file next to the target -> ``onnx.checker`` ->
run ONNX Runtime (CPU) and PyTorch on the same fixed random inputs and on real inputs -> the largest
absolute difference must be ``<= atol`` (1e-4 in fp32) -> atomic rename. A failed check raises
NasDeployError naming the difference and the tolerance, and nothing is left at the final path.

Exporter: torch 2.14 ships both. The TorchScript exporter (``dynamo=False``, opset 17) exports our
cell and MobileNet networks in well under a second, and is what the latency profiler uses for every
op, so the exported graph matches the measured ops node for node; the torch.export-based exporter
(``exporter="dynamo"``, opset 18, ~3 s per network) works too and is available as an option.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nasdeploy.errors import NasDeployError

log = logging.getLogger(__name__)

FP32_ATOL = 1e-4
OPSETS = {"legacy": 17, "dynamo": 18}
INPUT_NAME, OUTPUT_NAME = "input", "logits"
RANDOM_INPUTS = 4  # fixed random inputs (seed 0) checked before the real batch


@dataclass
class ParityResult:
    """How closely the exported graph reproduces PyTorch, on which inputs, under which tolerance."""

    runtime: str
    max_abs_diff: float
    atol: float
    passed: bool
    top1_agreement: float
    random_inputs: int
    real_inputs: int
    max_abs_diff_random: float
    max_abs_diff_real: float | None
    exporter: str = "legacy"
    opset: int = 17
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(-1) == b.argmax(-1))) if a.size else 1.0


def parity_inputs(input_shape: tuple[int, ...], real_inputs: torch.Tensor | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Random inputs (seed 0, the export shape) and the real batch split to the export batch size."""
    rng = np.random.default_rng(0)
    random_batches = [rng.standard_normal(input_shape).astype(np.float32) for _ in range(RANDOM_INPUTS)]
    real_batches: list[np.ndarray] = []
    if real_inputs is not None and len(real_inputs):
        batch = input_shape[0]
        real = real_inputs.detach().cpu().float().numpy()
        real_batches = [real[i : i + batch] for i in range(0, len(real) - batch + 1, batch)]
    return random_batches, real_batches


def torch_outputs(model: nn.Module, batches: list[np.ndarray]) -> list[np.ndarray]:
    """PyTorch reference logits, one thread: batch-1 ops are not worth a thread team (and a busy machine
    makes a second OpenMP thread wait at every op)."""
    from nasdeploy.hardware.torch_backend import torch_threads

    with torch.no_grad(), torch_threads(1):
        return [model(torch.from_numpy(b)).float().numpy() for b in batches]


def ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_outputs(path: Path, batches: list[np.ndarray]) -> list[np.ndarray]:
    session = ort_session(path)
    name = session.get_inputs()[0].name
    return [session.run(None, {name: b})[0] for b in batches]


def compare(reference: list[np.ndarray], candidate: list[np.ndarray]) -> tuple[float, float]:
    """(max |Δ| over all batches, top-1 agreement over all rows)."""
    if not reference:
        return 0.0, 1.0
    ref, cand = np.concatenate(reference), np.concatenate(candidate)
    return max_abs_diff(ref, cand), top1_agreement(ref, cand)


def torch_export(model: nn.Module, input_shape: tuple[int, ...], path: Path, exporter: str = "legacy",
                 dynamic_batch: bool = False) -> None:
    """Write ``model`` (eval mode) to ``path`` with the chosen torch.onnx exporter."""
    x = torch.randn(*input_shape)
    kwargs: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": OPSETS[exporter]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            if dynamic_batch:
                kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
            torch.onnx.export(model, (x,), str(path), dynamo=False, **kwargs)
        elif exporter == "dynamo":
            if dynamic_batch:
                from torch.export import Dim

                kwargs["dynamic_shapes"] = ({0: Dim("batch", min=1, max=4096)},)
            program = torch.onnx.export(model, (x,), dynamo=True, verbose=False, **kwargs)
            program.save(str(path))
        else:
            raise NasDeployError(f"unknown ONNX exporter {exporter!r}; choose legacy or dynamo")


def check_graph(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise NasDeployError(f"exported ONNX graph fails onnx.checker ({str(exc).splitlines()[0]}); report this network") from None


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: Path | str,
    atol: float = FP32_ATOL,
    real_inputs: torch.Tensor | None = None,
    exporter: str = "legacy",
    dynamic_batch: bool = False,
) -> ParityResult:
    """Export ``model`` to ``path`` only if ONNX Runtime matches PyTorch within ``atol`` (max |Δ| on logits).

    ``real_inputs``: a batch of dataset images (any count; checked in chunks of the export batch size,
    or as one batch when ``dynamic_batch``). Raises NasDeployError when the check fails; ``path`` is then
    untouched (an older file there stays as it was).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu().float()
    input_shape = tuple(int(d) for d in input_shape)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        torch_export(model, input_shape, tmp, exporter, dynamic_batch)
        check_graph(tmp)
        random_batches, real_batches = parity_inputs(input_shape, real_inputs)
        if dynamic_batch and real_inputs is not None and len(real_inputs):
            real_batches = [real_inputs.detach().cpu().float().numpy()]
        diff_random, agree_random = compare(torch_outputs(model, random_batches), ort_outputs(tmp, random_batches))
        diff_real, agree_real = (None, 1.0)
        if real_batches:
            diff_real, agree_real = compare(torch_outputs(model, real_batches), ort_outputs(tmp, real_batches))
        worst = max(diff_random, diff_real or 0.0)
        result = ParityResult(
            runtime="onnxruntime-cpu", max_abs_diff=worst, atol=atol, passed=worst <= atol,
            top1_agreement=agree_real if real_batches else agree_random,
            random_inputs=len(random_batches) * input_shape[0], real_inputs=sum(len(b) for b in real_batches),
            max_abs_diff_random=diff_random, max_abs_diff_real=diff_real, exporter=exporter, opset=OPSETS[exporter],
        )
        if not result.passed:
            raise NasDeployError(
                f"ONNX Runtime differs from PyTorch by max |diff| {worst:.3g} > tolerance {atol:g} "
                f"({result.random_inputs} random + {result.real_inputs} real inputs); {path} was not written — "
                "try --exporter dynamo, or report this network"
            )
        os.replace(tmp, path)
        log.info("exported %s (parity max |diff| %.2e <= %g)", path, worst, atol)
        return result
    finally:
        tmp.unlink(missing_ok=True)


def onnx_input_shape(path: Path | str, batch: int | None = None) -> tuple[int, ...]:
    """The static input shape of an ONNX graph; a symbolic batch axis becomes ``batch`` (default 1)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise NasDeployError(f"ONNX file not found: {path}; check the path")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise NasDeployError(f"{path} is not a readable ONNX file ({exc.__class__.__name__}); export it again") from None
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise NasDeployError(f"{path} has {len(inputs)} graph inputs; nasdeploy measures single-input image models")
    dims = []
    for axis, dim in enumerate(inputs[0].type.tensor_type.shape.dim):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            if axis == 0 and batch is not None and batch != dim.dim_value:
                raise NasDeployError(
                    f"{path} has a static batch of {dim.dim_value}, not {batch}; drop --batch or export with a dynamic batch axis"
                )
            dims.append(int(dim.dim_value))
        elif axis == 0:
            dims.append(batch or 1)
        else:
            raise NasDeployError(
                f"input {inputs[0].name!r} of {path} has a dynamic axis {axis} ({dim.dim_param or '?'}); "
                "pass the shape, e.g. --input-shape 1,3,224,224"
            )
    return tuple(dims)
