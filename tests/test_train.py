"""Retraining: the §3.4.2 recipe pieces, bit-identical resume, outputs that export can rebuild."""

from __future__ import annotations

import json

import pytest
import torch

import nasdeploy.search  # noqa: F401  (the strategies register their retraining recipes)
import nasdeploy.train.trainer as trainer
from nasdeploy.errors import NasDeployError
from nasdeploy.train.trainer import (
    TrainConfig,
    drop_path_at,
    load_trained_model,
    preset_config,
    train_architecture,
    training_loss,
)


def darts_record():
    from nasdeploy.spaces.base import get_space
    from nasdeploy.spaces.darts import Genotype
    from nasdeploy.spaces.ops import OP_SPACES
    from nasdeploy.spaces.record import ArchitectureRecord

    space = get_space("darts")
    template = space.default_template("tiny", C=4, layers=3, input_size=16)  # small: fast on 2 CPU cores
    ops = [op for op in OP_SPACES[template.op_space] if op not in ("none", "random")]
    cell = [[(ops[(2 * j) % len(ops)], 0), (ops[(2 * j + 1) % len(ops)], j + 1)] for j in range(template.nodes)]
    concat = list(range(2, template.nodes + 2))
    genotype = Genotype(normal=cell, normal_concat=concat, reduce=cell, reduce_concat=concat)
    return ArchitectureRecord("darts", template, genotype, {"predicted_latency_ms": 1.0})


def mobilenet_record():
    from nasdeploy.spaces.base import get_space
    from nasdeploy.spaces.mobilenet import LayerwiseArch, layer_layouts
    from nasdeploy.spaces.record import ArchitectureRecord

    space = get_space("mobilenet")
    template = space.default_template("tiny")
    choices = [layout.choices[-1 - (i % len(layout.choices))] for i, layout in enumerate(layer_layouts(template))]
    return ArchitectureRecord("mobilenet", template, LayerwiseArch(choices), {})


# two tiny epochs of a few batches each: enough to exercise drop-path, the aux tower and the scheduler
SMALL = dict(epochs=2, batch_size=16, max_batches=2, seed=3, threads=1)


def test_recipe_defaults_match_section_3_4_2():
    config = preset_config("paper")
    assert (config.epochs, config.batch_size, config.lr, config.momentum, config.weight_decay) == (600, 128, 0.025, 0.9, 5e-4)
    assert (config.cutout, config.drop_path, config.auxiliary_weight, config.grad_clip) == (16, 0.3, 0.4, 5.0)
    assert preset_config("cpu", epochs=3, lr=None).epochs == 3 and preset_config("cpu").lr == 0.025
    with pytest.raises(NasDeployError):
        preset_config("huge")


def test_drop_path_schedule_is_linear():
    assert drop_path_at(0, 10, 0.3) == 0.0
    assert drop_path_at(5, 10, 0.3) == pytest.approx(0.15)
    assert drop_path_at(9, 10, 0.3) == pytest.approx(0.27)


def test_training_loss_adds_weighted_auxiliary_term():
    logits, aux = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    target = torch.tensor([0])
    main = torch.nn.functional.cross_entropy(logits, target)
    extra = torch.nn.functional.cross_entropy(aux, target)
    assert training_loss(logits, aux, target, 0.4).item() == pytest.approx((main + 0.4 * extra).item())
    assert training_loss(logits, None, target, 0.4).item() == pytest.approx(main.item())


class Killed(Exception):
    pass


def test_resume_is_bit_identical(tmp_path, monkeypatch):
    record = darts_record()
    straight = train_architecture(record, "digits", TrainConfig(**SMALL), tmp_path / "straight")

    save = trainer.atomic_torch_save

    def save_then_die(obj, path):  # the process "dies" right after the first epoch's checkpoint
        save(obj, path)
        if str(path).endswith("checkpoint.pt") and obj["epoch"] == 0:
            raise Killed()

    monkeypatch.setattr(trainer, "atomic_torch_save", save_then_die)
    with pytest.raises(Killed):
        train_architecture(record, "digits", TrainConfig(**SMALL), tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "model.pt").exists()
    monkeypatch.setattr(trainer, "atomic_torch_save", save)
    resumed = train_architecture(record, "digits", TrainConfig(**SMALL), tmp_path / "resumed", resume=True)

    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr", "drop_path"):
        assert [e[key] for e in straight["epochs"]] == [e[key] for e in resumed["epochs"]]
    # and the two epochs really trained with the recipe's schedules
    assert straight["epochs"][0]["drop_path"] == 0.0 and straight["epochs"][1]["drop_path"] == pytest.approx(0.15)
    assert straight["epochs"][1]["lr"] < straight["epochs"][0]["lr"] == 0.025


