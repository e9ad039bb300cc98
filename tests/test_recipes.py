"""Retraining as the papers run it: each recipe's values checked by hand against its paper, each strategy's paper
preset (CTNAS' evaluation network, CSNAS' candidates, SS PCP-DARTS' data split), and ``run --strategy X`` retraining
with X's recipe."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

import nasdeploy.search  # noqa: F401  (the strategies register their retraining recipes)
from nasdeploy.search.base import get_strategy
from nasdeploy.train.config import TrainConfig
from nasdeploy.train.recipes import RECIPES, recipe_config


# ---------------------------------------------------------------- the values, by hand against the papers
def cited(recipe: str) -> dict[str, str]:
    return {field: where for field, (_, where) in RECIPES.get(recipe).paper.items()}


def test_ctnas_recipe_is_appendix_d():
    paper = recipe_config("ctnas", "paper")
    # App. D: "600 epochs using the batch size of 96", "SGD ... weight decay of 3e-4 and a momentum of 0.9", "starts
    # from 0.025 and follows the cosine annealing strategy with a minimum of 0.001", cutout 16, "path dropout ... of
    # 0.2", "auxiliary towers ... with a weight of 0.4"
    assert (paper.recipe, paper.epochs, paper.batch_size, paper.optimizer, paper.lr, paper.momentum) == (
        "ctnas", 600, 96, "sgd", 0.025, 0.9)
    assert (paper.weight_decay, paper.schedule, paper.lr_min) == (3e-4, "cosine", 0.001)
    assert (paper.cutout, paper.drop_path, paper.auxiliary_weight, paper.grad_clip) == (16, 0.2, 0.4, 5.0)
    assert cited("ctnas")["grad_clip"].startswith("choice")  # App. D gives none
    cpu = recipe_config("ctnas", "cpu")
    assert (cpu.epochs, cpu.batch_size, cpu.lr, cpu.lr_min, cpu.drop_path) == (3, 64, 0.025, 0.001, 0.2)


def test_csnas_recipe_is_appendix_b():
    paper = recipe_config("csnas", "paper")
    # App. B: "1200 epochs using batch size 128", "momentum SGD with learning rate 0.025, momentum = 0.9, weights
    # decay 3e-4 and gradient clip of 5", cutout 16, "linearly path drop out with probability 0.2", auxiliary 0.4
    assert (paper.recipe, paper.epochs, paper.batch_size, paper.optimizer, paper.lr, paper.momentum) == (
        "csnas", 1200, 128, "sgd", 0.025, 0.9)
    assert (paper.weight_decay, paper.grad_clip, paper.cutout, paper.drop_path, paper.auxiliary_weight) == (
        3e-4, 5.0, 16, 0.2, 0.4)
    assert paper.schedule == "cosine" and cited("csnas")["schedule"].startswith("choice")  # App. B names no schedule


def test_pcp_darts_recipe_is_section_iii_b_and_names_its_choices():
    paper = recipe_config("pcp-darts", "paper")
    # §III-B: "Adam Optimizer (l.r.=6e-4, β_1 =0.5, β_2 =0.999) with weight decay", auxiliary towers, cutout
    assert (paper.optimizer, paper.lr, tuple(paper.adam_betas), paper.auxiliary_weight, paper.cutout) == (
        "adam", 6e-4, (0.5, 0.999), 0.4, 16)
    sources = cited("pcp-darts")
    given = {f for f, where in sources.items() if not where.startswith("choice")}
    assert given == {"optimizer", "lr", "adam_betas", "auxiliary_weight", "cutout"}  # the rest: named choices
    assert all(sources[f].startswith("§III-B") for f in given)


def test_every_recipe_value_is_a_train_setting_with_its_source():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for name in RECIPES:
        recipe = RECIPES.get(name)
        assert set(recipe.paper) | set(recipe.cpu) | set(recipe.tiny) <= fields, name
        assert all(where.strip() for _, where in recipe.paper.values()), name


# ---------------------------------------------------------------- the paper presets
def test_ctnas_paper_preset_deploys_appendix_d_network():
    from nasdeploy.pipeline import RunConfig, space_and_template

    ctnas = get_strategy("ctnas")
    assert ctnas.template_overrides(ctnas.settings("paper", None), None, "darts") == {"layers": 18, "C": 44}
    assert ctnas.template_overrides(ctnas.settings("paper", None), None, "mobilenet") == {}
    assert ctnas.template_overrides(ctnas.settings("cpu", None), None, "darts") == {}
    _, template = space_and_template(RunConfig(strategy="ctnas", preset="paper"))  # what run profiles and retrains
    assert (template.layers, template.C, template.reduction_indices) == (18, 44, (6, 12))  # 16 normal + 2 reduction
    _, csnas = space_and_template(RunConfig(strategy="csnas", preset="paper"))
    assert (csnas.layers, csnas.C) == (20, 36)  # CSNAS App. B: 20 layers, 36 initial channels


def test_ctnas_deploy_network_differing_from_the_table_is_one_line(tmp_path):
    from nasdeploy.errors import NasDeployError
    from nasdeploy.search.context import check_overrides
    from nasdeploy.spaces.base import get_space

    template = get_space("darts").default_template("paper")
    with pytest.raises(NasDeployError, match=r"^layers=18 differs from the latency table's layers=20; drop --table"):
        check_overrides(template, {"layers": 18, "C": 44})


def test_csnas_paper_candidates_are_appendix_a():
    config = get_strategy("csnas").settings("paper", None)
    assert (config.search_layers, config.search_channels) == (8, 32)  # App. A (CIFAR-10); §V-B.1's 16 is the case study's
    assert get_strategy("csnas").settings("tiny", None).search_channels == 4


# ---------------------------------------------------------------- run --strategy X retrains with X's recipe
@pytest.mark.parametrize("strategy, space, recipe", [
    ("icdarts", "darts", "icdarts"), ("ctnas", "darts", "ctnas"), ("ctnas", "mobilenet", "senas"),
    ("csnas", "darts", "csnas"), ("pcp-darts", "darts", "pcp-darts"), ("ss-pcp-darts", "darts", "pcp-darts"),
    ("senas", "mobilenet", "senas"), ("senas", "darts", "icdarts"),
])
def test_run_retrains_with_the_searching_strategys_recipe(strategy, space, recipe, tmp_path, monkeypatch):
    import nasdeploy.train.trainer as trainer
    from nasdeploy.pipeline import RunConfig, stage_train
    from nasdeploy.spaces.base import get_space
    from nasdeploy.spaces.record import ArchitectureRecord

    template = get_space(space).default_template("tiny")
    arch = get_space(space).sample(template, random.Random(0))
    ArchitectureRecord(space, template, arch, {"strategy": strategy}).save(tmp_path / "search" / "arch.json")
    used = []

    def train_architecture(record, data, config, out, resume):  # the recipe the run resolves, without training
        used.append(config)
        return {"test_accuracy": 0.0}

    monkeypatch.setattr(trainer, "train_architecture", train_architecture)
    result = stage_train(RunConfig(out=tmp_path, space=space, strategy=strategy, preset="paper"), tmp_path)
    assert [c.recipe for c in used] == [recipe] and result.outputs["recipe"] == recipe
    assert used[0].epochs == recipe_config(recipe, "paper").epochs  # the paper's epochs come with its recipe


def test_metrics_json_records_the_recipe_and_its_source(tmp_path):
    from nasdeploy.spaces.record import ArchitectureRecord
    from nasdeploy.train.trainer import preset_config, train_architecture
    from test_train import SMALL, darts_record

    darts = darts_record()
    record = ArchitectureRecord(darts.space, darts.template, darts.arch, {"strategy": "ctnas"})
    train_architecture(record, "digits", preset_config("paper", "ctnas", **SMALL), tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["config"]["recipe"] == "ctnas" and saved["recipe_source"].startswith("Chen et al. 2021 App. D")
    assert (saved["config"]["weight_decay"], saved["config"]["drop_path"], saved["config"]["lr_min"]) == (3e-4, 0.2, 0.001)


def test_strategies_command_shows_the_recipe():
    from test_cli_help import nasdeploy

    result = nasdeploy("strategies", "csnas")
    lines = (result.stdout + result.stderr).splitlines()  # the rich console writes to stderr
    assert result.returncode == 0
    assert any(line.startswith("retrains with recipe csnas (darts): Nguyen & Chang App. B") for line in lines)
    assert "  epochs: cpu 3, paper 1200, tiny 1 (App. B)" in lines
    assert "  weight_decay: cpu 0.0003, paper 0.0003, tiny 0.0003 (App. B)" in lines


def test_export_retrains_the_latest_search_with_its_strategys_recipe(tmp_path, monkeypatch):
    import nasdeploy.train.trainer as trainer
    from nasdeploy.export.latest import latest_trained_model
    from nasdeploy.spaces.base import get_space
    from nasdeploy.spaces.record import ArchitectureRecord

    monkeypatch.chdir(tmp_path)
    space = get_space("darts")
    template = space.default_template("tiny")
    ArchitectureRecord("darts", template, space.sample(template, random.Random(0)), {"strategy": "csnas"}).save(
        tmp_path / "runs" / "search" / "arch.json")
    (tmp_path / "runs" / "search" / "search_log.json").write_text(json.dumps({"preset": "tiny", "data": "digits"}))
    used = []
    monkeypatch.setattr(trainer, "train_architecture", lambda record, data, config, out, resume: used.append(config))
    latest_trained_model()
    assert [(c.recipe, c.weight_decay, c.drop_path) for c in used] == [("csnas", 3e-4, 0.2)]
