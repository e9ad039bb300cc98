"""Backends, device checks and fingerprints, on real torch and ONNX Runtime sessions."""

from __future__ import annotations

import importlib.util
import re

import pytest
import torch
from torch import nn

from nasdeploy.errors import NasDeployError
from nasdeploy.hardware import BACKENDS, MeasureMethod, fingerprint, fingerprint_id, get_backend
from nasdeploy.hardware.onnx_file import export_module
from nasdeploy.hardware.timing import time_host

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


def small_module() -> nn.Module:
    return nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())


def check_timing(timing, n):
    """``n`` timed runs; with the thread clock the runs another process interrupted are dropped (at least 5 kept)."""
    s = timing.summary()
    assert len(timing.wall_ms or timing.samples_ms) == n and s["n"] == len(timing.samples_ms) >= min(n, 5)
    assert all(t > 0 for t in timing.samples_ms)
    assert s["p10_ms"] <= s["median_ms"] <= s["p90_ms"]
    assert s["iqr_ms"] >= 0 and s["mean_ms"] > 0


def test_registered_backends():
    assert {"torch", "onnxruntime", "tensorrt"} <= set(BACKENDS.names())


def test_cpu_fingerprint_fields_and_id():
    fp = fingerprint("cpu", threads=2)
    assert fp["cpu_model"] and fp["logical_cores"] >= 1 and fp["threads"] == 2 and "gpu" not in fp
    fid = fingerprint_id(fp)
    assert re.fullmatch(r"cpu-[a-z0-9-]+-2t-[0-9a-f]{6}", fid)
    assert fid == fingerprint_id(fingerprint("cpu", threads=2))  # stable
    assert re.fullmatch(r"cpu-[a-z0-9-]+-1t-[0-9a-f]{6}", fingerprint_id(fingerprint("cpu", threads=1)))


def test_fingerprint_id_tells_apart_two_machines_with_one_cpu_model_string():
    one = {"cpu_model": "AMD EPYC", "threads": 1, "logical_cores": 2, "machine": "x86_64", "cache_kb": {"L1d": 32, "L2": 512},
           "isa_flags": ["avx2"], "memory_mb": 24 * 1024, "kernel": "6.1.0"}
    assert fingerprint_id(one).startswith("cpu-amd-epyc-1t-")
    for field, other in (("cache_kb", {"L1d": 32, "L2": 1024}), ("logical_cores", 4), ("isa_flags", ["avx2", "avx512f"]),
                         ("memory_mb", 32 * 1024), ("kernel", "6.18.44")):
        assert fingerprint_id(dict(one, **{field: other})) != fingerprint_id(one), field
    assert fingerprint_id(dict(one, memory_mb=24 * 1024 - 3)) == fingerprint_id(one)  # MemTotal jitter of a few MB


def test_gpu_fingerprint_id_is_the_gpu_name_and_a_hash_of_its_setup():
    fp = {"cpu_model": "x", "threads": 1, "gpu": {"name": "NVIDIA H100 80GB HBM3", "driver": "580.1", "memory_mb": 81559}}
    assert re.fullmatch(r"nvidia-h100-80gb-hbm3-[0-9a-f]{6}", fingerprint_id(fp))
    newer_driver = {**fp, "gpu": {**fp["gpu"], "driver": "590.2"}}
    assert fingerprint_id(newer_driver) != fingerprint_id(fp)
    assert fingerprint_id({"cpu_model": "Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.0GHz", "threads": 4}).startswith("cpu-intel-xeon-platinum-8480-4t-")


def test_time_host_counts_warmup_and_repeats():
    calls = []
    timing = time_host(lambda: calls.append(1), MeasureMethod(warmup=3, repeats=7))
    assert len(calls) == 10 and len(timing.samples_ms) == 7


def test_torch_cpu_measures_module_and_restores_threads():
    before = torch.get_num_threads()
    backend = get_backend("torch", "cpu", MeasureMethod(warmup=2, repeats=20, threads=1))
    small, large = backend.measure_module(small_module(), (1, 8, 8, 8)), backend.measure_module(small_module(), (1, 8, 64, 64))
    check_timing(small, 20)
    assert large.median > small.median  # 64x the pixels costs more
    assert torch.get_num_threads() == before
    assert backend.versions()["torch"] == torch.__version__
    assert backend.method.threads == 1


def test_default_threads_recorded():
    backend = get_backend("torch", "cpu", MeasureMethod(threads=None))
    assert backend.method.threads == 1


def test_onnxruntime_cpu_measures_exported_onnx(tmp_path):
    import onnx

    path = export_module(small_module(), (1, 8, 16, 16), tmp_path / "m.onnx")
    onnx.checker.check_model(str(path))
    backend = get_backend("onnxruntime", "cpu", MeasureMethod(warmup=2, repeats=15, threads=1))
    check_timing(backend.measure_onnx(path, (1, 8, 16, 16)), 15)
    check_timing(backend.measure_module(small_module(), (1, 8, 16, 16)), 15)
    assert backend.versions()["providers"] == "CPUExecutionProvider"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_absent_cuda_device_fails_with_fix(runtime):
    with pytest.raises(NasDeployError, match=r"--device cuda:0: no CUDA device is visible here.*visible devices: cpu; pass --device cpu"):
        get_backend(runtime, "cuda:0", MeasureMethod())


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_absent_tensorrt_fails_with_install_hint():
    with pytest.raises(NasDeployError, match=r"TensorRT is not installed; pip install 'nasdeploy\[tensorrt\]'"):
        get_backend("tensorrt", "cuda:0", MeasureMethod())


