"""Typed strategy settings: one dataclass per strategy, presets on top of its defaults, ``--set key=value`` on top.

A strategy declares its settings as a dataclass whose fields carry a help line (``setting(default, "help")``)
and a dict of presets (``tiny``, ``cpu``, ``paper``). ``make_settings`` builds the config (defaults < preset <
options); an unknown key or a value of the wrong type is one line naming the valid keys and types.
``describe_settings`` lists them for ``nasdeploy strategies NAME``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any

from nasdeploy.errors import NasDeployError


def setting(default: Any, help: str) -> Any:
    """A dataclass field with a help line (shown by ``nasdeploy strategies NAME``); a list default is copied per config."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class SettingInfo:
    name: str
    type: str
    default: Any
    help: str
    presets: dict[str, Any]


def type_name(annotation: Any) -> str:
    """``int``, ``float | None``... as written in the dataclass (annotations are strings under __future__)."""
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))


def parse_value(raw: Any, annotation: str) -> Any:
    """``raw`` (a string from the command line, or a Python value) as the annotated type; ValueError if it is not."""
    optional = "None" in annotation
    if raw is None or (optional and isinstance(raw, str) and raw.strip().lower() in ("none", "null")):
        if not optional:
            raise ValueError
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            pass
    base = annotation.replace("| None", "").replace("None |", "").strip()
    if base == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false", "yes", "no", "on", "off"):
            return raw.lower() in ("true", "yes", "on")
        raise ValueError
    if base == "int":
        if isinstance(raw, bool) or float(raw) != int(float(raw)):
            raise ValueError
        return int(float(raw))
    if base == "float":
        if isinstance(raw, bool):
            raise ValueError
        return float(raw)
    if base == "str":
        return str(raw)
    if base.startswith("list"):
        if not isinstance(raw, list):
            raise ValueError
        return raw
    return raw


def make_settings(strategy: str, config_class: type, presets: dict[str, dict[str, Any]], preset: str,
                  options: dict[str, Any] | None, aliases: dict[str, str] | None = None) -> Any:
    """Defaults < ``presets[preset]`` < ``options``; unknown keys and ill-typed values fail with the valid ones."""
    if preset not in presets:
        raise NasDeployError(f"unknown preset {preset!r} for {strategy}; choose one of: {', '.join(presets)}")
    aliases = aliases or {}
    types = {f.name: type_name(f.type) for f in fields(config_class)}
    values = dict(presets[preset])
    for key, raw in (options or {}).items():
        name = aliases.get(key, key)
        if name not in types:
            raise NasDeployError(f"{strategy} has no setting {key!r}{closest_names(key, types)}; its {len(types)} settings: "
                                 f"nasdeploy strategies {strategy}")
        try:
            values[name] = parse_value(raw, types[name])
        except (TypeError, ValueError):
            raise NasDeployError(f"{strategy} setting {key}={raw!r} is not a valid {types[name]}; "
                                 f"pass e.g. --set {key}={getattr(config_class(), name)}") from None
    return config_class(**values)


def closest_names(key: str, names: Any) -> str:
    """``" (did you mean 'a' or 'b'?)"`` for the names closest to a mistyped ``key``, or "" when none is close."""
    import difflib

    close = difflib.get_close_matches(key, list(names), n=3, cutoff=0.75)
    return f" (did you mean {' or '.join(repr(n) for n in close)}?)" if close else ""


def describe_settings(config_class: type, presets: dict[str, dict[str, Any]]) -> list[SettingInfo]:
    """Every setting with its type, default, help line and the presets that change it."""
    rows = []
    for f in fields(config_class):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        changed = {name: values[f.name] for name, values in presets.items() if f.name in values}
        rows.append(SettingInfo(f.name, type_name(f.type), default, f.metadata.get("help", ""), changed))
    return rows


__all__ = ["setting", "make_settings", "describe_settings", "SettingInfo", "parse_value"]
