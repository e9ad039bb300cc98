"""Latency table files: atomic writes, clear one-line errors, template checks, the missing-entry command."""

from __future__ import annotations

import json
import os
import re

import pytest

from nasdeploy.errors import NasDeployError
from nasdeploy.latency.table import (
    SCHEMA_VERSION,
    LatencyTable,
    default_table_path,
    latency_template,
    load_table,
    profile_command,
    save_table,
    template_slug,
)
from nasdeploy.spaces.base import OpInstance, get_space

SEP = OpInstance("sep_conv_3x3", 16, 16, 32, 32, 1)
POOL = OpInstance("max_pool_3x3", 16, 16, 32, 32, 2)


def make_table(template=None) -> LatencyTable:
    template = template or get_space("darts").default_template("tiny")
    table = LatencyTable(space="darts", template=template.to_dict(), runtime="torch", device="cpu",
                         fingerprint={"cpu_model": "Test CPU", "threads": 1, "device": "cpu"}, versions={"torch": "x"},
                         method={"warmup": 1, "repeats": 5, "threads": 1, "dtype": "float32", "batch": 1})
    table.add(SEP, {"median_ms": 0.25, "p10_ms": 0.2, "p90_ms": 0.3, "iqr_ms": 0.05, "mean_ms": 0.26, "n": 5})
    return table


def test_round_trip(tmp_path):
    table = make_table()
    path = save_table(table, tmp_path / "t.json")
    loaded = load_table(path, space="darts", template=get_space("darts").default_template("tiny"))
    assert loaded.entries == table.entries and loaded.template == table.template
    assert loaded.lookup_ms(SEP) == 0.25 and loaded.has(SEP) and not loaded.has(POOL)
    raw = json.loads(path.read_text())
    for key in ("schema_version", "space", "template", "runtime", "device", "fingerprint", "versions", "dtype", "batch", "method", "entries", "overhead"):
        assert key in raw
    assert raw["schema_version"] == SCHEMA_VERSION
    assert raw["entries"][SEP.key()]["op"] == SEP.to_dict()


def test_atomic_write_leaves_no_temp_files_and_survives_crash(tmp_path, monkeypatch):
    path = save_table(make_table(), tmp_path / "t.json")
    before = path.read_bytes()
    table = make_table()
    table.add(POOL, {"median_ms": 9.0, "p10_ms": 9.0, "p90_ms": 9.0, "iqr_ms": 0.0, "mean_ms": 9.0, "n": 5})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_table(table, path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the previous table is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]  # and no temp file is left
    assert not load_table(path).has(POOL)


@pytest.mark.parametrize("content, pattern", [
    ("{not json", r"corrupt"),
    ("[1, 2]", r"not a latency table"),
    (json.dumps({"schema_version": 99}), r"schema version 99, this nasdeploy reads 1; regenerate"),
    (json.dumps({"schema_version": SCHEMA_VERSION, "space": "darts"}), r"not a valid latency table"),
])
def test_bad_files_fail_with_one_line(tmp_path, content, pattern):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(NasDeployError, match=pattern) as info:
        load_table(path)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(NasDeployError, match="not found"):
        load_table(tmp_path / "nope.json")


def test_other_space_and_other_template_refused(tmp_path):
    darts = get_space("darts")
    path = save_table(make_table(), tmp_path / "t.json")
    with pytest.raises(NasDeployError, match=r"is for space 'darts', not 'mobilenet'"):
        load_table(path, space="mobilenet")
    other = darts.default_template("tiny", input_size=64)
    with pytest.raises(NasDeployError, match=r"another template: input_size=\d+ \(wanted 64\)") as info:
        load_table(path, space="darts", template=other)
    assert "\n" not in str(info.value)


def test_training_only_fields_do_not_change_the_table():
    darts = get_space("darts")
    a = darts.default_template("tiny")
    d = a.to_dict()
    d["drop_path"] = 0.123
    assert latency_template(a) == latency_template(d)
    assert template_slug(a) == template_slug(d)
    assert template_slug(a) != template_slug(darts.default_template("tiny", input_size=64))


def test_missing_entry_names_op_shape_and_command(tmp_path):
    table = make_table()
    save_table(table, tmp_path / "t.json")
    with pytest.raises(NasDeployError) as info:
        table.lookup_ms(POOL)
    message = str(info.value)
    assert "max_pool_3x3" in message and "16->16" in message and "32x32" in message and "stride 2" in message
    command = profile_command(table)
    assert command in message
    assert command.startswith("nasdeploy profile --device cpu --runtime torch --space darts --op-space")
    assert "--preset tiny" in command and f"--out {tmp_path / 't.json'}" in command and "\n" not in message


def test_default_table_path_layout():
    template = get_space("darts").default_template("cpu")
    path = default_table_path("darts", template, "onnxruntime", "cpu", batch=4, root="lt", threads=1)
    assert path.parts[0] == "lt" and re.fullmatch(r"cpu-[a-z0-9-]+-1t-[0-9a-f]{6}", path.parts[1])
    assert path.parts[2] == "onnxruntime" and path.name == f"darts-{template_slug(template)}-b4.json"
