"""Data parallelism under torchrun (nasdeploy.distributed): CPU, gloo, two processes on this machine.

The two-process tests launch ``python -m torch.distributed.run --standalone --nproc-per-node 2`` (torchrun) in a
subprocess: ``ddp_worker.py`` for the library (each rank its own output folder, so the test sees who wrote what)
and ``-m nasdeploy`` for the command line. The normal suite makes one launch (about 45 s on 2 busy cores); the command
line's exit codes and the 1-vs-2-rank accuracy are marked slow (a launch each).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from nasdeploy import distributed
from nasdeploy.errors import NasDeployError
from nasdeploy.io import atomic_write_json
from nasdeploy.train.data import make_loader

HERE = Path(__file__).parent
PIPELINE = HERE.parent / "pipeline"


def torchrun(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    # TMPDIR inside the test's folder: torchrun's agent makes its torchelastic_* log folders there, not in /tmp
    (cwd / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{PIPELINE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "NASDEPLOY_CACHE_DIR": str(cwd / "cache"), "COLUMNS": "200", "TMPDIR": str(cwd / "tmp")}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---------------------------------------------------------------------------------------- one process


def test_one_process_is_a_no_op():
    single = distributed.join("cpu", "auto")
    assert single == distributed.SINGLE and not single.active and single.is_main
    data = TensorDataset(torch.arange(20.0), torch.arange(20))
    a = [y.tolist() for _, y in single.loader(data, 6, shuffle=True, seed=5, drop_last=True)]
    b = [y.tolist() for _, y in make_loader(data, 6, shuffle=True, seed=5, drop_last=True)]
    assert a == b  # exactly train.data.make_loader: single-process runs are unchanged
    grad = torch.nn.Parameter(torch.ones(2))
    grad.grad = torch.tensor([1.0, 3.0])
    single.average_gradients([grad])
    assert grad.grad.tolist() == [1.0, 3.0]
    assert single.all_sum([1.0, 2.0]) == [1.0, 2.0] and single.from_rank0(lambda: 7) == 7


def test_backend_the_device_cannot_use_is_refused():
    with pytest.raises(NasDeployError, match="backend nccl cannot use device 'cpu'.*--dist-backend gloo"):
        distributed.join("cpu", "nccl")
    with pytest.raises(NasDeployError, match="unknown distributed backend 'mpi'"):
        distributed.choose_backend("mpi", "cpu")
    assert distributed.choose_backend("auto", "cpu") == "gloo"


def test_world_size_must_divide_the_global_batch():
    three = distributed.Parallel(rank=0, world_size=3)
    assert three.local_batch(96) == 32
    with pytest.raises(NasDeployError, match=r"global batch 64 is not divisible by the world size 3; pass --batch-size 63 or "
                                             r"--batch-size 66"):
        three.local_batch(64)


def test_rank_shards_make_up_the_global_batch():
    """Batch k of rank 0 and batch k of rank 1 are disjoint halves of one global batch of the sampler's permutation."""
    data = TensorDataset(torch.zeros(21, 1), torch.arange(21))
    ranks = [distributed.Parallel(rank=r, world_size=2) for r in range(2)]
    batches = [[y.tolist() for _, y in p.loader(data, 6, shuffle=True, seed=9, drop_last=True)] for p in ranks]
    assert len(batches[0]) == len(batches[1]) == 21 // 6  # as many steps as one process, on every rank
    order = torch.randperm(21, generator=torch.Generator().manual_seed(9)).tolist()[:20]  # DistributedSampler's
    for k, (mine, theirs) in enumerate(zip(*batches)):
        assert len(mine) == len(theirs) == 3
        assert sorted(mine + theirs) == sorted(order[6 * k : 6 * k + 6])


def test_only_rank_0_writes_and_logs(tmp_path, monkeypatch):
    from nasdeploy.progress import progress_bar

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert not (tmp_path / "a.json").exists() and progress_bar().disable
    monkeypatch.setenv("RANK", "0")
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert (tmp_path / "a.json").exists() and not progress_bar().disable


def test_state_tensors_leave_out_per_rank_batch_norm_statistics():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    names = set(distributed.state_tensors({"net": net.state_dict(), "log": [1, 2]}))
    assert names == {"net.0.weight", "net.0.bias", "net.1.weight", "net.1.bias"}


# ---------------------------------------------------------------------------------------- two processes


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """One torchrun launch (2 gloo processes) running the worker's bad-input, train, ICDARTS and SE-NAS jobs in turn; a
    job that left the ranks out of step would hang or fail the next one."""
    from test_icdarts_search import make_table

    root = tmp_path_factory.mktemp("ddp")
    table = make_table(root / "tiny.json")
    done = torchrun([str(HERE / "ddp_worker.py"), "bad_input,train,icdarts,senas", str(root / "out"), str(root / "dump"), str(table)],
                    root)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def dumps(root: Path, job: str) -> tuple[dict, dict]:
    return tuple(torch.load(root / "dump" / job / f"rank{r}.pt", weights_only=False) for r in range(2))


def test_bad_input_is_the_same_line_on_every_rank(two_ranks):
    r0, r1 = dumps(two_ranks, "bad_input")
    assert r0 == r1
    assert r0["batch"] == ("the global batch 33 is not divisible by the world size 2; pass --batch-size 32 or "
                           "--batch-size 34, or launch a number of processes that divides 33")
    assert r0["backend"].startswith("backend nccl cannot use device 'cpu'") and "--dist-backend gloo" in r0["backend"]
    assert not (two_ranks / "out" / "bad_input").exists()


