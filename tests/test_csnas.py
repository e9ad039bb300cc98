"""CSNAS: the contrastive maths (Eqs. 1-3, memory bank), θ encoding, label-free search, the budget before any
training, resumable and shared Optuna studies, and the one-line errors of its storage / study settings."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

import nasdeploy.search.context as context_module
import nasdeploy.search.csnas.run as csnas_module
from nasdeploy.errors import NasDeployError
from nasdeploy.io import read_json
from nasdeploy.latency.predictor import predict_latency_ms
from nasdeploy.latency.table import load_table
from nasdeploy.latency.trust import TablePolicy
from nasdeploy.search.base import SearchRequest, get_strategy
from nasdeploy.search.shared.contrastive import MemoryBank, csnas_loss, nce_loss
from nasdeploy.search.csnas.candidate import CandidateScore
from nasdeploy.search.csnas.encoding import all_zero_theta, decode, edge_names, param_name
from nasdeploy.search.csnas.study import make_sampler, masked
from nasdeploy.spaces.darts import Genotype
from nasdeploy.spaces.record import ArchitectureRecord
from test_icdarts_search import make_table


# ------------------------------------------------------------------------------------------ Eqs. 1-3, memory bank
def test_nce_loss_by_hand():
    # item 0: anchor (1, 0), positive (1, 0): s = 1; its negatives are the views of items 1 and 2, compared with the
    # positive: s = -1 and 1.  τ = 1, S = e^-1 + e:
    #   -log(e / (e + S)) - log(1 - e^-1 / (e^-1 + S)) - log(1 - e / (e + S)) = 1.502936...
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    positives = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, -1.0]])
    negatives = torch.tensor([[0.0, 1.0], [-1.0, 0.0], [1.0, 0.0]])
    owner = torch.tensor([0, 1, 2])
    loss = nce_loss(anchors, positives, negatives, owner, tau=1.0)
    assert loss[0].item() == pytest.approx(1.5029360954949662, rel=1e-6)

    def by_hand(s_pos: float, s_negs: list[float], tau: float) -> float:  # Eq. 1 and Eq. 2 written out
        # s_pos = s(anchor, positive); s_negs = s(positive, negative) for the item's negatives
        e_pos, e_negs = math.exp(s_pos / tau), [math.exp(s / tau) for s in s_negs]
        total = sum(e_negs)
        return -math.log(e_pos / (e_pos + total)) - sum(math.log(1 - e / (e + total)) for e in e_negs)

    r = 1 / math.sqrt(2)
    tau = 0.5
    expected = [by_hand(1.0, [-1.0, 1.0], tau), by_hand(r, [r, r], tau), by_hand(0.0, [-r, -r], tau)]
    assert nce_loss(anchors, positives, negatives, owner, tau).tolist() == pytest.approx(expected, rel=1e-5)
    # an item's own views are never its negatives: another view of item 0, equal to its positive, changes nothing for it
    more = nce_loss(anchors, positives, torch.cat([negatives, positives[:1]]), torch.tensor([0, 1, 2, 0]), tau)
    assert more[0].item() == pytest.approx(expected[0], rel=1e-6)
    # Eq. 3: λ·L_NCE(r_x, z^t) + (1 - λ)·L_NCE(r_x, z)
    image = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    eq3 = csnas_loss(anchors, positives, image, negatives, owner, tau=tau, lam=0.25)
    plain = nce_loss(anchors, image, negatives, owner, tau)
    assert eq3.tolist() == pytest.approx((0.25 * torch.tensor(expected) + 0.75 * plain).tolist(), rel=1e-5)


def test_memory_bank_by_hand():
    bank = MemoryBank(3, 2, momentum=0.5)
    first = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, -1.0]])
    anchors = bank.anchors(torch.tensor([0, 1, 2]), first=first)  # first sight: r = z / |z|
    assert anchors.tolist() == [[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]
    bank.update(torch.tensor([0, 2]), torch.tensor([[0.0, 4.0], [3.0, 0.0]]))  # r <- 0.5 r + 0.5 z/|z|
    assert bank.values.tolist() == [[0.5, 0.5], [0.0, 1.0], [0.5, -0.5]]
    assert bank.anchors(torch.tensor([1]), first=torch.tensor([[9.0, 9.0]])).tolist() == [[0.0, 1.0]]  # filled: kept
    fresh = MemoryBank(3, 2, momentum=0.5)
    fresh.update(torch.tensor([1]), torch.tensor([[0.0, -2.0]]))  # an empty entry starts at z/|z|
    assert fresh.values[1].tolist() == [0.0, -1.0] and fresh.filled.tolist() == [False, True, False]


# ------------------------------------------------------------------------------------------ θ
def test_theta_has_the_papers_length_and_decodes_to_a_genotype():
    assert len(edge_names(4)) == 28 and len(edge_names(5)) == 40  # §IV-A: 28 for N = 4, 40 for N = 5
    theta = all_zero_theta(4)
    theta[param_name("normal", 1, 2)] = "sep_conv_3x3"
    theta[param_name("reduce", 0, 1)] = "max_pool_3x3"
    genotype = decode(theta, 4)
    assert genotype.normal[1] == [("sep_conv_3x3", 2)] and genotype.normal[0] == [("none", 0)]
    assert genotype.reduce[0] == [("max_pool_3x3", 1)] and genotype.normal_concat == [2, 3, 4, 5]
    genotype.validate()


def test_sampler_is_seeded_per_trial():
    import optuna

    from nasdeploy.search.csnas.config import CSNASConfig

    config = CSNASConfig(n_startup_trials=5)

    def proposals(seed: int, count: int = 3) -> list[dict]:
        study = optuna.create_study(sampler=make_sampler(config, seed))
        out = []
        for _ in range(count):
            trial = study.ask()
            out.append({n: trial.suggest_categorical(n, ("a", "b", "c", "d")) for n in ("x", "y", "z", "w")})
            study.tell(trial, 0.0)
        return out

    assert proposals(0) == proposals(0)  # reproducible
    assert len({json.dumps(p) for p in proposals(0)}) == 3 and proposals(0) != proposals(1)
    assert masked("postgresql://me:secret@db/x") == "postgresql://me:***@db/x"


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def lut(tmp_path_factory) -> Path:
    return make_table(tmp_path_factory.mktemp("lut") / "tiny.json")


def request(out: Path, table: Path | None = None, budget: float | None = None, resume: bool = False, **options):
    # hand-made table (prices by op, not by this machine): spot check skipped on purpose
    return SearchRequest(space="darts", out_dir=out, table_path=table, latency_budget_ms=budget, preset="tiny",
                         options=options, table_policy=TablePolicy(trust=True), resume=resume)


def fake_training(monkeypatch) -> list[Genotype]:
    """Replace candidate training by a deterministic score; returns the genotypes 'trained'."""
    trained: list[Genotype] = []

    def fake(ctx, genotype, search_template, images, config):
        trained.append(genotype)
        value = zlib.crc32(json.dumps(genotype.to_json()).encode()) / 2**32
        return CandidateScore(value, [value], 0.0, 1)

    monkeypatch.setattr(csnas_module, "train_and_score", fake)
    return trained


# ------------------------------------------------------------------------------------------ label-free search
class LabelTrap(tuple):
    """(images, labels) whose labels raise when read."""

    def __getitem__(self, index):
        if not isinstance(index, int) or index != 0:
            raise AssertionError("csnas read a label")
        return tuple.__getitem__(self, 0)

    def __iter__(self):
        raise AssertionError("csnas iterated over (images, labels)")


class Unlabelled(TensorDataset):
    def __init__(self, dataset: TensorDataset):
        self.tensors = LabelTrap(dataset.tensors)
        self.size = len(dataset.tensors[0])

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index):
        raise AssertionError("csnas read a labelled sample")


def test_search_never_reads_a_label(monkeypatch, lut, tmp_path):
    real = context_module.load_search_data

    def unlabelled(spec, input_size, seed, val_fraction=0.5, split="train"):
        data = real(spec, input_size, seed, val_fraction, split)
        return context_module.SearchData(Unlabelled(data.train), Unlabelled(data.val), data.info)

    monkeypatch.setattr(context_module, "load_search_data", unlabelled)
    result = get_strategy("csnas").run(request(tmp_path, lut, n_trials=2))
    log = read_json(result.log_path)
    record = ArchitectureRecord.load(result.arch_path)
    trained = [row for row in log["trials"] if row["trained"]]
    assert len(trained) == 2 and all(math.isfinite(row["value"]) and row["train_seconds"] > 0 for row in trained)
    assert record.metrics["contrastive_loss"] == min(row["value"] for row in trained)
    assert "Eq. 3" in log["objective"] and log["search_images"]["count"] >= 2


# ------------------------------------------------------------------------------------------ the budget
def test_no_candidate_over_the_budget_is_trained(monkeypatch, lut, tmp_path):
    trained = fake_training(monkeypatch)
    budget = 800.0  # about a quarter of random θ fit under it on the hand-made table
    result = get_strategy("csnas").run(request(tmp_path, lut, budget=budget, n_trials=6))
    table = load_table(lut)
    metrics = result.record.metrics
    assert len(trained) == metrics["trials_trained"] == 6  # a repeated θ is told its twin's value, not retrained
    assert all(predict_latency_ms(table, g) <= budget for g in trained)
    log = read_json(result.log_path)
    rejected = [row for row in log["trials"] if row["rejected"]]
    assert rejected and all(row["state"] == "PRUNED" and not row["trained"] for row in rejected)
    assert all(row["predicted_latency_ms"] > budget and row["constraints"]["latency_ms"] > 0 for row in rejected)
    assert result.record.metrics["trials_rejected"] == len(rejected)
    assert result.record.metrics["predicted_latency_ms"] <= budget


def test_flops_budget_is_checked_before_training(monkeypatch, lut, tmp_path):
    trained = fake_training(monkeypatch)
    with pytest.raises(NasDeployError, match="below the cheapest csnas network"):
        get_strategy("csnas").run(SearchRequest(space="darts", out_dir=tmp_path, preset="tiny", flops_budget=10.0))
    assert not trained


# ------------------------------------------------------------------------------------------ studies
def test_resume_continues_the_same_study(monkeypatch, lut, tmp_path):
    fake_training(monkeypatch)
    strategy = get_strategy("csnas")
    first = strategy.run(request(tmp_path, lut, n_trials=3))
    before = read_json(first.log_path)["trials"]
    second = strategy.run(request(tmp_path, lut, resume=True, n_trials=5))
    after = read_json(second.log_path)["trials"]
    assert [row["number"] for row in after][:len(before)] == [row["number"] for row in before]
    assert [row["value"] for row in after][:len(before)] == [row["value"] for row in before]  # kept, not redone
    assert second.record.metrics["trials_trained"] == 5 > first.record.metrics["trials_trained"] == 3
    assert second.record.metrics["contrastive_loss"] <= first.record.metrics["contrastive_loss"]
    assert second.record.metrics["contrastive_loss"] == min(row["value"] for row in after if row["state"] == "COMPLETE")


def test_study_errors(monkeypatch, lut, tmp_path):
    fake_training(monkeypatch)
    strategy = get_strategy("csnas")
    with pytest.raises(NasDeployError, match="there is no study 'csnas-[0-9a-f]{12}'"):
        strategy.run(request(tmp_path / "a", lut, resume=True))
    first = strategy.run(request(tmp_path / "b", lut, n_trials=1, study="mine"))
    with pytest.raises(NasDeployError, match=r"study 'mine' .* created with other settings \(settings.tau\)"):
        strategy.run(request(tmp_path / "b", lut, n_trials=2, study="mine", tau=0.1))
    # unnamed, other settings get a study of their own in the same storage (a re-search for another budget)
    other = strategy.run(request(tmp_path / "b", lut, budget=5000.0, n_trials=1))
    assert other.record.metrics["study"] != first.record.metrics["study"] == "mine"
    with pytest.raises(NasDeployError, match="cannot open Optuna storage"):
        strategy.run(request(tmp_path / "c", lut, storage=f"journal:{tmp_path}/missing/x.journal"))


def cli(*args: str) -> subprocess.Popen:
    import nasdeploy

    root = str(Path(nasdeploy.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", "from nasdeploy.cli import main; main()", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_storage_and_study_errors_are_one_line_exit_2(monkeypatch, tmp_path):
    fake_training(monkeypatch)
    journal = tmp_path / "shared.journal"
    get_strategy("csnas").run(SearchRequest(space="darts", out_dir=tmp_path / "made", preset="tiny",
                                            options={"n_trials": 1, "storage": f"journal:{journal}", "study": "s"}))
    common = ("search", "--strategy", "csnas", "--preset", "tiny")
    runs = {
        "cannot open Optuna storage": cli(*common, "--out", str(tmp_path / "x"), "--set", "storage=sqlite:////no/such/dir/s.db"),
        "created with other settings": cli(*common, "--out", str(tmp_path / "y"), "--set", f"storage=journal:{journal}",
                                           "--set", "study=s", "--set", "tau=0.2"),
        "there is no study": cli(*common, "--out", str(tmp_path / "z"), "--resume"),
    }
    for expected, process in runs.items():
        _, stderr = process.communicate(timeout=300)
        lines = [line for line in stderr.strip().splitlines() if line.strip() and "error" in line.lower()]
        assert process.returncode == 2, stderr
        assert len(lines) == 1 and expected in lines[0] and "Traceback" not in stderr, stderr


def test_two_workers_share_one_study(lut, tmp_path):
    journal = tmp_path / "shared.journal"
    workers = [
        cli("search", "--strategy", "csnas", "--preset", "tiny", "--table", str(lut), "--trust-table",
            "--out", str(tmp_path / f"worker{k}"), "--set", f"storage=journal:{journal}", "--set", "study=shared",
            "--set", "n_trials=6")
        for k in range(2)
    ]
    for process in workers:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    logs = [read_json(tmp_path / f"worker{k}" / "search_log.json") for k in range(2)]
    trained_by = [log["here"]["trained"] for log in logs]
    assert all(trained_by), "both workers contributed trials"
    assert not set(trained_by[0]) & set(trained_by[1]), "no trial was trained by both"
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="shared", storage=JournalStorage(JournalFileBackend(str(journal))))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    trained = sorted(t.number for t in complete if t.user_attrs.get("trained"))
    assert trained == sorted(trained_by[0] + trained_by[1])  # every trained trial ran exactly once, none lost
    assert len({json.dumps(t.params, sort_keys=True) for t in complete if t.user_attrs.get("trained")}) == len(trained)
    assert 6 <= len(trained) <= 7  # at most one trial beyond n_trials: the other worker's last one
    best = min(complete, key=lambda t: (t.value, t.number))
    for k in range(2):
        record = ArchitectureRecord.load(tmp_path / f"worker{k}" / "arch.json")
        assert record.metrics["best_trial"] == best.number and record.metrics["contrastive_loss"] == best.value
        assert record.arch.to_json() == decode(best.params, 4).to_json()


@pytest.mark.slow
def test_run_pipeline_with_csnas_end_to_end(lut, tmp_path):
    """``nasdeploy run --strategy csnas`` (tiny preset): search, retrain, export like every strategy."""
    from nasdeploy.pipeline import STAGES, RunConfig, run_pipeline, stage_search

    # the hand-made table prices ops, not this machine: its spot check is skipped on purpose (as in `request`)
    config = RunConfig(out=tmp_path / "run", strategy="csnas", preset="tiny", table=lut, trust_table=True)
    state = run_pipeline(config)
    assert [state["stages"][s]["status"] for s in STAGES] == ["done"] * 4
    assert state["summary"]["spot_check"] == "spot check: not run (--trust-table)"
    record = ArchitectureRecord.load(tmp_path / "run" / "search" / "arch.json")
    assert record.metrics["strategy"] == "csnas" and record.metrics["predicted_latency_ms"] <= state["budget_ms"]
    assert state["summary"]["parity_max_abs_diff"] <= 1e-4
    # a re-search for another budget in the same folder gets a study of its own
    assert stage_search(config, tmp_path / "run", state["budget_ms"] * 1.5).status == "done"
