"""``nasdeploy export`` without ``--checkpoint``: the trained model of the latest search or run folder.

The latest folder is the one whose ``arch.json`` was written last under ``runs/`` (``nasdeploy search``
writes ``runs/search/arch.json``, ``nasdeploy run`` writes ``runs/<name>/search/arch.json``). Its trained
model is a ``model.pt`` trained from that exact architecture: in the run's ``train/`` folder, in
``<search folder>/train/``, or in ``runs/train/`` (``nasdeploy train``'s default). When there is none,
the architecture was never retrained: with the tiny or cpu preset (minutes) it is retrained first with
that preset's recipe, as ``nasdeploy run`` would, and the log says so; with the paper preset (600 epochs,
hours) export stops with the exact ``nasdeploy train`` command instead of starting that silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasdeploy.errors import NasDeployError
from nasdeploy.io import read_json

log = logging.getLogger(__name__)

RUNS = Path("runs")
# presets whose retraining takes minutes on a CPU: export retrains those itself
RETRAIN_PRESETS = ("tiny", "cpu")


@dataclass
class SearchFolder:
    """A folder holding a searched ``arch.json``, with where its retrained model belongs and how to train it."""

    arch: Path
    train_dir: Path  # where export retrains it when no trained model exists
    preset: str
    data: str
    seed: int
    device: str
    epochs: int | None  # a run's --epochs, else None (the preset's recipe)

    @property
    def name(self) -> str:
        """The export folder name: the run's name, or the search folder's."""
        folder = self.arch.parent
        return folder.parent.name if folder.name == "search" and (folder.parent / "run.json").is_file() else folder.name


def latest_search_folder(root: Path = RUNS) -> SearchFolder:
    """The search or run folder under ``root`` whose arch.json is newest; NasDeployError naming the commands if none."""
    candidates = [p for pattern in ("arch.json", "*/arch.json", "*/search/arch.json") for p in Path(root).glob(pattern)]
    if not candidates:
        raise NasDeployError(f"no searched architecture under {root}/ to export; run 'nasdeploy search --latency-budget 22ms' "
                             "(or 'nasdeploy run') first, or pass --checkpoint MODEL.pt")
    arch = max(candidates, key=lambda p: p.stat().st_mtime)
    return describe_folder(arch)


def describe_folder(arch: Path) -> SearchFolder:
    """Preset, data, seed and device of the search behind ``arch``: from run.json in a run folder, else search_log.json."""
    folder = arch.parent
    run_json = folder.parent / "run.json"
    if folder.name == "search" and run_json.is_file():
        settings = read_json(run_json, "run state").get("settings", {})
        return SearchFolder(arch, folder.parent / "train", settings.get("preset", "cpu"), settings.get("data", "digits"),
                            int(settings.get("seed", 0)), settings.get("device", "cpu"), settings.get("train_epochs"))
    search_log: dict[str, Any] = {}
    if (folder / "search_log.json").is_file():
        try:
            search_log = read_json(folder / "search_log.json", "search log")
        except NasDeployError as exc:
            log.warning("%s", exc)
    return SearchFolder(arch, folder / "train", str(search_log.get("preset", "cpu")), str(search_log.get("data", "digits")),
                        int(search_log.get("seed", 0) or 0), str(search_log.get("device", "cpu")), None)


def trained_model_for(folder: SearchFolder, root: Path = RUNS) -> Path | None:
    """The newest model.pt trained from exactly ``folder.arch`` (run's train/, the search's train/, runs/train/)."""
    from nasdeploy.io import load_checkpoint
    from nasdeploy.spaces.record import ArchitectureRecord

    wanted = ArchitectureRecord.load(folder.arch).to_json()
    found = []
    for path in {folder.train_dir / "model.pt", folder.arch.parent / "model.pt", Path(root) / "train" / "model.pt"}:
        if not path.is_file():
            continue
        try:
            payload = load_checkpoint(path, "trained model")
        except NasDeployError as exc:
            log.warning("skipping %s: %s", path, exc)
            continue
        if isinstance(payload, dict) and payload.get("record") == wanted:
            found.append(path)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def train_command(folder: SearchFolder, epochs: int | None) -> str:
    parts = ["nasdeploy train", f"--arch {folder.arch}", f"--data {folder.data}", f"--preset {folder.preset}"]
    if epochs is not None:
        parts.append(f"--epochs {epochs}")
    parts += [f"--seed {folder.seed}", f"--device {folder.device}", f"--out {folder.train_dir}"]
    return " ".join(parts)


def retraining_epochs(folder: SearchFolder) -> int | None:
    """The run's --epochs, else the preset's recipe as ``nasdeploy run`` applies it (cpu: scaled by the network's cost)."""
    from nasdeploy.pipeline import run_train_epochs
    from nasdeploy.spaces.record import ArchitectureRecord

    if folder.epochs is not None:
        return int(folder.epochs)
    return run_train_epochs(ArchitectureRecord.load(folder.arch), folder.preset)


def latest_trained_model(root: Path = RUNS, retrain: bool = True) -> tuple[Path, SearchFolder]:
    """The model.pt to export when no --checkpoint is given: the latest search's, retrained first if needed."""
    from nasdeploy.search.base import searched_recipe
    from nasdeploy.spaces.record import ArchitectureRecord
    from nasdeploy.train.trainer import preset_config, train_architecture

    folder = latest_search_folder(root)
    model = trained_model_for(folder, root)
    if model is not None:
        log.info("exporting %s, trained from the latest search %s", model, folder.arch)
        return model, folder
    epochs = retraining_epochs(folder)
    command = train_command(folder, epochs)
    if folder.preset not in RETRAIN_PRESETS or not retrain:
        raise NasDeployError(f"the latest search {folder.arch} was never retrained ({folder.preset} preset: too long to start "
                             f"unasked); run '{command}', then 'nasdeploy export' again")
    record = ArchitectureRecord.load(folder.arch)
    config = preset_config(folder.preset, searched_recipe(record), epochs=epochs, seed=folder.seed, device=folder.device)
    log.info("the latest search %s was never retrained: retraining it first with the %s recipe's %s preset (%d epochs on "
             "%s), as '%s'", folder.arch, config.recipe, folder.preset, config.epochs, folder.data, command)
    train_architecture(record, folder.data, config, folder.train_dir, resume=True)
    return folder.train_dir / "model.pt", folder
