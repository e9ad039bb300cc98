"""Retraining recipes, one per paper, chosen by the strategy that searched the architecture.

A recipe turns a schedule preset ("tiny", "cpu", "paper") into a :class:`TrainConfig`. ``nasdeploy train`` and
``nasdeploy run`` take the recipe the searched strategy names (``SearchStrategy.retrain_recipe``, looked up by
``search.base.searched_recipe``) unless ``--recipe`` overrides it; ``metrics.json`` records it (``config.recipe``).

* ``icdarts`` — Herron (2023) §3.4.2, the DARTS/CDARTS recipe for cell networks: SGD lr 0.025 momentum 0.9
  weight decay 5e-4, cosine to 0, batch 128, cutout 16, drop-path 0.3, auxiliary tower 0.4, 600 epochs.
* the others are registered by the strategies whose papers give them (train/ never imports search/), when
  ``nasdeploy.search`` is imported: ``senas`` (Hu et al. 2021 §4, in ``search.senas``) and ``pcp-darts``
  (Deevi et al. 2024 §IV-A, in ``search.pcpdarts``).

The cpu preset keeps each recipe's optimiser and schedule but uses batch 64 (more steps on a small data set) and
the learning rate scaled linearly with the batch (Goyal et al. 2017) where the paper's batch is larger.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from nasdeploy.errors import NasDeployError
from nasdeploy.registry import Registry
from nasdeploy.train.config import TrainConfig


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str  # where the settings come from
    paper: dict[str, Any]  # TrainConfig fields of the paper schedule
    cpu: dict[str, Any]  # changes for the cpu preset (epochs, batch, scaled lr)
    tiny: dict[str, Any]  # changes for the tiny preset (smoke tests)


RECIPES: Registry[Recipe] = Registry("retraining recipe")


def register(recipe: Recipe) -> Recipe:
    return RECIPES.register(recipe.name)(recipe)


register(Recipe(
    "icdarts", "Herron 2023 §3.4.2 (DARTS/CDARTS evaluation recipe)",
    paper=dict(epochs=600, batch_size=128, lr=0.025, momentum=0.9, weight_decay=5e-4, schedule="cosine", cutout=16,
               drop_path=0.3, auxiliary_weight=0.4, grad_clip=5.0),
    cpu=dict(epochs=3, batch_size=64),
    tiny=dict(epochs=1, batch_size=32, max_batches=8),
))


def recipe_config(recipe: str, preset: str = "paper", **overrides: Any) -> Any:
    """The TrainConfig of ``recipe`` at ``preset``; ``None`` overrides are ignored."""
    chosen = RECIPES.get(recipe)
    presets: dict[str, dict[str, Any]] = {"paper": {}, "paper-mo": {}, "cpu": chosen.cpu, "tiny": chosen.tiny}
    if preset not in presets:
        raise NasDeployError(f"unknown preset {preset!r}; choose one of: {', '.join(presets)}")
    config = TrainConfig(recipe=recipe, **{**chosen.paper, **presets[preset]})
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
