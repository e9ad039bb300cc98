"""Does PC-DARTS' partial-channel mixed op really cut search memory? Peak memory and step time of one search step.

    PYTHONPATH=pipeline python3 benchmarks/pcp_memory.py [--batch 64] [--channels 16] [--layers 8] [--ks 1 2 4 8]
        [--steps 5] [--device cpu|cuda:0] [--out runs/pcp-memory.json]

Rows: ICDARTS' full mixed op (``SearchNetwork`` defaults: every op on all channels, no β) and PCP-DARTS' mixed op
(``partial_channels = K``, random channel sampling, edge normalisation) for each K, all at the same template (the
darts cpu preset's cells with ``--channels`` / ``--layers``, the 7 ops of op space 3 + ``none``, V0 as in the
pcp-darts presets) and batch. One step = what both searches do per iteration on the search network: α (and β)
on one batch (cross-entropy, Adam), then w on another (cross-entropy, SGD). ICDARTS' evaluation network E is not
part of the step: the row compares mixed ops only.

Memory, per row in its own process (so one row's peak cannot hide another's):
* ``saved MiB``: bytes of the tensors autograd saves for the backward pass during the step's first forward
  (``torch.autograd.graph.saved_tensors_hooks``, storages counted once): the activation memory, exact and
  independent of the allocator;
* CPU ``peak RSS Δ MiB``: ``ru_maxrss`` after the first step minus the resident size just before it;
* CUDA ``max allocated MiB``: ``torch.cuda.max_memory_allocated`` over the first step.
``step ms``: median over ``--steps`` steps after that one (torch threads: ``--threads``, default 1).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROWS_HELP = "icdarts (full mixed op) and pcp K=... rows"


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build(row: str, args):
    import torch

    from nasdeploy.search.shared.darts_supernet import SearchNetwork
    from nasdeploy.search.shared.discretize import get_zero_config, search_op_names
    from nasdeploy.spaces.base import get_space
    from nasdeploy.spaces.ops import OP_SPACES

    template = get_space("darts").default_template("cpu", C=args.channels, layers=args.layers, auxiliary=False)
    ops = search_op_names(list(OP_SPACES["3"]), get_zero_config("V0"))
    torch.manual_seed(0)
    if row == "icdarts":
        return SearchNetwork(template, ops), template
    k = int(row.split("=")[1])
    return SearchNetwork(template, ops, partial_channels=k, edge_normalisation=True, random_channels=True), template


def one_row(row: str, args) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    net, template = build(row, args)
    net = net.to(device).train()
    opt_w = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    opt_a = torch.optim.Adam(net.arch_parameters(), lr=6e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    shape = (args.batch, template.in_channels, template.input_size, template.input_size)
    xs = [torch.randn(shape, device=device) for _ in range(2)]
    ys = [torch.randint(0, template.num_classes, (args.batch,), device=device) for _ in range(2)]
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return t

    def step(count_saved: bool = False) -> None:
        opt_a.zero_grad(set_to_none=True)
        if count_saved:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = F.cross_entropy(net(xs[0]), ys[0])
        else:
            loss = F.cross_entropy(net(xs[0]), ys[0])
        loss.backward()
        opt_a.step()
        opt_w.zero_grad(set_to_none=True)
        F.cross_entropy(net(xs[1]), ys[1]).backward()
        opt_w.step()

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = rss_mib()
    step(count_saved=True)
    result = {"row": row, "saved_mib": sum(saved.values()) / 2**20}
    if device.type == "cuda":
        torch.cuda.synchronize()
        result["max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_rss_delta_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    times = []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - started) * 1000)
    result["step_ms"] = statistics.median(times)
    result["params"] = sum(p.numel() for p in net.weight_parameters())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--row", default=None, help=argparse.SUPPRESS)  # a child process measuring one row
    args = parser.parse_args()
    if args.row is not None:
        print(json.dumps(one_row(args.row, args)))
        return
    rows = ["icdarts"] + [f"pcp K={k}" for k in args.ks]
    results = []
    for row in rows:
        child = [sys.executable, __file__, "--row", row] + [a for a in sys.argv[1:] if a != "--row"]
        out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    memory = "max_allocated_mib" if args.device.startswith("cuda") else "peak_rss_delta_mib"
    label = "max allocated MiB" if args.device.startswith("cuda") else "peak RSS Δ MiB"
    print(f"one search step (α + w), batch {args.batch}, C={args.channels}, {args.layers} cells, 8 ops, "
          f"{args.device}, {args.threads} thread(s), median of {args.steps} steps")
    print(f"| {'mixed op':<20} | {'saved MiB':>10} | {label:>17} | {'step ms':>9} | {'w params':>9} |")
    print(f"|{'-' * 22}|{'-' * 12}|{'-' * 19}|{'-' * 11}|{'-' * 11}|")
    for r in results:
        name = "ICDARTS full" if r["row"] == "icdarts" else f"PCP-DARTS {r['row'].split()[1]}"
        print(f"| {name:<20} | {r['saved_mib']:>10.1f} | {r[memory]:>17.1f} | {r['step_ms']:>9.1f} | {r['params']:>9} |")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k not in ("out", "row")},
                                        "rows": results}, indent=2, default=str))


if __name__ == "__main__":
    main()
