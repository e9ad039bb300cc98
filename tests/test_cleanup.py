"""The suite leaves nothing behind outside its tmp_path: the session's spot-check cache folder is removed at its end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def test_a_pytest_session_removes_its_cache_folder(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "NASDEPLOY_CACHE_DIR"}
    env.update(TMPDIR=str(tmp), PYTHONPATH=str(HERE.parent / "pipeline"))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
                           str(HERE / "test_cli_help.py::test_spot_check_tolerance_is_in_per_cent")],
                          env=env, cwd=tmp, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith("nasdeploy-test-cache-")) == []
