"""CTNAS' run (Chen et al. 2021, Algorithm 1): labels from the supernet, the comparator (NAC) and the controller's
loop, checkpointed; the strategy and its settings: ``search.ctnas``."""

from __future__ import annotations

import dataclasses
import logging
import time
from types import SimpleNamespace
from typing import Any

import torch

from nasdeploy.errors import NasDeployError
from nasdeploy.progress import progress_bar
from nasdeploy.search.context import SearchContext, SearchOutcome, mix_seed
from nasdeploy.search.ctnas import nac as nac_lib
from nasdeploy.search.ctnas.choices import CHOICES, ChoiceSequence
from nasdeploy.search.ctnas.config import CTNASConfig
from nasdeploy.search.ctnas.controller import Controller, Reinforce
from nasdeploy.search.ctnas.labels import LabelState, SupernetLabels, sample_labelled
from nasdeploy.search.ctnas.proposals import BudgetedProposals
from nasdeploy.search.ctnas.state import LoopState
from nasdeploy.search.ctnas.steps import ControllerSteps

log = logging.getLogger(__name__)

RESULT_RULE = "the last baseline: Algorithm 2 over all baselines B and the last iteration's samples S, run once more after the last iteration"


# The controller decides two inputs per node, then their ops (ENAS/CTNAS's DARTS decisions): SE-NAS's
# "two-inputs" DARTS path space, not the paper SE-NAS space of all 14 edges with none.
ADAPTER_OPTIONS = SimpleNamespace(darts_cell="two-inputs")


