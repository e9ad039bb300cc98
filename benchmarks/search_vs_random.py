"""Does the search earn its keep? The searched net against the best of 5 random nets under the same latency budget.

    PYTHONPATH=pipeline python3 benchmarks/search_vs_random.py [--strategies icdarts pcp-darts] [--seeds 0 1 2]
        [--randoms 5] [--preset cpu] [--data digits] [--train-images 360] [--val-images 360] [--epochs 5]
        [--batch-size 32] [--recipe icdarts] [--table LUT] [--budget-ms B] [--parts random searched] [--report] [--out DIR]

Protocol, per seed s (the same s for the search, the random draw and every retraining):

1. **Budget**: the median of the LUT-predicted latencies of 64 uniformly drawn architectures of the space (drawn
   with a fixed seed, so every seed and strategy gets the same budget; ``--budget-ms`` overrides). Half of the
   space fits under it: the budget binds, and the random nets are not forced into a corner of the space.
2. **Search**: ``nasdeploy search --strategy S --latency-budget B --seed s`` on the training images (``--preset``,
   the LUT given with ``--table``; predictions of every net come from that one table, unchecked: the comparison is
   in predicted latency, the spot check would only add measurement noise).
3. **Random**: ``--randoms`` architectures drawn uniformly from the space and kept only when the same LUT predicts
   them under the budget (rejection sampling: uniform over the feasible set; the draw count is recorded).
4. **Retraining**: every net, searched and random, from scratch with one recipe (``--recipe``, default the DARTS
   recipe of ICDARTS, for every strategy: the architecture is the only difference), ``--epochs`` epochs, seed s.
5. **Best of 5**: the random net with the highest **validation** accuracy (images seen by no training and no test;
   ties go to the lower latency). Test accuracy is read only for the report.

Reported over the seeds, mean ± sample standard deviation: test accuracy of the searched net, of the best-of-5
random net and of the mean of all random nets, with each one's predicted latency and validation accuracy.

**Setting.** The embedded digits as they are (1,497 training images, 300 test images) saturate: searched and random
cell networks both reach ~98.7 %, and one test image is 0.33 points. The default here is harder and measured on
more images: ``split:360,360:digits`` (``train.data``) trains the searches and every retraining on 360 digits (24 %
of the training split), keeps 360 other training digits as the validation set that picks the best random net,
and tests on the 1,077 remaining (the 300 test digits and the 777 training digits left over; one image is 0.09
points), with a short retraining: 5 epochs at batch 32 (60 SGD steps), the recipe's cpu preset otherwise. Short
because on the shared 2-core VM one such retraining takes ~1 min idle and 3-5 min under load, and the protocol
needs 7 per seed; longer runs are ``--epochs``. ``--data`` takes any spec (``cifar10:PATH``,
``imagefolder:PATH``): the validation and training images are carved from its training split the same way, so
``--val-images`` must be given for it. Note the searches see only the training images: the validation images
inform the random baseline's choice alone, which, if anything, favours random.

Each net writes OUT/.../result.json when done and OUT/search_vs_random.json (+ .md) is rebuilt from them: a killed
run started again with the same arguments continues at the first unfinished net (its retraining from its last
epoch, its search from its checkpoint); other settings in the same OUT are refused. ``--parts random`` and
``--parts searched`` split the work over two processes.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from nasdeploy.errors import NasDeployError
from nasdeploy.io import atomic_write_json, read_json
from nasdeploy.progress import console, setup_logging

SCHEMA_VERSION = 1
BUDGET_SAMPLES = 64
BUDGET_SEED = 0
RANDOM_STREAM = 27  # mixed with the seed: the random nets' own stream, apart from the search's
MAX_DRAWS = 2000
EPOCH_TEST_IMAGES = 100  # the retrainings' per-epoch test curve (metrics.json); results use the whole test split
DEFAULT_TABLE = Path("latency_tables/cpu-amd-epyc-1t-86ca2d/onnxruntime/darts-op3-32px-c16-l8-00e821-b1.json")
RESULT = "search_vs_random.json"
# arguments that change a result: a results file made with other values is not continued
RESULT_ARGS = ("preset", "data", "train_images", "val_images", "epochs", "batch_size", "recipe", "table", "budget_ms",
               "randoms")


# ---------------------------------------------------------------- pure pieces (tests/test_search_vs_random.py)


def median_budget(predict: Callable[[Any], float], sample: Callable[[random.Random], Any],
                  samples: int = BUDGET_SAMPLES, seed: int = BUDGET_SEED) -> tuple[float, str]:
    """The median predicted latency of ``samples`` uniformly drawn architectures, and a line saying so."""
    rng = random.Random(seed)
    latencies = sorted(predict(sample(rng)) for _ in range(samples))
    budget = statistics.median(latencies)
    return budget, (f"median of {samples} random architectures' predicted latencies (draw seed {seed}; "
                    f"range {latencies[0]:.3f}-{latencies[-1]:.3f} ms)")


def draw_within_budget(predict: Callable[[Any], float], sample: Callable[[random.Random], Any], budget_ms: float,
                       count: int, rng: random.Random, max_draws: int = MAX_DRAWS) -> tuple[list[tuple[Any, float]], int]:
    """``count`` architectures drawn uniformly and kept when predicted within ``budget_ms``: ([(arch, ms)], draws)."""
    kept: list[tuple[Any, float]] = []
    draws = 0
    while len(kept) < count:
        if draws >= max_draws:
            raise NasDeployError(f"only {len(kept)} of {max_draws} random architectures fit {budget_ms:.3f} ms; "
                                 "give a larger --budget-ms")
        arch = sample(rng)
        draws += 1
        latency = predict(arch)
        if latency <= budget_ms:
            kept.append((arch, latency))
    return kept, draws


def best_by_validation(nets: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The net with the highest validation accuracy (ties: the lower predicted latency, then the earlier draw).

    Reads ``val_accuracy``, ``predicted_latency_ms`` and ``index`` only: test accuracy never takes part in the choice.
    """
    if not nets:
        raise ValueError("no random nets to choose from")
    return min(nets, key=lambda n: (-n["val_accuracy"], n["predicted_latency_ms"], n["index"]))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(results: dict[str, Any], strategies: Sequence[str], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """One row per arm (each strategy's searched net, best-of-N random, mean of all random) over the seeds every arm has
    finished (each arm's own finished seeds while none is complete), with each strategy's paired difference in test
    accuracy to the best random net of the same seed (``paired_gain_*``)."""
    rows = []
    random_seeds = [s for s in seeds if str(s) in results.get("random", {}) and "best_index" in results["random"][str(s)]]
    complete = [s for s in random_seeds
                if all("test_accuracy" in results.get("searched", {}).get(k, {}).get(str(s), {}) for k in strategies)]
    if complete:
        random_seeds = complete

    def row(arm: str, picked: list[dict[str, Any]], used: list[int]) -> dict[str, Any]:
        test, test_sd = mean_std([p["test_accuracy"] for p in picked])
        val, val_sd = mean_std([p["val_accuracy"] for p in picked])
        lat, lat_sd = mean_std([p["predicted_latency_ms"] for p in picked])
        return {"arm": arm, "seeds": used, "test_accuracy_mean": test, "test_accuracy_std": test_sd,
                "val_accuracy_mean": val, "val_accuracy_std": val_sd, "predicted_latency_ms_mean": lat,
                "predicted_latency_ms_std": lat_sd, "per_seed_test_accuracy": [p["test_accuracy"] for p in picked]}

    for strategy in strategies:
        done = results.get("searched", {}).get(strategy, {})
        used = complete or [s for s in seeds if "test_accuracy" in done.get(str(s), {})]
        if used:
            rows.append(row(f"searched ({strategy})", [done[str(s)] for s in used], used))
            paired = [s for s in used if s in random_seeds]
            if paired:
                runs = [results["random"][str(s)] for s in paired]
                gains = [done[str(s)]["test_accuracy"] - r["nets"][r["best_index"]]["test_accuracy"] for s, r in zip(paired, runs)]
                gain, gain_sd = mean_std(gains)
                rows[-1].update(paired_gain_seeds=paired, paired_gain_mean=gain, paired_gain_std=gain_sd)
    if random_seeds:
        runs = [results["random"][str(s)] for s in random_seeds]
        count = len(runs[0]["nets"])
        rows.append(row(f"best of {count} random (by validation)", [r["nets"][r["best_index"]] for r in runs], random_seeds))
        means = [{k: statistics.fmean(n[k] for n in r["nets"]) for k in ("test_accuracy", "val_accuracy", "predicted_latency_ms")}
                 for r in runs]
        rows.append(row(f"mean of all {count} random", means, random_seeds))
    return rows


# ---------------------------------------------------------------- side effects


class Benchmark:
    """One benchmark folder: its settings, the table, the data, and one result file per net.

    Every finished net writes its own ``result.json`` (a random net in ``random/seed<s>/net<i>/``, a searched one in
    ``<strategy>/seed<s>/``), so a killed run continues at the first unfinished net, and two processes may share
    the work (``--parts random`` and ``--parts searched``); ``search_vs_random.json`` is rebuilt from those files.
    """

    def __init__(self, args: argparse.Namespace):
        from nasdeploy.latency.predictor import predict_latency_ms, table_space_template
        from nasdeploy.latency.table import load_table
        from nasdeploy.train.data import load_dataset, load_validation

        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.spec = f"split:{args.train_images},{args.val_images}:{args.data}"
        self.table = load_table(args.table)
        self.space, self.template = table_space_template(self.table)
        self.predict = lambda arch: predict_latency_ms(self.table, arch, self.space, self.template)
        self.sample = lambda rng: self.space.sample(self.template, rng)
        self.epoch_spec = f"split:{args.train_images},{args.val_images},{EPOCH_TEST_IMAGES}:{args.data}"
        self.val_set = load_validation(self.spec, self.template.input_size)
        self.test_set = load_dataset(self.spec, train=False, input_size=self.template.input_size)[0]
        self.check_settings()

    def settings(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.args).items() if k in RESULT_ARGS}

    def check_settings(self) -> None:
        path = self.out / "settings.json"
        if path.is_file():
            old = read_json(path, "search-vs-random settings")
            changed = [k for k in RESULT_ARGS if old.get(k) != self.settings().get(k)]
            if changed:
                raise NasDeployError(f"{self.out} was made with other settings ({', '.join(changed)}); pass the same "
                                     "arguments to continue it, or another --out")
        else:
            atomic_write_json(path, self.settings())

    def budget(self) -> tuple[float, str]:
        path = self.out / "budget.json"
        if not path.is_file():
            if self.args.budget_ms is not None:
                budget, rule = self.args.budget_ms, "given (--budget-ms)"
            else:
                budget, rule = median_budget(self.predict, self.sample)
            atomic_write_json(path, {"budget_ms": budget, "budget_rule": rule})
        saved = read_json(path, "budget")
        return saved["budget_ms"], saved["budget_rule"]

    def train_config(self, seed: int):
        from nasdeploy.train.trainer import preset_config

        return preset_config("cpu", self.args.recipe, epochs=self.args.epochs, batch_size=self.args.batch_size,
                             seed=seed, threads=self.args.threads)

    def retrain(self, record, seed: int, folder: Path) -> dict[str, Any]:
        """Retrain ``record`` (resuming its checkpoint), then score it on the validation and the test images."""
        from nasdeploy.train.data import make_loader
        from nasdeploy.train.trainer import evaluate, train_model

        config = self.train_config(seed)
        started = time.perf_counter()
        # the trainer's per-epoch test curve on the first EPOCH_TEST_IMAGES test images only (the same training
        # images and weights: evaluation changes nothing); the figure reported is the whole test split's, once
        net, metrics = train_model(record, self.epoch_spec, config, folder / "train", resume=True)
        with torch.no_grad():
            val = evaluate(net, make_loader(self.val_set, 256, shuffle=False, seed=0), config.device)
            test = evaluate(net, make_loader(self.test_set, 256, shuffle=False, seed=0), config.device)
        return {"val_accuracy": val["accuracy"], "test_accuracy": test["accuracy"], "test_images": len(self.test_set),
                "train_accuracy": metrics["train_accuracy"], "params": metrics["params"], "flops": metrics["flops"],
                "retrain_seconds": round(time.perf_counter() - started, 1), "train_folder": str(folder / "train")}

    def random_draw(self, seed: int, budget: float) -> dict[str, Any]:
        """The seed's random nets within the budget (drawn once; the same draw whichever process asks)."""
        from nasdeploy.seeds import mix_seed

        path = self.out / "random" / f"seed{seed}" / "draw.json"
        if not path.is_file():
            drawn, draws = draw_within_budget(self.predict, self.sample, budget, self.args.randoms,
                                              random.Random(mix_seed(RANDOM_STREAM, seed)))
            atomic_write_json(path, {"draws": draws, "budget_ms": budget, "nets": [
                {"index": i, "arch": self.space.arch_to_json(arch), "predicted_latency_ms": ms} for i, (arch, ms) in enumerate(drawn)]})
        return read_json(path, "random draw")

    def random_nets(self, seed: int, budget: float) -> None:
        from nasdeploy.spaces.record import ArchitectureRecord

        for net in self.random_draw(seed, budget)["nets"]:
            folder = self.out / "random" / f"seed{seed}" / f"net{net['index']}"
            if (folder / "result.json").is_file():
                continue
            record = ArchitectureRecord(self.space.name, self.template, self.space.arch_from_json(net["arch"]),
                                        {"predicted_latency_ms": net["predicted_latency_ms"], "strategy": "random"})
            result = {**net, **self.retrain(record, seed, folder)}
            atomic_write_json(folder / "result.json", result)
            console.print(f"seed {seed} random net {net['index']}: {net['predicted_latency_ms']:.3f} ms, "
                          f"val {result['val_accuracy']:.4f}, test {result['test_accuracy']:.4f} ({result['retrain_seconds']} s)")
            self.collect()

    def searched_net(self, strategy: str, seed: int, budget: float) -> None:
        from nasdeploy.latency.trust import TablePolicy
        from nasdeploy.search.base import SearchRequest, get_strategy
        from nasdeploy.spaces.record import ArchitectureRecord

        folder = self.out / strategy / f"seed{seed}"
        if (folder / "result.json").is_file():
            return
        arch_path = folder / "search" / "arch.json"
        if not arch_path.is_file():
            request = SearchRequest(space=self.space.name, out_dir=folder / "search", table_path=Path(self.args.table),
                                    latency_budget_ms=budget, data=self.spec, preset=self.args.preset, seed=seed,
                                    resume=(folder / "search" / "checkpoint.pt").is_file(),
                                    table_policy=TablePolicy(trust=True))
            get_strategy(strategy).run(request)
        record = ArchitectureRecord.load(arch_path)
        result = {"arch": record.to_json()["arch"], "predicted_latency_ms": self.predict(record.arch),
                  "search_predicted_latency_ms": record.metrics.get("predicted_latency_ms"),
                  "search_seconds": record.metrics.get("search_seconds"),
                  "fixup_replacements": record.metrics.get("fixup_replacements"),
                  **self.retrain(record, seed, folder)}
        atomic_write_json(folder / "result.json", result)
        console.print(f"seed {seed} {strategy}: {result['predicted_latency_ms']:.3f} ms, val {result['val_accuracy']:.4f}, "
                      f"test {result['test_accuracy']:.4f} (search {result['search_seconds'] or 0:.0f} s, "
                      f"retrain {result['retrain_seconds']} s)")
        self.collect()

    def collect(self) -> dict[str, Any]:
        """search_vs_random.json from every finished net's result file, with the summary over the finished seeds."""
        budget, rule = self.budget()
        results: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "settings": self.settings(), "data_spec": self.spec,
                                   "budget_ms": budget, "budget_rule": rule, "random": {}, "searched": {}}
        for seed in self.args.seeds:
            draw_path = self.out / "random" / f"seed{seed}" / "draw.json"
            if draw_path.is_file():
                draw = read_json(draw_path, "random draw")
                nets = [self.out / "random" / f"seed{seed}" / f"net{n['index']}" / "result.json" for n in draw["nets"]]
                entry = {"draws": draw["draws"], "nets": [read_json(p, "result") for p in nets if p.is_file()]}
                if len(entry["nets"]) == len(nets):
                    entry["best_index"] = best_by_validation(entry["nets"])["index"]
                results["random"][str(seed)] = entry
            for strategy in self.args.strategies:
                path = self.out / strategy / f"seed{seed}" / "result.json"
                if path.is_file():
                    results["searched"].setdefault(strategy, {})[str(seed)] = read_json(path, "result")
        results["summary"] = summarise(results, self.args.strategies, self.args.seeds)
        atomic_write_json(self.out / RESULT, results)
        return results


