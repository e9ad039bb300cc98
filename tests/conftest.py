"""Shared test settings.

Torch picks one thread per core; on a small shared CI box (2 cores, other processes) two threads fight
for the cores and tiny networks run many times slower. Every test runs single-threaded unless it sets
its own count; subprocesses inherit OMP_NUM_THREADS=1. The count is also set at import, so module- and
session-scoped fixtures (set up before any per-test fixture) run single-threaded too: a search run in a
module fixture and its resumed twin in a test must do the same float arithmetic.

Latency-table spot checks are cached in a temporary folder for the session (NASDEPLOY_CACHE_DIR, inherited
by subprocesses), not in the user's ~/.cache; the session that made the folder removes it at its end.
"""

import os
import shutil
import tempfile

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
# made only when the caller did not set one (xdist workers inherit the controller's), and removed by whoever made it
SESSION_CACHE = None if "NASDEPLOY_CACHE_DIR" in os.environ else tempfile.mkdtemp(prefix="nasdeploy-test-cache-")
if SESSION_CACHE is not None:
    os.environ["NASDEPLOY_CACHE_DIR"] = SESSION_CACHE
torch.set_num_threads(1)


def pytest_sessionfinish(session, exitstatus):
    if SESSION_CACHE is not None:
        shutil.rmtree(SESSION_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
