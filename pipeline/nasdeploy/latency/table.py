"""The latency lookup table (LUT): one JSON file per (machine, runtime, space, template, batch).

``entries`` maps ``OpInstance.key()`` to the op's measured distribution; ``overhead`` holds the
least-squares model that turns a sum of entries into a network latency (see ``latency.overhead``).
Files are written atomically; any file that is corrupt or made for another schema, space or template
is refused with one line saying what differs and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasdeploy.errors import NasDeployError, what_is_wrong
from nasdeploy.io import atomic_write_json, read_json
from nasdeploy.spaces.base import OpInstance

SCHEMA_VERSION = 1

# Template fields that change training but not the inference graph that is timed.
LATENCY_IRRELEVANT_FIELDS = ("drop_path", "auxiliary", "aux_head")

# The committed tables under the repository's latency_tables/ are reference evidence about the machines that made
# them; the tables a user's commands profile and look up live in a per-user cache, never in the checkout.
TABLE_ROOT_ENV = "NASDEPLOY_TABLE_ROOT"


def cache_dir() -> Path:
    """``$NASDEPLOY_CACHE_DIR``, else ``$XDG_CACHE_HOME/nasdeploy``, else ``~/.cache/nasdeploy``."""
    if os.environ.get("NASDEPLOY_CACHE_DIR"):
        return Path(os.environ["NASDEPLOY_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nasdeploy"


def table_root(root: Path | str | None = None) -> Path:
    """Where this machine's tables are profiled and found: ``root`` (``--table-root``), else ``$NASDEPLOY_TABLE_ROOT``,
    else ``<cache_dir()>/latency_tables``."""
    if root is not None:
        return Path(root)
    if os.environ.get(TABLE_ROOT_ENV):
        return Path(os.environ[TABLE_ROOT_ENV])
    return cache_dir() / "latency_tables"


def template_dict(template: Any) -> dict[str, Any]:
    return dict(template) if isinstance(template, dict) else template.to_dict()


def latency_template(template: Any) -> dict[str, Any]:
    """The template fields that decide latency (JSON-normalised so tuples and lists compare equal)."""
    d = {k: v for k, v in template_dict(template).items() if k not in LATENCY_IRRELEVANT_FIELDS}
    return json.loads(json.dumps(d, sort_keys=True))


def template_slug(template: Any) -> str:
    """``op3-32px-c16-l8-1a2b3c``: the readable fields plus a short hash of all latency-relevant ones."""
    d = latency_template(template)
    parts = []
    for key, fmt in (("op_space", "op{}"), ("input_size", "{}px"), ("C", "c{}"), ("layers", "l{}"), ("width_mult", "w{}")):
        if key in d:
            parts.append(fmt.format(d[key]).replace(".", "p"))
    parts.append(hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:6])
    return "-".join(parts)


@dataclass
class LatencyTable:
    """Measured latencies of every op instance of one template on one machine and runtime."""

    space: str
    template: dict[str, Any]
    runtime: str
    device: str
    fingerprint: dict[str, Any]
    versions: dict[str, str]
    method: dict[str, Any]  # MeasureMethod.to_dict(): warmup, repeats, threads, dtype, batch, rounds
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    overhead: dict[str, Any] | None = None
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    command: str = ""  # the `nasdeploy profile ...` command that (re)fills this table
    path: Path | None = None  # where it was loaded from / saved to (not stored)
    # this machine's speed now over its speed when the table was profiled, as the last spot check measured it
    # (latency.trust): every prediction is scaled by it. In memory only: drift belongs to a moment, not to the table.
    speed_ratio: float = 1.0
    # MeasureMethod.reference: the fixed network timed next to every item ({"seed", "arch", "medians", "canonical_ms"})
    reference: dict[str, Any] | None = None
    # latency.rounds.rounds_decision: the rounds the profile took (more than method.rounds when rounds landed slow often)
    rounds_rule: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def batch(self) -> int:
        return int(self.method.get("batch", 1))

    @property
    def dtype(self) -> str:
        return str(self.method.get("dtype", "float32"))

    def has(self, inst: OpInstance) -> bool:
        return inst.key() in self.entries

    def lookup_ms(self, inst: OpInstance) -> float:
        """Median latency of ``inst`` in ms; a missing entry names the op, shape and the profile command."""
        entry = self.entries.get(inst.key())
        if entry is None:
            where = f" in {self.path}" if self.path else ""
            raise NasDeployError(
                f"latency table{where} has no entry for {inst.op} ({inst.c_in}->{inst.c_out} channels, "
                f"{inst.h}x{inst.w} input, stride {inst.stride}{', ' + inst.extra if inst.extra else ''}); "
                f"fill it with: {self.command or profile_command(self)}"
            )
        return float(entry["median_ms"])

    def add(self, inst: OpInstance, summary: dict[str, Any]) -> None:
        self.entries[inst.key()] = {**summary, "op": inst.to_dict()}

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "space": self.space,
            "template": self.template,
            "runtime": self.runtime,
            "device": self.device,
            "fingerprint": self.fingerprint,
            "versions": self.versions,
            "dtype": self.dtype,
            "batch": self.batch,
            "method": self.method,
            "command": self.command,
            "created": self.created,
            "entries": self.entries,
            "overhead": self.overhead,
            "reference": self.reference,
            **({"rounds_rule": self.rounds_rule} if self.rounds_rule else {}),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], source: str = "latency table") -> "LatencyTable":
        if not isinstance(d, dict):
            raise NasDeployError(f"{source} is not a latency table (top level is not an object); regenerate it with 'nasdeploy profile'")
        version = d.get("schema_version")
        if version is None:
            raise NasDeployError(f"{source} has no 'schema_version' field, so it is not a table this nasdeploy wrote; "
                                 "regenerate it with 'nasdeploy profile'")
        if version != SCHEMA_VERSION:
            raise NasDeployError(
                f"{source} has schema version {version}, this nasdeploy reads {SCHEMA_VERSION}; regenerate it with 'nasdeploy profile'"
            )
        try:
            return cls(
                space=d["space"], template=dict(d["template"]), runtime=d["runtime"], device=d["device"],
                fingerprint=dict(d["fingerprint"]), versions=dict(d["versions"]), method=dict(d["method"]),
                entries={str(k): dict(v) for k, v in d["entries"].items()}, overhead=d.get("overhead"), reference=d.get("reference"),
                rounds_rule=d.get("rounds_rule"),
                created=str(d.get("created", "")), command=str(d.get("command", "")),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise NasDeployError(f"{source} is not a valid latency table ({what_is_wrong(exc)}); regenerate it with "
                                 "'nasdeploy profile'") from None


def table_sha256(table: LatencyTable) -> str:
    """Hash of the table's content (its path excluded): a copy in a run folder shares its original's checks."""
    return hashlib.sha256(json.dumps(table.to_json(), sort_keys=True).encode()).hexdigest()


def profiled_marker(table: LatencyTable) -> Path:
    from nasdeploy.hardware.fingerprint import boot_id

    return cache_dir() / "profiled-here" / f"{table_sha256(table)[:20]}-{boot_id()[:8]}"


def mark_profiled_here(table: LatencyTable) -> None:
    """Remember that this exact content was profiled on this machine during this boot (``profiled_here``)."""
    marker = profiled_marker(table)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:  # an unwritable cache only costs the table the benefit of the doubt
        pass


def profiled_here(table: LatencyTable) -> bool:
    """Whether this content (a copy included; an edited table not) was profiled on this machine this boot."""
    return profiled_marker(table).is_file()


def save_table(table: LatencyTable, path: Path | str) -> Path:
    """Write ``table`` atomically (a crash mid-write leaves the previous file intact)."""
    path = Path(path)
    atomic_write_json(path, table.to_json())
    table.path = path
    return path


def load_table(path: Path | str, space: str | None = None, template: Any = None) -> LatencyTable:
    """Read a table, checking it was made for ``space`` and ``template`` when they are given."""
    path = Path(path)
    table = LatencyTable.from_json(read_json(path, "latency table"), source=f"latency table {path}")
    table.path = path
    if space is not None and table.space != space:
        raise NasDeployError(f"latency table {path} is for space {table.space!r}, not {space!r}; profile {space!r} with 'nasdeploy profile --space {space}'")
    if template is not None:
        check_template(table, template)
    return table


def check_template(table: LatencyTable, template: Any) -> None:
    wanted, stored = latency_template(template), latency_template(table.template)
    if wanted == stored:
        return
    diffs = [f"{k}={stored.get(k)!r} (wanted {wanted.get(k)!r})" for k in sorted(set(wanted) | set(stored)) if wanted.get(k) != stored.get(k)]
    where = f" {table.path}" if table.path else ""
    raise NasDeployError(
        f"latency table{where} was profiled for another template: {', '.join(diffs)}; "
        f"profile this template with 'nasdeploy profile' or pass the matching table"
    )


def default_table_path(space: str, template: Any, runtime: str, device: str, batch: int = 1,
                       root: Path | str | None = None, threads: int | None = None) -> Path:
    """``<root>/<fingerprint-id>/<runtime>/<space>-<template-slug>-b<batch>.json`` for this machine (root: :func:`table_root`)."""
    from nasdeploy.hardware.fingerprint import fingerprint, fingerprint_id

    machine = fingerprint_id(fingerprint(device, threads))
    return table_root(root) / machine / runtime / f"{space}-{template_slug(template)}-b{batch}.json"


def profile_command(table: LatencyTable, path: Path | str | None = None) -> str:
    """The exact ``nasdeploy profile`` command that (re)creates or completes ``table``."""
    from nasdeploy.spaces.base import get_space

    t = table.template
    parts = ["nasdeploy profile", f"--device {table.device}", f"--runtime {table.runtime}", f"--space {table.space}"]
    preset = matching_preset(get_space(table.space), t)
    if "op_space" in t:
        parts.append(f"--op-space {t['op_space']}")
    if "input_size" in t:
        parts.append(f"--input-size {t['input_size']}")
    m = table.method
    parts += [f"--batch {table.batch}", f"--preset {preset}", f"--warmup {m.get('warmup')}", f"--repeats {m.get('repeats')}",
              f"--rounds {m.get('rounds', 1)}"]
    if m.get("max_rounds"):
        parts.append(f"--max-rounds {m['max_rounds']}")
    if m.get("threads"):
        parts.append(f"--threads {m['threads']}")
    if m.get("clock", "auto") not in ("auto", "thread", "cuda-event"):
        parts.append(f"--clock {m['clock']}")
    if table.dtype != "float32":
        parts.append(f"--dtype {table.dtype}")
    if m.get("execution") == "eager" and table.device != "cpu":
        parts.append("--execution eager")
    if not m.get("reference", False):
        parts.append("--no-reference")
    target = path or table.path
    if target:
        parts.append(f"--out {target}")
    return " ".join(parts)


def matching_preset(space, template: dict[str, Any]) -> str:
    """The preset whose default template equals ``template`` up to the CLI-settable fields (else "cpu")."""
    settable = {"op_space", "input_size"}
    for preset in ("cpu", "tiny", "paper"):
        try:
            default = latency_template(space.default_template(preset))
        except Exception:  # a space without this preset
            continue
        wanted = latency_template(template)
        if {k: v for k, v in default.items() if k not in settable} == {k: v for k, v in wanted.items() if k not in settable}:
            return preset
    return "cpu"
