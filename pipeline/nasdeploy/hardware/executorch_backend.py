"""ExecuTorch with its XNNPACK backend on the host CPU: the runtime Android and iOS apps ship, measured here.

A module is exported with ``torch.export``, lowered with the XNNPACK partitioner
(``to_edge_transform_and_lower(...).to_executorch()``), written to a ``.pte`` file and loaded with
``executorch.runtime``; ``method.execute((x,))`` is timed with the host loop every CPU backend uses
(``timing.time_host``: warm-up, repeats, thread clock with one thread).

Threads: the Python runtime has one process-wide thread pool (pthreadpool, shared by XNNPACK and the optimized
kernels). It defaults to the core count, which made the pybindings up to 300x slower on servers (upstream PR 9196),
so its size is set with ``_unsafe_reset_threadpool`` before any program is loaded, read back, and recorded (method
threads, versions). "Unsafe" because a reset under a loaded program can leave it a stale pool: it is only reset
when its size differs, which happens before the first load of a process that keeps one thread count.

Lowering is the slow part (about 12 s for a tiny-template DARTS network on one EPYC core, 0.5-1 s for one op; ~90 %
of it in ``to_edge_transform_and_lower``'s decompositions and XNNPACK passes, Python work over the FX graph), so
``prepare_all`` lowers a batch of modules in a process pool (``lower_all``: one process per core, or
``$NASDEPLOY_EXECUTORCH_WORKERS``) and only then loads and times them: no lowering ever overlaps a timed run.

Programs lowered for timing are kept in a program cache (``executorch_cache``) keyed by graph and shapes, so the
networks every command's spot check times, a retest's networks and a resumed profile's ops are lowered once per
machine; an export lowers its own module every time.

Ops the partitioner does not take run on ExecuTorch's portable kernels, which are far slower: each lowered
program's non-delegated ops are kept (``last_non_delegated``) and logged, never silent; the profiler stores them
per table entry. ``executorch`` is imported lazily, so nasdeploy works without the ``mobile`` extra.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from nasdeploy.errors import NasDeployError
from nasdeploy.hardware.base import BACKENDS, Availability, Backend, MeasureMethod, Timing
from nasdeploy.hardware.devices import cuda_index, default_threads, require_device
from nasdeploy.hardware.executorch_cache import CACHE_ENV, program_key, programs_dir, prune, read_program, write_program
from nasdeploy.hardware.timing import host_clock, time_host

log = logging.getLogger(__name__)

INSTALL = "pip install -e '.[mobile]'"
PTE_SUFFIX = ".pte"
PARTITIONER = "xnnpack"
# the delegate's own output unpacking: a graph node, not an op that runs on a kernel
NOT_AN_OP = {"getitem"}


def import_executorch():
    """The ``executorch`` package with the pieces used here, or NasDeployError naming the extra."""
    try:
        import executorch
        import executorch.runtime  # noqa: F401  (the loader and its compiled extension)
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner  # noqa: F401
    except ImportError as exc:
        raise NasDeployError(f"executorch is not installed ({exc.name or 'executorch'} missing); {INSTALL}") from None
    return executorch


def executorch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("executorch")
    except PackageNotFoundError:  # a source build without metadata
        return "unknown"


@dataclass
class LoweredProgram:
    """A module lowered to an ExecuTorch program: its bytes and the ops XNNPACK left to portable kernels."""

    buffer: bytes
    non_delegated: dict[str, int] = field(default_factory=dict)  # op type -> occurrences
    cached: bool = False  # taken from the program cache (executorch_cache), not lowered now


def non_delegated_ops(edge) -> dict[str, int]:
    """Op types of an edge program that were not delegated, with their counts."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(edge.exported_program().graph_module)
    return {name: b.non_delegated for name, b in sorted(info.delegation_by_operator.items())
            if b.non_delegated and name not in NOT_AN_OP}


def export_module(module: nn.Module, input_shape: tuple[int, ...]):
    """``module`` (eval, float32, CPU) exported with ``torch.export`` at ``input_shape``."""
    import torch

    import_executorch()
    module = module.eval().cpu().float()
    with torch.no_grad():
        return torch.export.export(module, (torch.randn(*input_shape),))


