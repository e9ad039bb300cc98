"""ExecuTorch (XNNPACK) runtime: timing, versions, non-delegated ops, the absent-runtime line, .pte export.

Tests marked ``executorch`` need the mobile extra (``pip install -e '.[mobile]'``) and skip with that reason without it;
the absent-runtime tests hide the package from the import system, so they run everywhere.
"""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from nasdeploy.errors import NasDeployError
from nasdeploy.hardware import MeasureMethod

FAST = MeasureMethod(warmup=2, repeats=5)


def executorch_present() -> bool:
    try:
        import executorch.runtime  # noqa: F401
    except ImportError:
        return False
    return True


needs_executorch = pytest.mark.skipif(not executorch_present(), reason="executorch not installed: pip install -e '.[mobile]'")


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()


class WithCumsum(nn.Module):
    """A conv XNNPACK takes, then a cumulative sum it does not (it runs on ExecuTorch's portable kernels)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return torch.cumsum(self.conv(x), dim=1)


# ---------------------------------------------------------------- the backend


@pytest.mark.executorch
@needs_executorch
def test_conv_net_is_timed_with_the_method_and_versions_recorded():
    from nasdeploy.hardware import get_backend

    backend = get_backend("executorch", "cpu", MeasureMethod(warmup=2, repeats=5))
    timing = backend.measure_module(conv_net(), (1, 3, 16, 16))
    assert len(timing.samples_ms) == 5 and timing.median > 0
    assert backend.method.threads == 1 and backend.method.clock == "thread"
    versions = backend.versions()
    assert versions["executorch"].startswith("1.5") and versions["executorch_backend"] == "xnnpack"
    assert versions["executorch_threads"] == "1" and versions["torch"] == torch.__version__


@pytest.mark.executorch
@needs_executorch
def test_thread_pool_is_set_and_read_back():
    from executorch.extension.pybindings import portable_lib

    from nasdeploy.hardware import get_backend

    get_backend("executorch", "cpu", MeasureMethod(threads=2))
    assert portable_lib._threadpool_get_thread_count() == 2
    backend = get_backend("executorch", "cpu", MeasureMethod())
    assert portable_lib._threadpool_get_thread_count() == 1 and backend.threads == 1


@pytest.mark.executorch
@needs_executorch
def test_non_delegated_ops_are_kept_and_logged(caplog):
    from nasdeploy.hardware import get_backend

    backend = get_backend("executorch", "cpu", FAST)
    backend.prepare(conv_net(), (1, 3, 16, 16))
    assert backend.program_notes() == {}
    with caplog.at_level("WARNING"):
        run = backend.prepare(WithCumsum(), (1, 3, 16, 16))
    assert backend.program_notes() == {"non_delegated": {"aten_cumsum_default": 1}}
    assert "XNNPACK did not take aten_cumsum_default in WithCumsum" in caplog.text
    assert run().median > 0  # the fallback still runs, and is timed


@pytest.mark.executorch
@needs_executorch
def test_profiler_stores_non_delegated_ops_per_entry(tmp_path):
    from nasdeploy.hardware import get_backend
    from nasdeploy.latency.profiler import measure_entries, non_delegated_ops
    from nasdeploy.latency.table import LatencyTable
    from nasdeploy.progress import progress_bar
    from nasdeploy.spaces.base import OpInstance

    class Space:  # two op instances: one XNNPACK takes, one it does not
        def build_op(self, inst):
            return WithCumsum() if inst.op == "cumsum" else nn.Conv2d(3, 8, 3, padding=1)

    conv, cumsum = OpInstance("conv", 3, 8, 8, 8, 1), OpInstance("cumsum", 3, 8, 8, 8, 1)
    backend = get_backend("executorch", "cpu", FAST)
    table = LatencyTable("test", {}, "executorch", "cpu", {}, backend.versions(), FAST.to_dict(), path=tmp_path / "t.json")
    with progress_bar() as bar:
        measure_entries(table, Space(), [conv, cumsum], backend, 0, 100, bar, bar.add_task("ops", total=2, info=""), {})
    assert table.entries[cumsum.key()]["non_delegated"] == {"aten_cumsum_default": 1}
    assert "non_delegated" not in table.entries[conv.key()] and table.entries[conv.key()]["n"] == 5
    assert non_delegated_ops(table) == {"aten_cumsum_default": [cumsum.key()]}


# ---------------------------------------------------------------- without the extra


def hide_executorch(monkeypatch):
    """As if the mobile extra were not installed: ``import executorch`` fails (nothing is uninstalled)."""
    for name in [n for n in sys.modules if n == "executorch" or n.startswith("executorch.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "executorch", None)


def test_absent_executorch_is_one_line_naming_the_extra(monkeypatch):
    from nasdeploy.hardware.executorch_backend import ExecuTorchBackend
    from nasdeploy.hardware.runtimes import resolve_runtime

    hide_executorch(monkeypatch)
    fact = ExecuTorchBackend.availability("cpu")
    assert not fact.present and fact.install == "pip install -e '.[mobile]'"
    with pytest.raises(NasDeployError) as raised:
        resolve_runtime("cpu", "executorch")
    assert "\n" not in str(raised.value) and "pip install -e '.[mobile]'" in str(raised.value)
    with pytest.raises(NasDeployError, match=r"executorch is not installed .*\.\[mobile\]"):
        ExecuTorchBackend("cpu", MeasureMethod())


def test_executorch_is_cpu_only_and_never_a_default():
    from nasdeploy.hardware.executorch_backend import ExecuTorchBackend
    from nasdeploy.hardware.runtimes import deployment_order

    fact = ExecuTorchBackend.availability("cuda:0")
    assert not fact.present and "CPUs only" in fact.missing
    assert "executorch" not in deployment_order("cpu") and "executorch" not in deployment_order("cuda:0")
