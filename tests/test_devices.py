"""``--device cuda:N`` is checked against the visible devices before any work, in every command: one line, exit 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from nasdeploy.errors import NasDeployError
from nasdeploy.hardware.devices import require_device, visible_devices

REPO = Path(__file__).resolve().parents[1]
REFERENCE_TABLE = REPO / "latency_tables/cpu-amd-epyc-1t/onnxruntime/darts-op3-32px-c16-l8-00e821-b1.json"
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


@pytest.fixture
def one_fake_gpu(monkeypatch):
    """torch as it answers on a host with one GPU: the decision is tested with those facts, not a real device."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake H200")


def test_cpu_is_always_there():
    assert require_device("cpu") is None and visible_devices()[0] == "cpu"


@no_cuda
def test_absent_cuda_is_one_line_naming_the_visible_devices():
    with pytest.raises(NasDeployError) as info:
        require_device("cuda:0")
    message = str(info.value)
    assert "\n" not in message
    assert "no CUDA device is visible here" in message and "visible devices: cpu;" in message
    assert "pass --device cpu" in message


def test_index_beyond_the_visible_gpus_is_refused(one_fake_gpu):
    assert require_device("cuda:0") == 0 and require_device("cuda") == 0
    with pytest.raises(NasDeployError) as info:
        require_device("cuda:7")
    message = str(info.value)
    assert "\n" not in message and "--device cuda:7: no such CUDA device" in message
    assert "visible devices: cpu, cuda:0 (Fake H200)" in message and "cuda:0..cuda:0" in message


def test_search_context_refuses_a_missing_gpu_before_any_work(one_fake_gpu, tmp_path):
    from nasdeploy.search.context import resolve_device

    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(NasDeployError, match="no such CUDA device"):
        resolve_device("cuda:7")


def cuda_table(tmp_path: Path) -> Path:
    table = json.loads(REFERENCE_TABLE.read_text())
    table["device"] = "cuda:0"
    path = tmp_path / "cuda-table.json"
    path.write_text(json.dumps(table))
    return path


def command_lines(tmp_path: Path) -> dict[str, list[str]]:
    arch = tmp_path / "arch.json"
    return {
        "profile": ["profile", "--device", "cuda:0", "--out", str(tmp_path / "t.json")],
        "search": ["search", "--device", "cuda:0", "--out", str(tmp_path / "search")],
        "train": ["train", "--arch", str(arch), "--device", "cuda:0", "--out", str(tmp_path / "train")],
        "run": ["run", "--device", "cuda:0", "--out", str(tmp_path / "run")],
        "export": ["export", "--checkpoint", str(tmp_path / "model.pt"), "--device", "cuda:0", "--out-dir", str(tmp_path / "x")],
        "measure": ["measure", str(tmp_path / "model.onnx"), "--device", "cuda:0"],
        "validate-lut": ["validate-lut", "--table", str(cuda_table(tmp_path)), "--out", str(tmp_path / "fid")],
    }


@no_cuda
@pytest.mark.parametrize("command", ["profile", "search", "train", "run", "export", "measure", "validate-lut"])
def test_every_command_refuses_cuda_in_one_line_with_exit_2(command, tmp_path, monkeypatch, capsys):
    from nasdeploy.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["nasdeploy", *command_lines(tmp_path)[command]])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    printed = capsys.readouterr().err.strip()  # the CLI console writes to stderr
    assert printed.count("\n") == 0 and "--device cuda:0: no CUDA device is visible here" in printed
    assert "visible devices: cpu" in printed
    assert [p.name for p in tmp_path.iterdir()] == ["cuda-table.json"]  # nothing was written
