"""Which machine a latency was measured on: CPU model, caches, instruction sets, kernel, threads; GPU details.

Every latency table and report stores ``fingerprint(device)``; ``fingerprint_id`` turns it into the
folder name of the machine's tables (CPU model and threads, or GPU name, plus a short hash of the fields
that tell two machines with the same model string apart: cores, cache sizes, ISA flags, memory, kernel;
GPU memory, compute capability and driver). :func:`machine_mismatches` names every field that differs
between a table's machine and this one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import time
from pathlib import Path
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


# Instruction-set extensions that decide which kernels oneDNN, MLAS (ONNX Runtime) and XNNPACK run.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimdhp", "asimddp", "sve", "sve2")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``) from /proc/cpuinfo; empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def isa_flags() -> list[str]:
    flags = cpu_flags()
    return [flag for flag in ISA_FLAGS if flag in flags]


def cache_sizes_kb() -> dict[str, int]:
    """Per-core cache sizes of CPU 0 from sysfs, e.g. ``{"L1d": 48, "L1i": 32, "L2": 2048, "L3": 32768}``."""
    found: dict[str, int] = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        match = re.fullmatch(r"(\d+)([KMG]?)", size)
        if not match:
            continue
        kb = int(match.group(1)) * {"": 1 / 1024, "K": 1, "M": 1024, "G": 1024**2}[match.group(2)]
        name = f"L{level}" + {"Data": "d", "Instruction": "i"}.get(kind, "")
        found[name] = int(kb)
    return found


def memory_mb() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def boot_id() -> str:
    """This boot of this machine (Linux: a fresh UUID per boot); spot checks are cached per boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux: the boot time, where psutil-free Python can tell it, else the host name
        return f"{platform.node()}-{int(time.time() - time.monotonic())}"


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
    """The measuring machine: CPU model, cores, caches, ISA flags, memory, kernel, threads used; the GPU on CUDA."""
    fp: dict[str, Any] = {
        "device": device,
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count() or 1,
        "threads": threads if threads is not None else default_threads(),
        "machine": platform.machine(),
        "os": platform.system(),
        "cache_kb": cache_sizes_kb(),
        "isa_flags": isa_flags(),
        "memory_mb": memory_mb(),
        "kernel": platform.release(),
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


# What the short hash of a fingerprint id covers: two VMs that report the same CPU model string (a cloud's
# "AMD EPYC") differ in one of these, and a table from one must never be taken for the other's.
ID_HASH_FIELDS = ("logical_cores", "machine", "cache_kb", "isa_flags", "memory_gb", "kernel")
ID_HASH_GPU_FIELDS = ("memory_mb", "compute_capability", "driver")


def fingerprint_id(fp: dict[str, Any]) -> str:
    """``cpu-amd-epyc-1t-3f9a1c`` or ``nvidia-h100-80gb-hbm3-5be20d``: the model slug (and threads), then a short
    hash of the fields that tell two machines with the same model string apart; stable for one machine."""
    if fp.get("gpu"):
        gpu = fp["gpu"]
        return f"{slug(gpu.get('name', 'gpu'))}-{_short_hash({k: gpu.get(k) for k in ID_HASH_GPU_FIELDS})}"
    fields = {k: fp.get(k) for k in ID_HASH_FIELDS if k != "memory_gb"}
    # memory rounded to GiB: MemTotal moves by a few MB between kernels' reservations, not between machines
    fields["memory_gb"] = round(fp["memory_mb"] / 1024) if fp.get("memory_mb") else None
    return f"cpu-{slug(fp.get('cpu_model', 'unknown'))}-{fp.get('threads', 1)}t-{_short_hash(fields)}"


def _short_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:6]


# Fields that must agree for two fingerprints to be the same machine (threads: the same measuring setup).
MACHINE_FIELDS = ("cpu_model", "logical_cores", "machine", "cache_kb", "isa_flags", "kernel", "threads")
GPU_FIELDS = ("name", "memory_mb", "compute_capability", "driver")


def machine_mismatches(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between the machine of ``stored`` (a table's fingerprint) and ``current``; [] if the same.

    A field the stored fingerprint lacks (written by an older nasdeploy) cannot confirm the machine,
    so it is listed too. Memory size is recorded but not compared (it does not change op latency).
    """
    found = []
    for name in MACHINE_FIELDS:
        if name in stored and name in current and stored[name] != current[name]:
            found.append(_difference(name, stored[name], current[name]))
    if current.get("gpu") or stored.get("gpu"):
        here, there = current.get("gpu") or {}, stored.get("gpu") or {}
        for name in GPU_FIELDS:
            if here.get(name) != there.get(name) and (name in here or name in there):
                found.append(f"GPU {name.replace('_', ' ')} {here.get(name)} here, {there.get(name)} in the table")
    missing = [FIELD_NAMES.get(name, name) for name in MACHINE_FIELDS if name not in stored and name in current]
    if missing:
        found.append(f"the table's fingerprint has no {', '.join(missing)} (written by an older nasdeploy)")
    return found


FIELD_NAMES = {"cpu_model": "CPU model", "logical_cores": "logical cores", "machine": "architecture",
               "cache_kb": "cache sizes", "isa_flags": "ISA flags", "kernel": "kernel", "threads": "threads"}


def _difference(name: str, stored: Any, current: Any) -> str:
    label = FIELD_NAMES.get(name, name)
    if name == "isa_flags":
        here, there = sorted(set(current) - set(stored)), sorted(set(stored) - set(current))
        parts = ([f"{' '.join(here)} here only"] if here else []) + ([f"{' '.join(there)} in the table only"] if there else [])
        return f"{label}: {'; '.join(parts) or 'same set, other order'}"
    if name == "cache_kb":
        def show(sizes: dict) -> str:
            return " ".join(f"{k} {v} KB" for k, v in sizes.items()) or "none"
        return f"{label} {show(current)} here, {show(stored)} in the table"
    return f"{label} {current} here, {stored} in the table"
