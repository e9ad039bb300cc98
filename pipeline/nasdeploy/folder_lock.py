"""One writer per run or search folder: an advisory lock on ``FOLDER/.nasdeploy.lock``.

The lock is the kernel's ``flock`` on that file, so it is released when its process ends, however it ends
(``kill -9`` included): a killed holder leaves no lock, only its description in the file. The file says who
holds it (pid, host, start time, command); a second writer is refused with that one line, and a writer that
finds the description of a holder that is gone takes the folder over and logs it. The file is emptied, never
removed, on release: removing it would let two processes lock two different files of the same name.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from nasdeploy.errors import NasDeployError

LOCK_NAME = ".nasdeploy.lock"

log = logging.getLogger(__name__)


class FolderInUse(NasDeployError):
    """Another process holds the folder's lock."""


def this_holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime()),
            "command": " ".join(["nasdeploy", *sys.argv[1:]])[:200]}


def describe(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
            f" ({holder.get('command', '?')})")


def read_holder(fd: int) -> dict:
    """The description in the lock file, or {} when it is empty or unreadable (a holder still writing it)."""
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}


def write_holder(fd: int, holder: dict) -> None:
    data = (json.dumps(holder) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


@contextlib.contextmanager
def hold_folder(folder: Path | str, what: str = "folder") -> Iterator[Path]:
    """Hold ``folder`` (created if absent) for this process; refused with one line if another process holds it.

    A folder this call created is removed again when the work inside fails having written nothing else (a command
    refused by its checks leaves nothing behind)."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(fd)
            raise FolderInUse(f"{what} {folder} is in use by {describe(holder)}; wait for it to finish or pass "
                              "another --out") from None
        stale = read_holder(fd)
        if stale:
            log.warning("taking over %s %s: its last writer, %s, ended without releasing it (killed?)", what, folder,
                        describe(stale))
        write_holder(fd, this_holder())
        try:
            yield folder
        except BaseException:
            if created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
                (folder / LOCK_NAME).unlink()
                folder.rmdir()
            raise
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the flock