def test_two_rank_train_identical_weights_rank0_files_and_resume(two_ranks):
    r0, r1 = dumps(two_ranks, "train")
    out = two_ranks / "out" / "train"
    for key in ("straight", "resumed"):  # DDP kept the replicas equal, bit for bit
        assert r0[key].keys() == r1[key].keys()
        assert all(torch.equal(r0[key][k], r1[key][k]) for k in r0[key])
    # a run killed after epoch 1 and resumed under torchrun ends where the uninterrupted one does
    assert all(torch.equal(r0["straight"][k], r0["resumed"][k]) for k in r0["straight"])
    assert [e["test_accuracy"] for e in r0["metrics"]["epochs"]] == [e["test_accuracy"] for e in r0["resumed_metrics"]["epochs"]]
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):  # statistics over both ranks' data
        assert [e[key] for e in r0["metrics"]["epochs"]] == [e[key] for e in r1["metrics"]["epochs"]]
    assert r0["metrics"]["distributed"] == {"world_size": 2, "backend": "gloo", "rank_device": "cpu", "local_batch": 8}
    # only rank 0 wrote files: its checkpoint, model and metrics; rank 1 not even a folder
    names = {p.relative_to(out / "rank0").as_posix() for p in files_under(out / "rank0")}
    assert {"straight/checkpoint.pt", "straight/model.pt", "straight/metrics.json", "resumed/model.pt"} <= names
    assert not (out / "rank1").exists()
    # the replica check itself catches ranks that hold different numbers, with the same line on both
    assert "test tensors differ (w)" in r0["divergence_error"] and r0["divergence_error"] == r1["divergence_error"]


def test_two_rank_icdarts_search_one_arch_json_and_identical_alpha(two_ranks):
    r0, r1 = dumps(two_ranks, "icdarts")
    out = two_ranks / "out" / "icdarts"
    assert all(torch.equal(a, b) for a, b in zip(r0["alpha"], r1["alpha"]))  # α and β, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(r0["weights"], r1["weights"]))
    assert any(not torch.equal(a, torch.zeros_like(a)) for a in r0["alpha"])  # α did move
    assert r0["arch"] == r1["arch"] and r0["metrics"]["distributed"]["world_size"] == 2
    assert [p.name for p in files_under(out) if p.name == "arch.json"] == ["arch.json"]
    assert (out / "rank0" / "arch.json").is_file() and not (out / "rank1").exists()


def test_two_rank_senas_search_samples_the_same_paths(two_ranks):
    r0, r1 = dumps(two_ranks, "senas")
    out = two_ranks / "out" / "senas"
    assert len(r0["paths"]) > 3 and r0["paths"] == r1["paths"]  # training, scoring and evolution drew the same paths
    assert r0["supernet"].keys() == r1["supernet"].keys()
    assert all(torch.equal(r0["supernet"][k], r1["supernet"][k]) for k in r0["supernet"] if not k.endswith(("running_mean", "running_var")))
    assert r0["arch"] == r1["arch"]
    assert (out / "rank0" / "arch.json").is_file() and not (out / "rank1").exists()


@pytest.mark.slow
def test_bad_batch_is_one_line_and_exit_2_on_every_rank(tmp_path):
    from test_train import darts_record

    arch = tmp_path / "arch.json"
    darts_record().save(arch)
    done = torchrun(["-m", "nasdeploy", "train", "--arch", str(arch), "--preset", "tiny", "--batch-size", "33",
                     "--out", str(tmp_path / "out")], tmp_path, timeout=120)
    text = done.stdout + done.stderr
    assert done.returncode != 0
    for rank in range(2):
        line = next(l for l in text.splitlines() if f"rank {rank} of 2: error:" in l)
        assert "global batch 33 is not divisible by the world size 2; pass --batch-size 32 or --batch-size 34" in line
    assert text.count("exitcode  : 2") + text.count("exitcode: 2") >= 1  # torchrun's summary names exit code 2
    assert not (tmp_path / "out").exists()
    assert list((tmp_path / "tmp").glob("torchelastic_*"))  # torchrun's log folders went into the test's folder


@pytest.mark.slow
def test_two_rank_accuracy_matches_one_rank_at_the_same_global_batch(tmp_path):
    """Digits, 10 epochs at global batch 32: 2 ranks × 16 against 1 × 32, final test accuracy within noise.

    After 3 epochs this small network is still on the steep part of its learning curve (seeds 0-2, 1 rank: 64.7,
    71.0, 70.3 %; 2 ranks: 53.3, 67.0, 72.7 %), where a different shuffle (DistributedSampler's permutation) and
    batch-norm statistics over 16 images instead of 32 move the accuracy by ten points either way.
    Trained to convergence, 300 test images at ~90 % give a binomial standard error of ~1.7 points: 5 points is ~3 SE.
    """
    from test_train import darts_record

    from nasdeploy.train.trainer import preset_config, train_architecture

    arch = tmp_path / "arch.json"
    darts_record().save(arch)
    config = preset_config("cpu", epochs=10, batch_size=32, seed=0, threads=1)  # the recipe's cpu preset at batch 32
    one = train_architecture(darts_record(), "digits", config, tmp_path / "one")
    done = torchrun(["-m", "nasdeploy", "train", "--arch", str(arch), "--preset", "cpu", "--epochs", "10", "--batch-size", "32",
                     "--threads", "1", "--out", str(tmp_path / "two")], tmp_path, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    two = __import__("json").loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["distributed"]["world_size"] == 2 and two["config"]["batch_size"] == 32
    assert one["test_accuracy"] > 0.8  # it converged, so the comparison means something
    assert abs(two["test_accuracy"] - one["test_accuracy"]) <= 0.05, (one["test_accuracy"], two["test_accuracy"])
