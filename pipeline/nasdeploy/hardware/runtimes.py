"""Which deployment runtime a device resolves to when no ``--runtime`` is given, and why.

The order is read from the registered backends (``Backend.preference``: lower is preferred, per device kind), so a
backend is added by its file and one registration line; nothing here names a runtime. ``choose_runtime`` is the
decision on availability facts (pure, tested with hand-made facts); ``probe_runtimes`` gathers the facts on this
machine from each backend's own ``availability``; ``resolve_runtime`` is what every command calls.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Mapping

from nasdeploy.errors import NasDeployError
from nasdeploy.hardware.base import BACKENDS, Availability
from nasdeploy.hardware.devices import cuda_index
from nasdeploy.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resolution:
    """The runtime chosen for a device and the one line that says why."""

    runtime: str
    device: str
    reason: str
    chosen: bool  # True: resolved (no --runtime); False: the user named it


def device_kind(device: str) -> str:
    return "cpu" if cuda_index(device) is None else "cuda"


def deployment_order(device: str, registry: Registry = BACKENDS, needs_onnx: bool = False) -> list[str]:
    """Registered runtimes that deploy on ``device``'s kind, best first (``Backend.preference``)."""
    kind = device_kind(device)
    ranked = [(registry.get(name).preference[kind], name) for name in registry
              if kind in registry.get(name).preference and (registry.get(name).measures_onnx or not needs_onnx)]
    return [name for _, name in sorted(ranked)]


def absent_line(fact: Availability) -> str:
    return f"{fact.runtime} absent: {fact.missing} ({fact.install})"


def choose_runtime(device: str, facts: Mapping[str, Availability], order: list[str]) -> Resolution:
    """The first present runtime of ``order``; the reason names each better one that is missing and its fix."""
    skipped = []
    for name in order:
        fact = facts[name]
        if fact.present:
            version = f" {fact.version}" if fact.version else ""
            why = "; ".join(absent_line(f) for f in skipped) or "the preferred runtime here"
            return Resolution(name, device, f"runtime for {device}: {fact.describe()}{version} ({why})", chosen=True)
        skipped.append(fact)
    raise NasDeployError(f"no deployment runtime for {device} here: " + "; ".join(absent_line(f) for f in skipped))


def probe_runtimes(device: str, names: list[str] | None = None, registry: Registry = BACKENDS) -> dict[str, Availability]:
    """Each runtime's availability on ``device`` here, as its backend reports it."""
    return {name: registry.get(name).availability(device) for name in (names if names is not None else list(registry))}


def resolve_runtime(device: str, runtime: str | None = None, needs_onnx: bool = False,
                    probe: Callable[[str, list[str]], Mapping[str, Availability]] = probe_runtimes) -> Resolution:
    """``runtime`` if given and present on ``device`` (else one line naming the fix), or the best present one.

    ``needs_onnx``: only runtimes that run an ONNX file (``nasdeploy measure model.onnx``).
    """
    order = deployment_order(device, needs_onnx=needs_onnx)
    if runtime is not None:
        BACKENDS.get(runtime)  # an unknown name lists the registered ones
        fact = probe(device, [runtime])[runtime]
        if not fact.present:
            raise NasDeployError(f"--runtime {runtime} on {device}: {fact.missing}; {fact.install}, or leave --runtime out "
                                 f"to use the best runtime present (nasdeploy runtimes lists them)")
        return Resolution(runtime, device, f"runtime for {device}: {runtime} (--runtime)", chosen=False)
    resolution = choose_runtime(device, probe(device, order), order)
    log.info(resolution.reason)
    return resolution