def test_tensorrt_on_cpu_and_bad_device_strings_fail_clearly():
    with pytest.raises(NasDeployError, match="only on NVIDIA GPUs"):
        get_backend("tensorrt", "cpu", MeasureMethod())
    with pytest.raises(NasDeployError, match="cannot read device 'gpu0'"):
        get_backend("torch", "gpu0", MeasureMethod())
    with pytest.raises(NasDeployError, match="unknown runtime 'tvm'"):
        get_backend("tvm", "cpu", MeasureMethod())


@pytest.mark.parametrize("runtime, device", [("tensorrt", "cpu"), ("torch", "gpu0"), ("tvm", "cpu"),
                                             pytest.param("torch", "cuda:7", id="torch-absent-gpu")])
def test_errors_are_one_line(runtime, device):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(NasDeployError) as info:  # each of these must raise, so the check cannot pass vacuously
        get_backend(runtime, device, MeasureMethod())
    assert str(info.value) and "\n" not in str(info.value)


@pytest.mark.gpu
@needs_gpu
def test_torch_cuda_measures_with_events():
    backend = get_backend("torch", "cuda:0", MeasureMethod(warmup=3, repeats=20))
    check_timing(backend.measure_module(small_module(), (1, 8, 32, 32)), 20)
    fp = fingerprint("cuda:0")
    assert fp["gpu"]["name"] and fingerprint_id(fp) == fingerprint_id(fingerprint("cuda:0"))


@pytest.mark.gpu
@needs_gpu
def test_tensorrt_measures_engine():
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("TensorRT not installed (pip install 'nasdeploy[tensorrt]')")
    backend = get_backend("tensorrt", "cuda:0", MeasureMethod(warmup=3, repeats=20))
    check_timing(backend.measure_module(small_module(), (1, 8, 32, 32)), 20)


def test_execution_resolves_to_cuda_graph_on_gpu_and_eager_on_cpu():
    from nasdeploy.hardware.timing import resolve_execution

    assert resolve_execution("auto", on_gpu=True) == "cuda-graph"
    assert resolve_execution("auto", on_gpu=False) == "eager"
    assert resolve_execution("eager", on_gpu=True) == "eager"
    with pytest.raises(NasDeployError, match="CUDA graphs need a cuda device; use --execution eager"):
        resolve_execution("cuda-graph", on_gpu=False)
    with pytest.raises(NasDeployError, match="unknown execution 'graph'"):
        resolve_execution("graph", on_gpu=True)


def test_torch_cpu_records_eager_and_refuses_cuda_graphs():
    backend = get_backend("torch", "cpu", MeasureMethod(warmup=1, repeats=3))
    assert backend.method.to_dict()["execution"] == "eager"
    with pytest.raises(NasDeployError) as info:
        get_backend("torch", "cpu", MeasureMethod(execution="cuda-graph"))
    assert "\n" not in str(info.value)


def test_a_table_from_before_the_execution_field_reads_as_eager():
    from types import SimpleNamespace

    from nasdeploy.latency.profiler import stored_method

    legacy = SimpleNamespace(method={"warmup": 3, "repeats": 10, "clock": "cuda-event"})
    assert stored_method(legacy).execution == "eager"
    assert stored_method(SimpleNamespace(method={"execution": "cuda-graph"})).execution == "cuda-graph"


def test_report_names_how_torch_ran_on_a_gpu():
    from nasdeploy.export.report import where

    assert where({"runtime": "torch", "device": "cuda:0", "method": {"execution": "cuda-graph"}}) == "torch, cuda:0, cuda-graph"
    assert where({"runtime": "torch", "device": "cpu", "method": {"execution": "eager"}}) == "torch, cpu"
    assert where({"runtime": "onnxruntime", "device": "cuda:0", "method": {"execution": "auto"}}) == "onnxruntime, cuda:0"


@pytest.mark.gpu
@needs_gpu
def test_cuda_graph_replays_the_captured_work_once_per_sample():
    """Eager warm-up runs, a capture that runs nothing, then ``warmup + repeats`` replays: counted on a tensor."""
    from nasdeploy.hardware.timing import EAGER_WARMUP_BEFORE_CAPTURE, time_cuda_graph

    counter = torch.zeros(1, device="cuda:0")
    method = MeasureMethod(warmup=2, repeats=7)
    timing = time_cuda_graph(lambda: counter.add_(1), method, 0)
    torch.cuda.synchronize()
    assert len(timing.samples_ms) == 7 and all(t > 0 for t in timing.samples_ms)
    assert counter.item() == max(2, EAGER_WARMUP_BEFORE_CAPTURE) + 2 + 7


@pytest.mark.gpu
@needs_gpu
def test_torch_cuda_defaults_to_graphs_and_eager_stays_explicit():
    graph = get_backend("torch", "cuda:0", MeasureMethod(warmup=3, repeats=20))
    eager = get_backend("torch", "cuda:0", MeasureMethod(warmup=3, repeats=20, execution="eager"))
    assert graph.method.execution == "cuda-graph" and eager.method.execution == "eager"
    check_timing(graph.measure_module(small_module(), (1, 8, 16, 16)), 20)
    check_timing(eager.measure_module(small_module(), (1, 8, 16, 16)), 20)