class CTNASRun(BudgetedProposals, ControllerSteps):
    """One CTNAS search: the supernet labels, the NAC and the controller, and Algorithm 1's loop (``run``).

    Proposals within the budgets are ``BudgetedProposals`` (``ctnas.proposals``); one iteration's NAC and
    controller steps, the exploration (Algorithm 3) and the baseline update (Algorithm 2) ``ControllerSteps``
    (``ctnas.steps``).
    """

    def __init__(self, ctx: SearchContext, config: CTNASConfig):
        from nasdeploy.search.shared.space_adapters import make_adapter, search_template_for

        self.ctx, self.config = ctx, config
        info = ctx.data.info
        search_template = search_template_for(ctx.space, ctx.template, info.num_classes, info.channels)
        if config.supernet_input_size is not None:  # the supernet only; costs stay on the deployment template
            search_template = dataclasses.replace(search_template, input_size=config.supernet_input_size)
        self.adapter = make_adapter(ctx.space.name, search_template, ctx.template, ctx.table, ADAPTER_OPTIONS)
        self.seq: ChoiceSequence = CHOICES.get(ctx.space.name)(self.adapter, self.limits())
        self.check_budgets()
        self.started = time.monotonic()
        self.graphs: dict[tuple[int, ...], Any] = {}
        self.explored: tuple[torch.Tensor, torch.Tensor] | None = None  # D as bank indices and labels (mirrors the state)
        self.predicted: dict[tuple[int, ...], float | None] = {}

    # -------------------------------------------------------------- checkpoint, labels
    def checkpoint(self):
        return self.ctx.checkpoint(self.ctx.out_dir / "checkpoint.pt")

    def save(self, payload: dict[str, Any]) -> None:
        self.checkpoint().save(payload)

    def labels(self, saved: dict | None) -> LabelState:
        if saved is not None and saved["labels"].epochs_done >= self.config.supernet_epochs:
            return saved["labels"]
        if saved is not None:
            state = saved["labels"]
        else:
            archs, draws = sample_labelled(self.seq, self.config.labelled_archs, self.ctx.seed)
            if len(archs) < 4:
                raise NasDeployError(f"only {len(archs)} distinct architectures fit the budget; loosen it or pick a larger space")
            state = LabelState(archs=archs, labelled_draws=draws.to_json())
        labeller = SupernetLabels(self.ctx, self.config, self.adapter, self.seq,
                                  lambda s, lab, extra: self.save({"phase": "labels", "labels": s, "supernet": lab.state_dict()}))
        if saved is not None and "supernet" in saved:
            labeller.load_state_dict(saved["supernet"])
        with progress_bar() as bar:
            total = labeller.steps() * self.config.supernet_epochs
            task = bar.add_task("ctnas supernet", total=total, completed=labeller.steps() * state.epochs_done, info="")
            labeller.run(state, bar, task)
        return state

    # -------------------------------------------------------------- Algorithm 1
    def run(self) -> SearchOutcome:
        config, ctx = self.config, self.ctx
        saved = self.checkpoint().load() if ctx.resume and self.checkpoint().exists() else None
        labels = self.labels(saved)
        values = labels.labels()
        bank = nac_lib.GraphBank()
        items = [self.register(bank, d) for d in labels.archs]
        held = max(2, int(round(config.holdout * len(items))))
        train_items, train_values = items[:-held], values[:-held]
        held_items, held_values = items[-held:], values[-held:]
        labelled_pairs, labelled_y = nac_lib.all_pairs(train_items, train_values)

        torch.manual_seed(mix_seed(ctx.seed, 7))
        dims = self.graphs[tuple(labels.archs[0])].feature_dims
        nac = nac_lib.NAC(dims, config.nac_hidden)
        nac_opt = nac_lib.make_optimizer(nac, config.nac_lr, config.nac_weight_decay)
        controller = Controller(self.seq.step_sizes, config.controller_hidden)
        reinforce = Reinforce(controller, config.controller_lr, config.entropy_weight, config.reward_decay)
        generator = torch.Generator().manual_seed(mix_seed(ctx.seed, 11))
        state = LoopState()
        if saved is not None and saved.get("phase") == "search":
            state = saved["loop"]
            nac.load_state_dict(saved["nac"])
            nac_opt.load_state_dict(saved["nac_optimizer"])
            reinforce.load_state_dict(saved["controller"])
            generator.set_state(saved["generator"])
            for key in [*state.baselines, state.baseline, *state.last_samples, *[k for p in state.explored_pairs for k in p]]:
                self.register(bank, list(key))
        warm = state.history[0]["nac_heldout"] if state.history else {}
        if state.iteration == 0 and not state.baseline:
            self.nac_steps(nac, nac_opt, bank, labelled_pairs, labelled_y, state, config.nac_warmup_steps, phase=0)
            warm = self.nac_quality(nac, bank, held_items, held_values)
            state.history.append({"iteration": 0, "nac_heldout": warm})
            state.baseline = self.propose(controller, generator, state, grad=False).decisions  # step 4
        with progress_bar() as bar:
            task = bar.add_task("ctnas controller", total=config.iterations, completed=state.iteration, info="")
            while state.iteration < config.iterations:
                started = time.monotonic()
                info = self.iteration(state, nac, nac_opt, bank, labelled_pairs, labelled_y, reinforce, generator)
                state.seconds += time.monotonic() - started
                bar.update(task, advance=1, info=info)
                if state.iteration % config.checkpoint_every == 0 or state.iteration == config.iterations:
                    self.save({"phase": "search", "labels": labels, "loop": state, "nac": nac.state_dict(),
                               "nac_optimizer": nac_opt.state_dict(), "controller": reinforce.state_dict(),
                               "generator": generator.get_state()})
        final = self.update_baseline(state, nac, bank, final=True)
        quality = self.nac_quality(nac, bank, held_items, held_values)
        return self.outcome(labels, state, final, quality, warm, values, items, held)

    # -------------------------------------------------------------- outputs
    def outcome(self, labels: LabelState, state: LoopState, final: list[int], quality, warm, values, items, held) -> SearchOutcome:
        arch = self.arch(final)
        final_key = tuple(final)
        label_of = {tuple(d): v for d, v in zip(labels.archs, values)}
        metrics: dict[str, Any] = {
            "nac_pairwise_accuracy_heldout": quality["pairwise_accuracy"], "nac_kendall_tau_heldout": quality["kendall_tau"],
            "heldout_architectures": quality["architectures"], "labelled_architectures": len(labels.archs),
            "supernet_label_mean": sum(values) / len(values), "supernet_label_best": max(values),
            "final_supernet_label": label_of.get(final_key), "result_rule": RESULT_RULE,
            "baseline_updates": len(state.baseline_updates), "explored_pairs": len(state.explored_pairs),
            **state.counts,
            "budget_enforcement": "masking: options whose cheapest completion exceeds a budget are removed before each decision",
        }
        log_extra = {
            "labels": {"architectures": [self.ctx.space.arch_to_json(self.arch(d)) for d in labels.archs], "values": values,
                       "per_epoch": labels.accuracies, "supernet_losses": labels.losses, "draws": {"labelled": labels.labelled_draws, "supernet_training": labels.training_draws},
                       "supernet_seconds": round(labels.seconds, 2), "heldout": held},
            "nac_heldout_after_warmup": warm, "nac_heldout_final": quality, "history": state.history,
            "baseline_updates": state.baseline_updates, "counts": state.counts, "controller_seconds": round(state.seconds, 2),
        }
        seconds = labels.seconds + state.seconds
        return SearchOutcome(arch=arch, search_seconds=seconds, metrics=metrics, log=log_extra,
                             extra_files=[self.checkpoint().path], title="CTNAS final baseline")

