"""``nasdeploy train`` under torchrun with 1, 2, ... processes: wall time and accuracy at the same global batch.

    PYTHONPATH=pipeline python3 benchmarks/ddp_train.py [--arch runs/search/arch.json] [--preset cpu] [--epochs 3]
        [--nproc 1 2] [--device cpu] [--out /tmp/ddp-train-bench]

Each row is one ``python -m torch.distributed.run --standalone --nproc-per-node N -m nasdeploy train ...`` (the
command a user types), timed end to end (process start, data, training, evaluation, files) and from metrics.json
(``train_time_s``: the epochs only). Without ``--arch`` the network is a fixed random DARTS cell (seed 0) at the
preset's template. Every process gets one thread (``--threads 1``), so on a machine with fewer free cores than
processes the rows measure time-slicing, not scaling: there the point is that the accuracies agree.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from rich.table import Table

from nasdeploy.progress import console
from nasdeploy.spaces.base import get_space
from nasdeploy.spaces.record import ArchitectureRecord


def fixed_architecture(preset: str, path: Path) -> Path:
    space = get_space("darts")
    template = space.default_template(preset)
    ArchitectureRecord("darts", template, space.sample(template, random.Random(0)), {"strategy": "icdarts"}).save(path)
    return path


def run(nproc: int, args, arch: Path) -> dict:
    out = args.out / f"nproc{nproc}"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), "-m", "nasdeploy",
               "train", "--arch", str(arch), "--preset", args.preset, "--epochs", str(args.epochs), "--threads", "1",
               "--device", args.device, "--out", str(out), "--seed", str(args.seed)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    began = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - began
    metrics = json.loads((out / "metrics.json").read_text())
    return {"nproc": nproc, "wall_s": wall, "train_time_s": metrics["train_time_s"], "test_accuracy": metrics["test_accuracy"],
            "batch": metrics["config"]["batch_size"], "local_batch": metrics.get("distributed", {}).get("local_batch",
                                                                                                      metrics["config"]["batch_size"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=Path, default=None)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/ddp-train-bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    arch = args.arch or fixed_architecture(args.preset, args.out / "arch.json")
    rows = [run(n, args, arch) for n in args.nproc]
    table = Table(title=f"nasdeploy train under torchrun ({args.preset} preset, {args.epochs} epochs, {args.device}, "
                        f"load {os.getloadavg()[0]:.2f})")
    for column in ("processes", "global batch", "per process", "wall s", "epochs s", "test accuracy"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["nproc"]), str(row["batch"]), str(row["local_batch"]), f"{row['wall_s']:.1f}",
                      f"{row['train_time_s']:.1f}", f"{row['test_accuracy'] * 100:.2f} %")
    console.print(table)
    (args.out / "ddp_train.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
