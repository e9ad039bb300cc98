"""Hierarchical ICDARTS: the micro phase's network against the macro phase's, after a ``nasdeploy run``.

    PYTHONPATH=pipeline python3 benchmarks/hicdarts_micro_vs_macro.py RUN_FOLDER [--epochs N]

RUN_FOLDER is a finished ``nasdeploy run --strategy hierarchical-icdarts`` folder. Its search wrote the macro phase's
network (``search/arch.json``) and, in its metrics, the micro phase's (``micro_arch``: the cells in DARTS' template,
version 2: the four types alternating). The run retrained and exported the macro network; this retrains the micro
network with the same recipe, epochs and seed (RUN_FOLDER/micro_compare/), exports and re-measures it the same way,
and prints one table: predicted latency (the run's table), measured latency (ONNX Runtime, the table's method),
parameters and test accuracy of both, plus each search phase's wall time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nasdeploy.export.deploy import ExportOptions, export_checkpoint
from nasdeploy.progress import console, setup_logging
from nasdeploy.spaces.record import ArchitectureRecord
from nasdeploy.train.trainer import preset_config, train_architecture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--epochs", type=int, default=None, help="default: the epochs the run retrained with")
    args = parser.parse_args()
    setup_logging(False)
    run_dir = args.run
    macro = ArchitectureRecord.load(run_dir / "search" / "arch.json")
    space = macro.search_space
    micro = ArchitectureRecord(macro.space, macro.template, space.arch_from_json(macro.metrics["micro_arch"]),
                               {"latency_budget_ms": macro.metrics.get("latency_budget_ms")})
    macro_train = json.loads((run_dir / "train" / "metrics.json").read_text())
    macro_report = json.loads((run_dir / "export" / "report.json").read_text())
    state = json.loads((run_dir / "run.json").read_text())
    used = macro_train["config"]
    epochs = args.epochs or used["epochs"]
    out = run_dir / "micro_compare"
    micro.save(out / "arch.json")
    config = preset_config(state["settings"]["preset"], used["recipe"], epochs=epochs, seed=used["seed"], device=used.get("device", "cpu"))
    micro_train = train_architecture(micro, state["settings"]["data"], config, out / "train")
    options = ExportOptions(table=run_dir / "profile" / "table.json", runtime="onnxruntime", device="cpu")
    micro_report = export_checkpoint(out / "train" / "model.pt", out / "export" / "model.onnx", out / "export", options)
    rows = [("micro phase (E_micro's cells / types, DARTS template)", micro, micro_train, micro_report),
            ("macro phase (E_macro, searched template)", macro, macro_train, macro_report)]
    table = ["| network | arch | predicted ms | measured ms (ORT) | params | test accuracy | epochs |",
             "|---|---|---|---|---|---|---|"]
    for name, record, train, report in rows:
        arch = record.arch
        shape = f"inputs {list(getattr(arch, 'inputs', []))}" + (f" types {arch.types}" if getattr(arch, "types", None) else "")
        table.append(f"| {name} | {shape} | {report['predicted_latency_ms']:.3f} | {report['measured_median_ms']:.3f} | "
                     f"{train['params']} | {train['test_accuracy']:.4f} | {len(train['epochs'])} |")
    m = macro.metrics
    table.append(f"\nsearch wall time: micro phase {m.get('micro_seconds')} s, macro phase {m.get('macro_seconds')} s "
                 f"(version {m.get('version')})")
    text = "\n".join(table)
    (out / "compare.md").write_text(text + "\n")
    console.print(text)


if __name__ == "__main__":
    main()