def lower_exported(exported) -> LoweredProgram:
    """An exported program lowered to XNNPACK (the slow part: decompositions and the XNNPACK passes)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with torch.no_grad():
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    skipped = non_delegated_ops(edge)
    return LoweredProgram(edge.to_executorch().buffer, skipped)


def lower(module: nn.Module, input_shape: tuple[int, ...]) -> LoweredProgram:
    """``module`` exported at ``input_shape`` and lowered to XNNPACK, its own weights in the program (export uses it)."""
    return lower_exported(export_module(module, input_shape))


def lower_for_timing(module: nn.Module, input_shape: tuple[int, ...]) -> LoweredProgram:
    """As ``lower``, but a program of the same graph and shapes lowered before is taken from the program cache
    (``executorch_cache``: the weights' values do not change what XNNPACK's kernels do); a new one is kept there."""
    import torch

    exported = export_module(module, input_shape)
    folder = programs_dir()
    if folder is None:
        return lower_exported(exported)
    key = program_key(exported, input_shape, (executorch_version(), torch.__version__, PARTITIONER))
    found = read_program(folder, key)
    if found is not None:
        return LoweredProgram(found[0], found[1], cached=True)
    program = lower_exported(exported)
    write_program(folder, key, program.buffer, program.non_delegated)
    return program


WORKERS_ENV = "NASDEPLOY_EXECUTORCH_WORKERS"


def lowering_workers(programs: int) -> int:
    """Processes that lower ``programs`` modules ahead of timing: ``$NASDEPLOY_EXECUTORCH_WORKERS``, else one per core
    this process may use, never more than there are programs (1: lowered here, no pool)."""
    wanted = os.environ.get(WORKERS_ENV)
    if wanted is not None:
        try:
            workers = int(wanted)
        except ValueError:
            raise NasDeployError(f"{WORKERS_ENV}={wanted!r} is not a number of processes; set it to e.g. 2, or unset it") from None
    else:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(workers, programs))


def _start_lowering_worker() -> None:
    import torch

    torch.set_num_threads(1)  # the workers share the cores: one thread each


def _lower_in_worker(module_pickle: bytes, input_shape: tuple[int, ...]) -> LoweredProgram:
    return lower_for_timing(pickle.loads(module_pickle), input_shape)


def lower_all(modules: list[tuple[nn.Module, tuple[int, ...]]], workers: int = 1) -> list[LoweredProgram]:
    """Each ``(module, input shape)`` lowered for timing (``lower_for_timing``: the program cache first), in order;
    with ``workers`` > 1 in that many fresh processes (spawned: the ExecuTorch thread pool of this one is not forked),
    which have all finished when this returns."""
    if workers <= 1 or len(modules) <= 1:
        return [lower_for_timing(module, shape) for module, shape in modules]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_lowering_worker) as pool:
        # each module goes as a plain pickle (a copy of its weights): sent as an nn.Module, torch shares every tensor
        # through a file descriptor held until a worker takes it, and 40 DARTS cpu fit networks queued at once ran the
        # process out of them ("Too many open files", the pool broken)
        return list(pool.map(_lower_in_worker, [pickle.dumps(m) for m, _ in modules], [shape for _, shape in modules]))


def fix_threadpool(threads: int) -> int:
    """Size the process-wide ExecuTorch thread pool to ``threads`` (only when it differs); returns the size read back."""
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)
    return int(portable_lib._threadpool_get_thread_count())


def load_program(path: Path | str):
    """A ``.pte`` file loaded as an ExecuTorch program; a missing or unreadable file names the fix."""
    from executorch.runtime import Runtime

    path = Path(path)
    if not path.is_file():
        raise NasDeployError(f".pte file not found: {path}; check the path")
    try:
        return Runtime.get().load_program(path)
    except Exception as exc:  # the runtime raises RuntimeError/ValueError with its own error codes
        raise NasDeployError(f"{path} does not load as an ExecuTorch program ({type(exc).__name__}: {exc}); export it again") from None


def load_method(path: Path | str):
    """The ``forward`` method of a ``.pte`` file, loaded (the file may go afterwards)."""
    return load_program(path).load_method("forward")


def pte_input_shape(path: Path | str) -> tuple[int, ...]:
    """The (static) input shape of a ``.pte``'s ``forward``: ExecuTorch programs are planned for one shape."""
    meta = load_program(path).metadata("forward")
    if meta.num_inputs() != 1:
        raise NasDeployError(f"{path} has {meta.num_inputs()} inputs; nasdeploy measures single-input image models")
    return tuple(int(d) for d in meta.input_tensor_meta(0).sizes())


