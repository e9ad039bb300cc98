"""One writer per run or search folder (``nasdeploy.folder_lock``): refused with the holder's line, stale locks taken over."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nasdeploy.folder_lock import LOCK_NAME, FolderInUse, hold_folder

REPO = Path(__file__).resolve().parents[1]
REFERENCE_TABLE = REPO / "latency_tables/cpu-amd-epyc-1t/onnxruntime/darts-op3-32px-c16-l8-00e821-b1.json"


def test_a_second_holder_is_refused_with_the_holders_pid_host_and_start(tmp_path):
    with hold_folder(tmp_path / "run", "run folder"):
        holder = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(FolderInUse) as refused:  # a second open file description: as another process would
            with hold_folder(tmp_path / "run", "run folder"):
                pass
    message = str(refused.value)
    assert message.startswith(f"run folder {tmp_path / 'run'} is in use by pid {os.getpid()} on {socket.gethostname()}, "
                              f"started {holder['started']}") and "\n" not in message
    assert (tmp_path / "run" / LOCK_NAME).read_text() == ""  # released: the description is gone
    with hold_folder(tmp_path / "run"):  # and the folder can be held again
        pass


def test_a_killed_holders_lock_is_taken_over_with_a_log_line(tmp_path, caplog):
    folder = tmp_path / "search"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "elsewhere", "started": "then", "command": "x"}))
    with caplog.at_level(logging.WARNING), hold_folder(folder, "search folder"):
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"taking over search folder {folder}: its last writer, pid 999999 on elsewhere, started then" in caplog.text


def test_run_holds_its_run_folder(tmp_path):
    from nasdeploy.pipeline import RunConfig, run_pipeline

    with hold_folder(tmp_path / "run", "run folder"):
        with pytest.raises(FolderInUse, match=f"run folder {tmp_path / 'run'} is in use by pid {os.getpid()}"):
            run_pipeline(RunConfig(out=tmp_path / "run", preset="tiny"))
    assert not (tmp_path / "run" / "run.json").exists()  # refused before writing its state


def test_a_refused_command_leaves_no_folder_it_created(tmp_path):
    with pytest.raises(ValueError), hold_folder(tmp_path / "new"):
        raise ValueError("checks failed")
    assert not (tmp_path / "new").exists()


def nasdeploy(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "pipeline"), "COLUMNS": "400", "NASDEPLOY_TABLE_ROOT": str(cwd / "tables")}
    return subprocess.Popen([sys.executable, "-m", "nasdeploy", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_search_processes_on_one_folder(tmp_path):
    """A real search holds the folder; a second is refused (exit 2, one line); killed with -9, its lock is taken over."""
    out = tmp_path / "search"
    first = nasdeploy("search", "--preset", "tiny", "--out", str(out), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not ((out / LOCK_NAME).is_file() and (out / LOCK_NAME).read_text().strip()):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.2)
        second = nasdeploy("search", "--preset", "tiny", "--seed", "1", "--out", str(out), cwd=tmp_path)
        stdout, stderr = second.communicate(timeout=120)
        assert second.returncode == 2, stderr
        assert stderr.strip().splitlines() == [stderr.strip()]  # one line, nothing before it
        assert f"search folder {out} is in use by pid {first.pid} on {socket.gethostname()}, started " in stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the killed search left its description, not its lock: the next writer takes over and says so
    third = nasdeploy("search", "--preset", "tiny", "--out", str(out), "--resume", "--table", str(REFERENCE_TABLE),
                      "--trust-table", "--latency-budget", "0.001ms", cwd=tmp_path)
    _, stderr = third.communicate(timeout=120)
    text = " ".join(stderr.split())
    assert f"taking over search folder {out}: its last writer, pid {first.pid} on {socket.gethostname()}" in text
    assert third.returncode == 2 and "below the cheapest darts network" in text  # then its own checks ran
