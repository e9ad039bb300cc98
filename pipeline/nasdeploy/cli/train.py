"""``nasdeploy train``: retrain a searched architecture from scratch with its strategy's recipe (``train.recipes``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from nasdeploy.cli.app import app
from nasdeploy.distributed import is_main_process
from nasdeploy.progress import console, setup_logging


@app.command()
def train(
    arch: Path = typer.Option(..., help="Architecture file (arch.json) written by 'nasdeploy search'."),
    data: str = typer.Option("digits", help="digits | cifar10:PATH | cifar100:PATH | imagefolder:PATH."),
    recipe: Optional[str] = typer.Option(None, help="Retraining recipe: icdarts | senas | ctnas | csnas | pcp-darts (default: the searching "
                                         "strategy's; nasdeploy strategies NAME lists it)."),
    preset: str = typer.Option("paper", help="Schedule: paper (the recipe's, e.g. 600 epochs) | cpu (3) | tiny (1 short epoch)."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (default: the preset's)."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch size (default: the recipe's); under torchrun each of N "
                                                        "processes takes batch/N."),
    lr: Optional[float] = typer.Option(None, help="Initial SGD learning rate (default: the recipe's, e.g. 0.025)."),
    cutout: Optional[int] = typer.Option(None, help="Cutout length (default 16; 0 disables)."),
    drop_path: Optional[float] = typer.Option(None, help="Final drop-path probability, increased linearly (default 0.3)."),
    auxiliary_weight: Optional[float] = typer.Option(None, help="Auxiliary tower loss weight for cell networks (default 0.4)."),
    out: Path = typer.Option(Path("runs/train"), help="Output folder: checkpoint.pt, model.pt, metrics.json."),
    resume: bool = typer.Option(False, help="Continue from OUT/checkpoint.pt (same settings give the same result)."),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = typer.Option("cpu", help="Torch device (cpu, cuda:0); under torchrun 'cuda' means cuda:LOCAL_RANK."),
    dist_backend: str = typer.Option("auto", help="Under torchrun: auto (nccl on CUDA, gloo on CPU) | nccl | gloo."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: all cores)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also log debug detail."),
) -> None:
    """Retrain an architecture with its recipe (SGD, schedule, cutout, drop-path, auxiliary tower, grad clipping)."""
    from nasdeploy.spaces.record import ArchitectureRecord
    from nasdeploy.search.base import searched_recipe
    from nasdeploy.hardware.devices import require_device
    from nasdeploy.train.trainer import preset_config, train_architecture

    setup_logging(verbose)
    require_device(device)  # before any work
    record = ArchitectureRecord.load(arch)
    config = preset_config(preset, recipe or searched_recipe(record), epochs=epochs, batch_size=batch_size, lr=lr, cutout=cutout, drop_path=drop_path,
                           auxiliary_weight=auxiliary_weight, seed=seed, device=device, threads=threads,
                           dist_backend=dist_backend)
    metrics = train_architecture(record, data, config, out, resume=resume)
    if is_main_process():
        console.print(metrics_table(metrics, out))


def metrics_table(metrics: dict, out: Path) -> Table:
    table = Table(title="retraining result", show_header=False)
    table.add_row("test accuracy", f"{metrics['test_accuracy'] * 100:.2f} %")
    table.add_row("epochs", str(len(metrics["epochs"])))
    table.add_row("parameters", f"{metrics['params']:,}")
    table.add_row("FLOPs (multiply-adds)", "—" if metrics["flops"] is None else f"{metrics['flops']:,}")
    table.add_row("train time", f"{metrics['train_time_s']:.1f} s")
    if "distributed" in metrics:
        parallel = metrics["distributed"]
        table.add_row("data-parallel", f"{parallel['world_size']} processes ({parallel['backend']}), "
                                       f"batch {metrics['config']['batch_size']} = {parallel['local_batch']} per process")
    table.add_row("model", str(Path(out) / "model.pt"))
    table.add_row("metrics", str(Path(out) / "metrics.json"))
    return table
