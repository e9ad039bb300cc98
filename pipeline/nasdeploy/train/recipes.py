"""Retraining recipes, one per paper, chosen by the strategy that searched the architecture.

A recipe turns a schedule preset ("tiny", "cpu", "paper") into a :class:`TrainConfig`. ``nasdeploy train`` and
``nasdeploy run`` take the recipe the searched strategy names (``SearchStrategy.retrain_recipe``) unless
``--recipe`` overrides it; ``metrics.json`` records it (``config.recipe``).

* ``icdarts`` — Herron (2023) §3.4.2, the DARTS/CDARTS recipe for cell networks: SGD lr 0.025 momentum 0.9
  weight decay 5e-4, cosine to 0, batch 128, cutout 16, drop-path 0.3, auxiliary tower 0.4, 600 epochs.
* ``senas`` — Hu et al. (2021) §4: "the training settings and hyper-parameters of all searched models follow
  supernet training" ([42]): SGD momentum 0.9, weight decay 4e-5, batch 1024, lr 0.5 decayed per iteration as
  lr·(1 − e/T), 240 epochs (300k iterations); no cutout, drop-path or auxiliary tower (MobileNet-like nets).
  SE-NAS on the DARTS space retrains "following the training setting of [36]" (P-DARTS), which is the DARTS
  recipe: ``SENAS.retrain_recipe`` returns ``icdarts`` there.
* ``pcp-darts`` — Deevi et al. (2024) §IV-A, for ``pcp-darts`` and ``ss-pcp-darts``: Adam lr 6e-4, β = (0.5, 0.999)
  "with weight decay" (the value is not given: DARTS' 3e-4 here), cross-entropy with the auxiliary tower (0.4),
  cutout; epochs, batch, drop-path and clipping as the DARTS recipe (not stated in the paper). Adam's rate is not
  scaled with the batch on the cpu preset.

The cpu preset keeps each recipe's optimiser and schedule but uses batch 64 (more steps on a small data set) and
the learning rate scaled linearly with the batch (Goyal et al. 2017) where the paper's batch is larger.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from nasdeploy.errors import NasDeployError
from nasdeploy.registry import Registry


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

register(Recipe(
    "senas", "Hu et al. 2021 §4: retraining follows supernet training ([42]): SGD 0.5, 1 - e/T per iteration, 240 epochs",
    paper=dict(epochs=240, batch_size=1024, lr=0.5, momentum=0.9, weight_decay=4e-5, schedule="linear", cutout=0,
               drop_path=0.0, auxiliary_weight=0.0, grad_clip=5.0),
    cpu=dict(epochs=3, batch_size=64, lr=0.5 * 64 / 1024),
    tiny=dict(epochs=1, batch_size=32, lr=0.5 * 32 / 1024, max_batches=8),
))


register(Recipe(
    "pcp-darts", "Deevi et al. 2024 §IV-A (SS PCP-DARTS training stage): Adam 6e-4, betas (0.5, 0.999), auxiliary tower",
    paper=dict(epochs=600, batch_size=128, lr=6e-4, optimizer="adam", adam_betas=(0.5, 0.999), weight_decay=3e-4,
               schedule="cosine", cutout=16, drop_path=0.3, auxiliary_weight=0.4, grad_clip=5.0),
    cpu=dict(epochs=3, batch_size=64),
    tiny=dict(epochs=1, batch_size=32, max_batches=8),
))


def recipe_config(recipe: str, preset: str = "paper", **overrides: Any) -> Any:
    """The TrainConfig of ``recipe`` at ``preset``; ``None`` overrides are ignored."""
    from nasdeploy.train.trainer import TrainConfig

    chosen = RECIPES.get(recipe)
    presets: dict[str, dict[str, Any]] = {"paper": {}, "cpu": chosen.cpu, "tiny": chosen.tiny}
    if preset not in presets:
        raise NasDeployError(f"unknown preset {preset!r}; choose one of: {', '.join(presets)}")
    config = TrainConfig(recipe=recipe, **{**chosen.paper, **presets[preset]})
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def searched_recipe(record) -> str:
    """The recipe of the strategy that searched ``record`` (``icdarts`` for records without a strategy)."""
    import nasdeploy.search  # noqa: F401  (registers the strategies)
    from nasdeploy.search.base import STRATEGIES, get_strategy

    name = (record.metrics or {}).get("strategy")
    if name is None or name not in STRATEGIES:
        return "icdarts"
    return get_strategy(name).retrain_recipe(record.space)
