"""benchmarks/gpu_check.sh: per-step deadlines and one summary table (the GPU steps themselves need a GPU host)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = ["env", "runtimes", "gpu-tests", "verbatim-profile", "cuda-paper-table", "validate-lut", "run-tiny-cuda",
         "suite", "clocks-after"]


def summary_rows(text: str) -> dict[str, list[str]]:
    return {cells[0]: cells for cells in (line.split("\t") for line in text.splitlines())}


def test_a_step_is_ok_failed_or_timed_out_against_its_own_cap(tmp_path):
    script = f"""
        DEADLINE=100; START=$(date +%s); OUT={tmp_path}; mkdir -p $OUT/steps; LOG=$OUT/gpu.log; SUMMARY=$OUT/summary.tsv
        source {REPO}/benchmarks/gpu_check_lib.sh
        step good 10 bash -c 'echo first; echo 3 passed'
        step broken 10 bash -c 'echo no such table >&2; exit 2'
        step slow 1 sleep 30
        DEADLINE=0; step late 10 true
    """
    subprocess.run(["bash", "-c", script], check=True, timeout=60)
    rows = summary_rows((tmp_path / "summary.tsv").read_text())
    assert list(rows) == ["good", "broken", "slow", "late"]
    assert rows["good"][1] == "ok" and rows["good"][3] == "3 passed"
    assert rows["broken"][1] == "FAIL(rc=2)" and rows["broken"][3] == "no such table"
    assert rows["slow"][1] == "TIMEOUT(1s)" and int(rows["slow"][2]) < 30
    assert rows["late"][1:3] == ["SKIPPED", "0"]
    assert "=== broken: rc=2" in (tmp_path / "gpu.log").read_text()


def test_with_no_time_left_every_step_is_skipped_and_the_summary_lists_all(tmp_path):
    done = subprocess.run(["bash", str(REPO / "benchmarks/gpu_check.sh"), "10"], cwd=REPO, env={**os.environ, "OUT": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [line.split()[:2] for line in done.stdout.splitlines()[1:]]
    assert rows[:-1] == [[name, "SKIPPED"] for name in STEPS] and rows[-1][0] == "total"
    assert (tmp_path / "summary.txt").read_text() == done.stdout
