"""What a user gets wrong is one line, exit 2, naming the field or key and the fix (issue 30)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nasdeploy.errors import NasDeployError
from nasdeploy.latency.table import LatencyTable

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PIPELINE), "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "nasdeploy", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_an_arch_json_without_schema_version_names_the_field_and_the_fix(tmp_path):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"space": "darts", "template": {}, "arch": {}, "metrics": {}}))
    result = run_cli("measure", str(arch), "--table", str(tmp_path / "t.json"), cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result.stderr) == (f"error: {arch} has no 'schema_version' field; if it is this nasdeploy's "
                                       "architecture format, add \"schema_version\": 1, else re-run 'nasdeploy search'")


def test_a_record_missing_a_field_names_it_not_its_exception(tmp_path):
    from nasdeploy.spaces.record import ArchitectureRecord

    with pytest.raises(NasDeployError, match=r"^a\.json is not a valid architecture file \(field 'template' is missing\)"):
        ArchitectureRecord.from_json({"schema_version": 1, "space": "darts", "arch": {}}, source="a.json")
    with pytest.raises(NasDeployError, match=r"^t\.json has no 'schema_version' field"):
        LatencyTable.from_json({"space": "darts"}, source="t.json")
    with pytest.raises(NasDeployError, match=r"^t\.json is not a valid latency table \(field 'template' is missing\)"):
        LatencyTable.from_json({"schema_version": LatencyTable.schema_version, "space": "darts"}, source="t.json")


def test_an_unknown_setting_is_a_short_line_pointing_to_the_listing(tmp_path):
    result = run_cli("search", "--set", "nonexistent=1", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith("error: icdarts has no setting 'nonexistent'; its ") and line.endswith(
        " settings: nasdeploy strategies icdarts")
    assert len(line) < 120 and not (tmp_path / "out").exists()
    typo = one_line(run_cli("search", "--set", "alpha_rate=0.1", "--out", str(tmp_path / "out"), cwd=tmp_path).stderr)
    assert "icdarts has no setting 'alpha_rate' (did you mean 'alpha_lr'" in typo
