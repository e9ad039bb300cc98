"""Which machine a latency was measured on: CPU model and threads, GPU name, driver, memory and clocks.

Every latency table and report stores ``fingerprint(device)``; ``fingerprint_id`` turns it into the
folder name under ``latency_tables/`` so tables from different machines never mix.
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any

from nasdeploy.hardware.devices import cuda_index, default_threads


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def gpu_info(index: int) -> dict[str, Any]:
    """Name, driver, memory and current/max SM and memory clocks of GPU ``index`` via NVML (read only)."""
    info: dict[str, Any] = {}
    try:
        import torch

        props = torch.cuda.get_device_properties(index)
        info.update(name=props.name, memory_mb=props.total_memory // 2**20,
                    compute_capability=f"{props.major}.{props.minor}")
        uuid = str(getattr(props, "uuid", "") or "")
    except Exception:  # torch without CUDA: NVML may still answer
        uuid = ""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = _nvml_handle(pynvml, index, uuid)
            name = pynvml.nvmlDeviceGetName(handle)
            info["name"] = name.decode() if isinstance(name, bytes) else name
            driver = pynvml.nvmlSystemGetDriverVersion()
            info["driver"] = driver.decode() if isinstance(driver, bytes) else driver
            info["memory_mb"] = pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20
            info["sm_clock_mhz"] = pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)
            info["mem_clock_mhz"] = pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM)
            info["max_sm_clock_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)
            info["max_mem_clock_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # NVML absent or denied: record why, keep what torch told us
        info["nvml_error"] = f"{exc.__class__.__name__}: {exc}"
    return info


def _nvml_handle(pynvml, index: int, uuid: str):
    """The NVML handle of torch's device ``index`` (matched by UUID, since CUDA_VISIBLE_DEVICES may remap)."""
    if uuid:
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            nvml_uuid = pynvml.nvmlDeviceGetUUID(handle)
            nvml_uuid = nvml_uuid.decode() if isinstance(nvml_uuid, bytes) else nvml_uuid
            if nvml_uuid.replace("GPU-", "") == uuid.replace("GPU-", ""):
                return handle
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def fingerprint(device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """The measuring machine: CPU model, logical cores, threads used, and the GPU when ``device`` is CUDA."""
    fp: dict[str, Any] = {
        "device": device,
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count() or 1,
        "threads": threads if threads is not None else default_threads(),
        "machine": platform.machine(),
        "os": platform.system(),
    }
    index = cuda_index(device)
    if index is not None:
        fp["gpu"] = gpu_info(index)
    return fp


def slug(text: str) -> str:
    """Lower-case, filesystem-safe: runs of anything but letters and digits become one dash."""
    text = re.sub(r"\((r|tm|c)\)", "", text.lower())
    text = re.sub(r"\b(cpu|processor|with radeon graphics)\b", " ", text)
    text = re.sub(r"@.*", "", text)
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def fingerprint_id(fp: dict[str, Any]) -> str:
    """``cpu-amd-epyc-1t`` or ``nvidia-h100-80gb-hbm3``: stable for one machine and thread count."""
    if fp.get("gpu"):
        return slug(fp["gpu"].get("name", "gpu"))
    return f"cpu-{slug(fp.get('cpu_model', 'unknown'))}-{fp.get('threads', 1)}t"
