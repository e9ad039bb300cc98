"""Retraining recipes, one per paper, chosen by the strategy that searched the architecture.

A recipe turns a schedule preset ("tiny", "cpu", "paper") into a :class:`TrainConfig`. ``nasdeploy train`` and
``nasdeploy run`` take the recipe the searched strategy names (``SearchStrategy.retrain_recipe``, looked up by
``search.base.searched_recipe``) unless ``--recipe`` overrides it; ``metrics.json`` records it (``config``: every
value, ``config.recipe``: the name, ``recipe_source``: the paper) and ``nasdeploy strategies NAME`` lists it.

Each paper value sits next to the section that gives it (``Recipe.paper``: field -> (value, where)); a value the
paper does not give is marked "choice:" with the reason.

* ``icdarts`` — Herron (2023) §3.4.2, the CDARTS recipe for cell networks: SGD lr 0.025 momentum 0.9 weight
  decay 5e-4, cosine, batch 128, cutout 16, drop-path 0.3, auxiliary tower 0.4, 600 epochs.
* the others are registered by the strategies whose papers give them (train/ never imports search/), when
  ``nasdeploy.search`` is imported: ``senas`` (Hu et al. 2021 §4.3), ``ctnas`` (Chen et al. 2021 App. D),
  ``csnas`` (Nguyen & Chang App. B) and ``pcp-darts`` (Deevi et al. 2024 §III-B), each in its strategy's folder.

The cpu preset keeps each recipe's optimiser and schedule at batch 64 (more steps on a small data set) and 3
epochs; where the paper's batch is far larger (SE-NAS' 1024) the rate is scaled linearly with the batch (Goyal et
al. 2017), the DARTS-family recipes (batch 96-128) keep theirs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from nasdeploy.errors import NasDeployError
from nasdeploy.registry import Registry
from nasdeploy.train.config import TrainConfig

PRESETS = ("paper", "cpu", "tiny")


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str  # the paper and section the settings come from
    paper: dict[str, tuple[Any, str]]  # TrainConfig field -> (the paper's value, the section giving it / "choice: ...")
    cpu: dict[str, Any]  # changes for the cpu preset (epochs, batch, scaled lr)
    tiny: dict[str, Any]  # changes for the tiny preset (smoke tests)

    def values(self, preset: str = "paper") -> dict[str, Any]:
        """TrainConfig fields of ``preset``: the paper's values with the preset's changes."""
        presets = {"paper": {}, "paper-mo": {}, "cpu": self.cpu, "tiny": self.tiny}  # paper-mo retrains as paper
        if preset not in presets:
            raise NasDeployError(f"unknown preset {preset!r}; choose one of: {', '.join(presets)}")
        return {**{field: value for field, (value, _) in self.paper.items()}, **presets[preset]}


RECIPES: Registry[Recipe] = Registry("retraining recipe")


def register(recipe: Recipe) -> Recipe:
    return RECIPES.register(recipe.name)(recipe)


register(Recipe(
    "icdarts", "Herron 2023 §3.4.2 (the CDARTS evaluation recipe)",
    paper=dict(
        epochs=(600, "§3.4.2"), batch_size=(128, "§3.4.2"), optimizer=("sgd", "§3.4.2"), lr=(0.025, "§3.4.2"),
        momentum=(0.9, "§3.4.2"), weight_decay=(5e-4, "§3.4.2"), schedule=("cosine", "§3.4.2"),
        lr_min=(0.0, "choice: not given; DARTS' code anneals to 0"), cutout=(16, "§3.4.2"),
        drop_path=(0.3, "§3.4.2"), auxiliary_weight=(0.4, "§3.4.2"), grad_clip=(5.0, "choice: not given; DARTS' 5"),
    ),
    cpu=dict(epochs=3, batch_size=64),
    tiny=dict(epochs=1, batch_size=32, max_batches=8),
))


def recipe_config(recipe: str, preset: str = "paper", **overrides: Any) -> Any:
    """The TrainConfig of ``recipe`` at ``preset``; ``None`` overrides are ignored."""
    config = TrainConfig(recipe=recipe, **RECIPES.get(recipe).values(preset))
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def recipe_source(recipe: str) -> str | None:
    """Where a recipe's settings come from (``metrics.json``); None for a name no strategy registered."""
    return RECIPES.get(recipe).source if recipe in RECIPES else None


def recipe_rows(recipe: str) -> list[tuple[str, Any, Any, Any, str]]:
    """(field, paper value, cpu value, tiny value, where the paper gives it) for every field the recipe sets."""
    chosen = RECIPES.get(recipe)
    presets = [chosen.values(p) for p in PRESETS]
    cited = {field: where for field, (_, where) in chosen.paper.items()}
    fields = list(chosen.paper) + [f for f in {**chosen.cpu, **chosen.tiny} if f not in chosen.paper]
    return [(f, *(values.get(f, "") for values in presets), cited.get(f, "preset only")) for f in fields]