def print_table(rows: list[dict[str, Any]], budget: float, rule: str, setting: str) -> str:
    """The rich table on the console; returns the same as markdown."""
    from rich.table import Table

    title = f"searched vs random under {budget:.3f} ms ({setting})"
    table = Table(title=title)
    for name in ("arm", "seeds", "test accuracy %", "val accuracy %", "predicted latency ms", "vs best random (paired)"):
        table.add_column(name, justify="left" if name == "arm" else "right")
    lines = [f"**{title}**; budget: {rule}", "",
             "| arm | seeds | test accuracy % | val accuracy % | predicted latency ms | vs best random (paired) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r["arm"], ",".join(map(str, r["seeds"])),
                 f"{100 * r['test_accuracy_mean']:.2f} ± {100 * r['test_accuracy_std']:.2f}",
                 f"{100 * r['val_accuracy_mean']:.2f} ± {100 * r['val_accuracy_std']:.2f}",
                 f"{r['predicted_latency_ms_mean']:.3f} ± {r['predicted_latency_ms_std']:.3f}",
                 (f"{100 * r['paired_gain_mean']:+.2f} ± {100 * r['paired_gain_std']:.2f} points" if "paired_gain_mean" in r else "")]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=["icdarts", "pcp-darts"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--randoms", type=int, default=5, help="random nets drawn within the budget per seed")
    parser.add_argument("--preset", default="cpu", help="the searches' preset (its latency table's template)")
    parser.add_argument("--data", default="digits", help="digits | cifar10:PATH | cifar100:PATH | imagefolder:PATH")
    parser.add_argument("--train-images", type=int, default=360, help="training images of every search and retraining")
    parser.add_argument("--val-images", type=int, default=360, help="validation images that pick the best random net")
    parser.add_argument("--epochs", type=int, default=5, help="retraining epochs of every net")
    parser.add_argument("--batch-size", type=int, default=32, help="retraining batch of every net")
    parser.add_argument("--recipe", default="icdarts", help="retraining recipe of every net (train.recipes)")
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE, help="the latency table of every prediction")
    parser.add_argument("--budget-ms", type=float, default=None, help="latency budget (default: the random median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the retrainings")
    parser.add_argument("--parts", nargs="+", choices=("random", "searched"), default=["random", "searched"],
                        help="which nets this process trains (two processes may split the work)")
    parser.add_argument("--report", action="store_true", help="train nothing: the table of the nets finished so far")
    parser.add_argument("--out", type=Path, default=Path("runs/search-vs-random"))
    args = parser.parse_args(argv)
    setup_logging()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    try:
        bench = Benchmark(args)
        budget, rule = bench.budget()
        console.print(f"latency budget {budget:.3f} ms: {rule}; data {bench.spec}; {args.epochs} epochs at batch "
                      f"{args.batch_size}, recipe {args.recipe}")
        for seed in [] if args.report else args.seeds:
            if "random" in args.parts:
                bench.random_nets(seed, budget)
            if "searched" in args.parts:
                for strategy in args.strategies:
                    bench.searched_net(strategy, seed, budget)
        results = bench.collect()
    except NasDeployError as exc:
        console.print(f"error: {exc}")
        sys.exit(2)
    setting = f"{bench.spec}, {args.epochs} epochs at batch {args.batch_size}, recipe {args.recipe}, preset {args.preset}"
    markdown = print_table(results["summary"], budget, rule, setting)
    (bench.out / "search_vs_random.md").write_text(markdown)
    console.print(f"this invocation: {time.perf_counter() - started:.0f} s; results in {bench.out / RESULT}")


if __name__ == "__main__":
    main()
