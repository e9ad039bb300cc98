"""What each rank runs in tests/test_distributed.py: ``torchrun --standalone --nproc-per-node 2 ddp_worker.py JOB ...``.

Every rank calls the library as ``nasdeploy train`` / ``nasdeploy search`` do, with its own output folder
(``OUT/rank<r>``) so the test can see which rank wrote files, and dumps what it ended with to
``DUMP/rank<r>.pt`` (the test's own file, written with torch.save, not through nasdeploy) for comparison.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)


def train_job(out: Path, dump: Path, rank: int) -> None:
    """An uninterrupted 2-epoch run, and the same run killed after epoch 1 and resumed."""
    sys.path.insert(0, str(Path(__file__).parent))
    import nasdeploy.train.trainer as trainer
    from nasdeploy import distributed
    from nasdeploy.errors import NasDeployError
    from test_train import darts_record

    config = trainer.TrainConfig(epochs=2, batch_size=16, max_batches=2, seed=3, threads=1)
    record = darts_record()
    net, metrics = trainer.train_model(record, "digits", config, out / "straight")

    class Killed(Exception):
        pass

    save = trainer.atomic_torch_save

    def save_then_die(obj, path):  # every rank "dies" right after the first epoch's checkpoint
        save(obj, path)
        if str(path).endswith("checkpoint.pt") and obj["epoch"] == 0:
            raise Killed()

    trainer.atomic_torch_save = save_then_die
    try:
        trainer.train_model(record, "digits", config, out / "resumed")
    except Killed:
        pass
    trainer.atomic_torch_save = save
    resumed, resumed_metrics = trainer.train_model(record, "digits", config, out / "resumed", resume=True)
    try:  # the replica check itself: ranks holding different numbers must be caught
        distributed.current().check_replicas({"w": torch.tensor([float(rank)])}, "test tensors")
        caught = None
    except NasDeployError as exc:
        caught = str(exc)
    torch.save({"straight": net.state_dict(), "resumed": resumed.state_dict(), "metrics": metrics,
                "resumed_metrics": resumed_metrics, "divergence_error": caught}, dump / f"rank{rank}.pt")


def icdarts_job(out: Path, dump: Path, rank: int, table: str) -> None:
    """A tiny ICDARTS search under a latency budget (hand-made table): its α and genotype on this rank."""
    import nasdeploy.search.icdarts as icdarts
    from nasdeploy.latency.trust import TablePolicy
    from nasdeploy.search.base import SearchRequest, get_strategy

    runs = []
    run = icdarts.ICDARTSRun.run

    def keep(self, resume):
        runs.append(self)
        return run(self, resume)

    icdarts.ICDARTSRun.run = keep
    options = {"steps_per_epoch": 2, "epochs": 1, "pretrain_epochs": 1, "warmup_epochs": 1, "batch_size": 8,
               "eval_layers": 3, "eval_channels": 4}
    request = SearchRequest(space="darts", out_dir=out, table_path=Path(table), latency_budget_ms=400.0, data="digits",
                            preset="tiny", seed=0, options=options, table_policy=TablePolicy(trust=True))
    result = get_strategy("icdarts").run(request)
    S = runs[-1].S
    torch.save({"alpha": [p.detach().clone() for p in S.arch_parameters()],
                "weights": [p.detach().clone() for p in S.weight_parameters()],
                "arch": json.dumps(result.record.to_json()["arch"], sort_keys=True),
                "metrics": result.record.metrics}, dump / f"rank{rank}.pt")


def senas_job(out: Path, dump: Path, rank: int) -> None:
    """A tiny SE-NAS search (MobileNet space, FLOPs budget): the paths this rank sampled and its supernet."""
    import nasdeploy.search.senas as senas
    from nasdeploy.latency.trust import TablePolicy
    from nasdeploy.search.base import SearchRequest, get_strategy

    paths, runs = [], []
    sample, setup = senas.SenasRun.sample, senas.SenasRun.setup

    def keep_path(self, alive, rng, forced=None):
        path = sample(self, alive, rng, forced)
        paths.append(repr(path))
        return path

    def keep_run(self):
        runs.append(self)
        return setup(self)

    senas.SenasRun.sample, senas.SenasRun.setup = keep_path, keep_run
    sys.path.insert(0, str(Path(__file__).parent))
    from nasdeploy.spaces.base import get_space
    from test_senas_search import probe_costs

    costs = probe_costs("mobilenet", get_space("mobilenet").default_template("tiny"))
    budget = costs.cheapest_value(costs.paths.candidates, "flops") * 1.5  # a budget that rejects some paths
    request = SearchRequest(space="mobilenet", out_dir=out, flops_budget=budget, preset="tiny", seed=0,
                            options={"population": 4, "generations": 1}, table_policy=TablePolicy(trust=True))
    result = get_strategy("senas").run(request)
    torch.save({"paths": paths, "supernet": {k: v.detach().clone() for k, v in runs[-1].supernet.state_dict().items()},
                "arch": json.dumps(result.record.to_json()["arch"], sort_keys=True)}, dump / f"rank{rank}.pt")


def bad_input_job(out: Path, dump: Path, rank: int) -> None:
    """Requests every rank must refuse with the same one line, before waiting on the other rank."""
    sys.path.insert(0, str(Path(__file__).parent))
    import nasdeploy.train.trainer as trainer
    from nasdeploy.errors import NasDeployError
    from test_train import darts_record

    errors = {}
    for name, config in {"batch": trainer.TrainConfig(epochs=1, batch_size=33, threads=1),
                         "backend": trainer.TrainConfig(epochs=1, batch_size=32, threads=1, dist_backend="nccl")}.items():
        try:
            trainer.train_model(darts_record(), "digits", config, out / name)
            errors[name] = None
        except NasDeployError as exc:
            errors[name] = str(exc)
    torch.save(errors, dump / f"rank{rank}.pt")


JOBS = {"bad_input": bad_input_job, "train": train_job, "icdarts": icdarts_job, "senas": senas_job}


def main() -> None:
    """``ddp_worker.py JOB[,JOB...] OUT DUMP [TABLE]``: the jobs in order, in the same process group."""
    jobs, out, dump = sys.argv[1].split(","), Path(sys.argv[2]), Path(sys.argv[3])
    rank = int(os.environ["RANK"])
    for job in jobs:
        (dump / job).mkdir(parents=True, exist_ok=True)
        extra = sys.argv[4:] if job == "icdarts" else []
        JOBS[job](out / job / f"rank{rank}", dump / job, rank, *extra)


if __name__ == "__main__":
    main()