@BACKENDS.register("executorch")
class ExecuTorchBackend(Backend):
    """``method.execute((x,))`` of an XNNPACK-delegated program, timed on the host; CPU only."""

    name = "executorch"
    preference: dict[str, int] = {}  # a mobile target measured here: used when named, never a host's default
    measures_onnx = False

    @classmethod
    def availability(cls, device: str) -> Availability:
        if cuda_index(device) is not None:
            return Availability(cls.name, False, None, "ExecuTorch's XNNPACK backend runs on CPUs only", "use --device cpu")
        try:
            import_executorch()
        except NasDeployError:
            return Availability(cls.name, False, None, "executorch is not installed", INSTALL)
        return Availability(cls.name, True, executorch_version(), install=INSTALL, label=PARTITIONER)

    def __init__(self, device: str, method: MeasureMethod):
        super().__init__(device, method)
        if require_device(device) is not None:
            raise NasDeployError(f"the executorch runtime runs on cpu (XNNPACK), not {device}; pass --device cpu")
        import_executorch()
        if method.dtype != "float32":
            raise NasDeployError(f"the executorch backend measures float32 programs, not {method.dtype!r}; use --dtype float32")
        self.threads = fix_threadpool(method.threads or default_threads())
        self.method.threads = self.threads
        self.method.clock = host_clock(method, on_cpu=True)
        self.last_non_delegated: dict[str, int] = {}
        self.reported: set[str] = set()  # op types already logged by this backend

    def note_delegation(self, program: LoweredProgram, what: str) -> None:
        """Keep the program's non-delegated ops and log each op type the first time this backend meets it."""
        self.last_non_delegated = dict(program.non_delegated)
        new = sorted(set(program.non_delegated) - self.reported)
        if new:
            self.reported.update(new)
            log.warning("executorch: XNNPACK did not take %s in %s; they run on portable kernels", ", ".join(new), what)

    def timed_method(self, path: Path, input_shape: tuple[int, ...]) -> Callable[[], Timing]:
        """The program at ``path`` loaded now (the file may go), and the measurement of one call to it."""
        import torch

        fix_threadpool(self.threads)  # another backend in this process may have resized the pool
        method = load_method(path)
        inputs = (torch.randn(*input_shape, generator=torch.Generator().manual_seed(0)),)
        return lambda: time_host(lambda: method.execute(inputs), self.method, self.method.clock)

    def prepare(self, module: nn.Module, input_shape: tuple[int, ...]) -> Callable[[], Timing]:
        """Lowered and loaded once; each call times the same method (a round of the profiler)."""
        return self.load_lowered(lower_for_timing(module, input_shape), input_shape, type(module).__name__)

    def prepare_all(self, items: list[tuple[Callable[[], nn.Module], tuple[int, ...]]]) -> list[tuple[Callable[[], Timing], dict[str, Any]]]:
        """Every module lowered first (in a process pool, ``lower_all``), then each loaded: nothing is timed until all
        the lowering is done."""
        import time

        modules = [(build(), tuple(shape)) for build, shape in items]
        if not modules:
            return []
        workers, started, folder = lowering_workers(len(modules)), time.perf_counter(), programs_dir()
        programs = lower_all(modules, workers)
        cached = sum(program.cached for program in programs)
        log.info("executorch: lowered %d programs to XNNPACK in %.1f s (%d process%s; %d of them from the program cache%s)",
                 len(modules), time.perf_counter() - started, workers, "es" if workers > 1 else "", cached,
                 "" if folder is not None else f", off: {CACHE_ENV}=0")
        if folder is not None and cached < len(programs):
            prune(folder)
        prepared = []
        for (module, shape), program in zip(modules, programs):
            measure = self.load_lowered(program, shape, type(module).__name__)
            prepared.append((measure, self.program_notes()))
        return prepared

    def load_lowered(self, program: LoweredProgram, input_shape: tuple[int, ...], what: str) -> Callable[[], Timing]:
        self.note_delegation(program, what)
        with tempfile.TemporaryDirectory(prefix="nasdeploy-pte-") as folder:
            path = Path(folder) / f"module{PTE_SUFFIX}"
            path.write_bytes(program.buffer)
            return self.timed_method(path, input_shape)

    def measure_module(self, module: nn.Module, input_shape: tuple[int, ...]) -> Timing:
        return self.prepare(module, input_shape)()

    def measure_pte(self, path: Path | str, input_shape: tuple[int, ...]) -> Timing:
        return self.timed_method(Path(path), input_shape)()

    def measure_onnx(self, onnx_path: Path, input_shape: tuple[int, ...]) -> Timing:
        raise NasDeployError(f"the executorch runtime runs .pte programs, not ONNX ({onnx_path}); "
                             "export one with 'nasdeploy export model.pte'")

    def program_notes(self) -> dict[str, Any]:
        """What a table keeps next to the entry of the program prepared last: the ops left to portable kernels."""
        return {"non_delegated": dict(self.last_non_delegated)} if self.last_non_delegated else {}

    def versions(self) -> dict[str, str]:
        import torch

        return {"executorch": executorch_version(), "executorch_backend": PARTITIONER, "torch": torch.__version__,
                "executorch_threads": str(self.threads)}