def test_different_seed_changes_weights(tmp_path):
    record = darts_record()
    train_architecture(record, "digits", TrainConfig(**{**SMALL, "epochs": 1}), tmp_path / "a")
    train_architecture(record, "digits", TrainConfig(**{**SMALL, "epochs": 1, "seed": 4}), tmp_path / "b")
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=False)["state_dict"]
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_resume_with_other_settings_is_refused(tmp_path):
    record = darts_record()
    train_architecture(record, "digits", TrainConfig(**{**SMALL, "epochs": 1}), tmp_path)
    with pytest.raises(NasDeployError, match="epochs=1"):
        train_architecture(record, "digits", TrainConfig(**{**SMALL, "epochs": 3}), tmp_path, resume=True)


@pytest.mark.parametrize("make_record", [darts_record, mobilenet_record], ids=["darts", "mobilenet"])
def test_outputs_metrics_and_rebuild(tmp_path, make_record):
    record = make_record()
    metrics = train_architecture(record, "digits", TrainConfig(**{**SMALL, "epochs": 1}), tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"] and 0.0 <= saved["test_accuracy"] <= 1.0
    assert saved["params"] > 0 and saved["flops"] > 0 and saved["train_time_s"] > 0
    assert len(saved["epochs"]) == 1 and {"train_loss", "train_accuracy", "test_accuracy"} <= saved["epochs"][0].keys()
    model, payload = load_trained_model(tmp_path / "model.pt")
    assert not model.training
    x = torch.zeros(2, *payload["input_shape"][1:])
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)  # eval: logits only, no aux output
    assert payload["record"]["space"] == record.space


def test_not_a_model_file(tmp_path):
    torch.save({"weights": 1}, tmp_path / "x.pt")
    with pytest.raises(NasDeployError, match="not a model.pt"):
        load_trained_model(tmp_path / "x.pt")


def test_train_command_runs(tmp_path):
    from typer.testing import CliRunner

    from nasdeploy.cli import app

    record = darts_record()
    record.save(tmp_path / "arch.json")
    result = CliRunner().invoke(app, ["train", "--arch", str(tmp_path / "arch.json"), "--epochs", "1", "--batch-size", "256",
                                      "--out", str(tmp_path / "out"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output and (tmp_path / "out" / "model.pt").is_file()


# ---------------------------------------------------------------- recipes belong to strategies
def test_senas_recipe_is_section_4_and_cpu_scales_the_rate():
    from nasdeploy.train.recipes import recipe_config

    paper = recipe_config("senas", "paper")
    assert (paper.recipe, paper.epochs, paper.batch_size, paper.lr, paper.weight_decay, paper.schedule) == (
        "senas", 240, 1024, 0.5, 4e-5, "linear")
    assert (paper.cutout, paper.drop_path, paper.auxiliary_weight) == (0, 0.0, 0.0)
    cpu = recipe_config("senas", "cpu")
    assert cpu.batch_size == 64 and cpu.lr == pytest.approx(0.5 * 64 / 1024)  # linear scaling with the batch
    with pytest.raises(NasDeployError, match="unknown retraining recipe 'adamw'"):
        recipe_config("adamw", "paper")


def test_linear_schedule_decays_per_iteration_by_hand():
    model = torch.nn.Linear(2, 2)
    config = preset_config("paper", "senas", epochs=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    scheduler = trainer.make_scheduler(optimizer, config, batches_per_epoch=5)  # T = 10 iterations
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.5 * (1 - e / 10) for e in range(10)])


def test_searched_strategy_picks_the_recipe():
    from nasdeploy.spaces.record import ArchitectureRecord
    from nasdeploy.search.base import searched_recipe

    darts, mobile = darts_record(), mobilenet_record()
    assert searched_recipe(mobile) == "icdarts"  # no strategy recorded: the §3.4.2 recipe
    senas_mobile = ArchitectureRecord(mobile.space, mobile.template, mobile.arch, {"strategy": "senas"})
    senas_darts = ArchitectureRecord(darts.space, darts.template, darts.arch, {"strategy": "senas"})
    icdarts = ArchitectureRecord(darts.space, darts.template, darts.arch, {"strategy": "icdarts"})
    assert [searched_recipe(r) for r in (senas_mobile, senas_darts, icdarts)] == ["senas", "icdarts", "icdarts"]


def test_senas_recipe_trains_and_metrics_record_it(tmp_path):
    from nasdeploy.spaces.record import ArchitectureRecord

    mobile = mobilenet_record()
    record = ArchitectureRecord(mobile.space, mobile.template, mobile.arch, {"strategy": "senas"})
    from nasdeploy.search.base import searched_recipe

    config = preset_config("paper", searched_recipe(record), **SMALL)
    metrics = train_architecture(record, "digits", config, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["config"]["recipe"] == "senas" and saved["config"]["schedule"] == "linear"
    # per-iteration decay: epoch 2 starts after 2 of T = 4 iterations
    assert [e["lr"] for e in metrics["epochs"]] == pytest.approx([0.5, 0.5 * (1 - 2 / 4)])
