"""Runtime resolution: the decision on availability facts, the order read from the registry, this machine's facts."""

from __future__ import annotations

import logging

import pytest
import torch

from nasdeploy.errors import NasDeployError
from nasdeploy.hardware import BACKENDS
from nasdeploy.hardware.base import Availability, Backend
from nasdeploy.hardware.runtimes import choose_runtime, deployment_order, probe_runtimes, resolve_runtime
from nasdeploy.registry import Registry

CUDA_ORDER = ["tensorrt", "onnxruntime", "torch"]
TRT = "pip install 'nasdeploy[tensorrt]'"
ORT_GPU = "pip uninstall -y onnxruntime && pip install onnxruntime-gpu"


def facts(*present: str) -> dict[str, Availability]:
    """A GPU host where only ``present`` runtimes are usable."""
    missing = {"tensorrt": ("tensorrt is not installed", TRT),
               "onnxruntime": ("onnxruntime 1.30.0 has no CUDAExecutionProvider", ORT_GPU),
               "torch": ("no cuda:0 visible", "a GPU host")}
    return {name: Availability(name, True, "1.0", label="CUDA graphs" if name == "torch" else "") if name in present
            else Availability(name, False, None, *missing[name]) for name in CUDA_ORDER}


def test_registry_orders_cuda_tensorrt_then_onnxruntime_then_torch_and_cpu_onnxruntime_first():
    assert deployment_order("cuda:0") == CUDA_ORDER
    assert deployment_order("cpu") == ["onnxruntime", "torch"]
    assert deployment_order("cuda:0", needs_onnx=True) == ["tensorrt", "onnxruntime"]


@pytest.mark.parametrize("present, expected", [
    (("tensorrt", "onnxruntime", "torch"), "tensorrt"),
    (("onnxruntime", "torch"), "onnxruntime"),
    (("torch",), "torch"),
    (("tensorrt",), "tensorrt"),
])
def test_cuda_resolves_to_the_best_present(present, expected):
    assert choose_runtime("cuda:0", facts(*present), CUDA_ORDER).runtime == expected


def test_the_reason_names_each_missing_better_runtime_and_its_pip_command():
    reason = choose_runtime("cuda:1", facts("torch"), CUDA_ORDER).reason
    assert reason.startswith("runtime for cuda:1: torch (CUDA graphs) 1.0 (")
    assert f"tensorrt absent: tensorrt is not installed ({TRT})" in reason
    assert f"onnxruntime absent: onnxruntime 1.30.0 has no CUDAExecutionProvider ({ORT_GPU})" in reason
    best = choose_runtime("cuda:0", facts("tensorrt", "torch"), CUDA_ORDER).reason
    assert "absent" not in best and "preferred" in best


def test_nothing_present_is_one_line_with_every_fix():
    with pytest.raises(NasDeployError) as info:
        choose_runtime("cuda:0", facts(), CUDA_ORDER)
    message = str(info.value)
    assert "\n" not in message and TRT in message and ORT_GPU in message and message.startswith("no deployment runtime for cuda:0")


def test_a_backend_is_added_by_registering_it():
    registry: Registry = Registry("runtime")

    @registry.register("slow")
    class Slow(Backend):
        preference = {"cpu": 5}

    @registry.register("fast")
    class Fast(Backend):
        preference = {"cpu": 0, "cuda": 0}
        measures_onnx = False

    assert deployment_order("cpu", registry) == ["fast", "slow"]
    assert deployment_order("cpu", registry, needs_onnx=True) == ["slow"]
    assert deployment_order("cuda:0", registry) == ["fast"]


def test_resolve_uses_the_probe_and_logs_one_line(caplog):
    probe = lambda device, names: {n: facts("onnxruntime", "torch")[n] for n in names}  # noqa: E731
    with caplog.at_level(logging.INFO, logger="nasdeploy.hardware.runtimes"):
        chosen = resolve_runtime("cuda:0", probe=probe)
    assert chosen.runtime == "onnxruntime" and chosen.chosen
    assert [r.message for r in caplog.records] == [chosen.reason]
    with pytest.raises(NasDeployError, match=r"^--runtime tensorrt on cuda:0: tensorrt is not installed; pip install"):
        resolve_runtime("cuda:0", "tensorrt", probe=probe)
    assert resolve_runtime("cuda:0", "torch", probe=probe).chosen is False
    with pytest.raises(NasDeployError, match="unknown runtime 'tvm'"):
        resolve_runtime("cpu", "tvm", probe=probe)


def test_this_machine_cpu_facts():
    import onnxruntime

    here = probe_runtimes("cpu")
    assert here["onnxruntime"] == Availability("onnxruntime", True, onnxruntime.__version__, install="pip install onnxruntime")
    assert here["torch"].present and here["torch"].version == torch.__version__
    assert not here["tensorrt"].present and "only on NVIDIA GPUs" in here["tensorrt"].missing
    assert resolve_runtime("cpu").runtime == "onnxruntime"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the facts of a host without CUDA")
def test_this_machine_has_no_cuda_runtime():
    here = probe_runtimes("cuda:0")
    assert not any(fact.present for fact in here.values())
    with pytest.raises(NasDeployError, match="no deployment runtime for cuda:0"):
        resolve_runtime("cuda:0")


def test_runtimes_command_lists_each_device_and_runtime(capsys):
    from nasdeploy.cli.runtimes import runtimes

    runtimes()
    rows = [line for line in capsys.readouterr().err.splitlines() if line.startswith("│ c")]
    listed = {(cells[0], cells[1]) for cells in ([c.strip() for c in row.strip("│").split("│")] for row in rows)}
    assert {("cpu", "onnxruntime"), ("cpu", "torch"), ("cpu", "tensorrt"), ("cuda:0", "tensorrt")} <= listed
    assert len(BACKENDS.names()) * 2 <= len(rows)
