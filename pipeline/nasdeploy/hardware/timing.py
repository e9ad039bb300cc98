"""The measurement loop shared by every backend: warm-up, then timed repetitions, one sample per run."""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from nasdeploy.errors import NasDeployError
from nasdeploy.hardware.base import MeasureMethod, Timing


@contextmanager
def quiet_gc() -> Iterator[None]:
    """No garbage collection pauses inside a timed loop (warm-up included): the collector is off, after a collection
    of the youngest generation only. A full ``gc.collect()`` walked every object of the process before each timed
    loop, 28-55 ms with torch loaded (42 s of a 106 s profile), and left the caches cold for the first timed runs."""
    enabled = gc.isenabled()
    gc.collect(0)
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


CLOCKS = ("auto", "thread", "wall", "cuda-event")


def host_clock(method: MeasureMethod, on_cpu: bool) -> str:
    """Resolve ``method.clock``: "auto" is thread time on CPU with one thread, else wall clock."""
    if method.clock not in CLOCKS:
        raise NasDeployError(f"unknown clock {method.clock!r}; choose one of: {', '.join(CLOCKS)}")
    if method.clock == "auto":
        return "thread" if on_cpu and method.threads == 1 else "wall"
    if method.clock == "thread" and not (on_cpu and method.threads == 1):
        raise NasDeployError("the thread clock is exact only on CPU with one thread; use --threads 1 or the wall clock")
    return method.clock


def time_host(run: Callable[[], object], method: MeasureMethod, clock: str = "wall") -> Timing:
    """Time each ``run()`` (synchronous on the host) after ``method.warmup`` untimed runs.

    ``clock="thread"`` takes the calling thread's CPU time as the sample (wall times are kept too).
    """
    samples, walls = [], []
    wall, thread = time.perf_counter_ns, time.thread_time_ns
    with quiet_gc():
        for _ in range(method.warmup):  # after the collection, so the timed runs start on warm caches
            run()
        for _ in range(method.repeats):
            start_wall, start_thread = wall(), thread()
            run()
            end_thread, end_wall = thread(), wall()
            walls.append((end_wall - start_wall) / 1e6)
            samples.append((end_thread - start_thread) / 1e6)
    if clock == "thread":
        return Timing(least_disturbed(samples, walls), wall_ms=walls)
    return Timing(walls)


def least_disturbed(thread_ms: list[float], wall_ms: list[float], share: float = 0.25, min_keep: int = 5) -> list[float]:
    """Thread times of the runs another process did not interrupt (wall ≈ thread time).

    A run that was descheduled also restarts on cold caches, so even its thread time is inflated. We
    keep the runs whose wall-minus-thread gap is within 3 % (+20 µs); if fewer than ``share`` of the
    runs (at least ``min_keep``) are that clean, the ``share`` with the smallest gaps. On a quiet
    machine every run is kept.
    """
    gaps = [w - t for t, w in zip(thread_ms, wall_ms)]
    clean = [t for t, gap in zip(thread_ms, gaps) if gap <= 0.03 * t + 0.02]
    wanted = min(len(thread_ms), max(min_keep, int(len(thread_ms) * share)))
    if len(clean) >= wanted:
        return clean
    order = sorted(range(len(thread_ms)), key=lambda i: gaps[i])
    return [thread_ms[i] for i in sorted(order[:wanted])]


EXECUTIONS = ("auto", "cuda-graph", "eager")


def resolve_execution(execution: str, on_gpu: bool) -> str:
    """``MeasureMethod.execution`` made concrete: "auto" is a CUDA graph on a GPU, eager on CPU."""
    if execution not in EXECUTIONS:
        raise NasDeployError(f"unknown execution {execution!r}; choose one of: {', '.join(EXECUTIONS)}")
    if execution == "auto":
        return "cuda-graph" if on_gpu else "eager"
    if execution == "cuda-graph" and not on_gpu:
        raise NasDeployError("CUDA graphs need a cuda device; use --execution eager (the default on cpu) or --device cuda:N")
    return execution


def time_cuda_graph(run: Callable[[], object], method: MeasureMethod, device_index: int) -> Timing:
    """GPU time of each replay of ``run`` captured as one CUDA graph, between two CUDA events.

    ``run`` must read only static tensors (its input is allocated once and never replaced): a graph replays the
    captured kernels on the captured addresses. As the PyTorch CUDA-graph notes prescribe, the warm-up runs eagerly
    on a side stream first (lazy cuDNN/cuBLAS handles, autotuning and allocations happen there, not inside the
    capture), the capture uses that same stream, and replays are timed on it with one synchronisation per sample.
    """
    import torch

    with torch.cuda.device(device_index):
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(max(method.warmup, EAGER_WARMUP_BEFORE_CAPTURE)):
                run()
        stream.synchronize()
        graph = capture(run, stream)
        with torch.cuda.stream(stream):
            for _ in range(method.warmup):
                graph.replay()
            stream.synchronize()
            samples = []
            with quiet_gc():
                for _ in range(method.repeats):
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record(stream)
                    graph.replay()
                    end.record(stream)
                    end.synchronize()
                    samples.append(float(start.elapsed_time(end)))
        del graph  # its private memory pool goes with it
    return Timing(samples)


# the PyTorch notes warm up "a few" iterations before capture; three covers cuDNN's benchmark and handle creation
EAGER_WARMUP_BEFORE_CAPTURE = 3


def capture(run: Callable[[], object], stream):
    """``run`` captured once on ``stream``; a module that cannot be captured is a user error naming eager."""
    import torch

    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph, stream=stream):
            run()
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NasDeployError(f"this module cannot be captured as a CUDA graph ({reason}); measure it with --execution eager") from None
    return graph


def time_cuda(run: Callable[[], object], method: MeasureMethod, device_index: int) -> Timing:
    """GPU time of each ``run()`` between two CUDA events, synchronising after each (clocks untouched)."""
    import torch

    with torch.cuda.device(device_index):
        for _ in range(method.warmup):
            run()
        torch.cuda.synchronize()
        samples = []
        with quiet_gc():
            for _ in range(method.repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                run()
                end.record()
                torch.cuda.synchronize()
                samples.append(float(start.elapsed_time(end)))
    return Timing(samples)
