"""CTNAS (Chen et al. 2021): search by comparing architectures with a Neural Architecture Comparator, under budgets.

Algorithm 1, as run here:

1. **Labels** (``ctnas.labels``): M architectures drawn uniformly from those within the budgets, scored by a
   uniform-sampling single-path supernet (SE-NAS's, never shrunk) trained on the ``train`` half and evaluated
   on the ``val`` half; label = mean accuracy over the last ``label_epochs`` epochs. A ``holdout`` share of them
   is kept out of NAC training to measure it (pairwise accuracy and Kendall τ of its ranking, appendix F).
2. All ordered pairs of the rest, y = 1{R_α ≥ R_α'}, form the labelled set A (step 2).
3. **NAC** (``ctnas.nac``): two GCN layers (Eq. 7) on each architecture's graph (``SearchSpace.arch_graph``),
   concatenated, FC + sigmoid (Eq. 6), BCE, Adam 2e-4 / 5e-4, batch 256; ``nac_warmup_steps`` on A first.
4. β ~ π(·; θ) (step 4). Then for t = 1..T: ``nac_steps`` NAC steps on C = A ∪ D (half of each batch from the
   explored pairs D once there are some, §4.2); N = ``controller_batch`` samples α_j ~ π, reward
   NAC(α_j, β) + 5e-4·entropy, one REINFORCE step (``ctnas.controller``); ``explore_samples`` more samples S,
   ``explore_pairs`` random pairs of them labelled by the NAC and the ``explore_keep`` most confident added to D
   (Algorithm 3, ``ctnas.curriculum``); B ← B ∪ {β}; every ``baseline_every`` iterations β ← Algorithm 2 over
   B ∪ S.
5. **Result**: after the last iteration Algorithm 2 runs once more over B ∪ S; its pick (the last baseline) is
   the searched architecture.

**Budgets**: every decision of the controller is masked so that the cheapest completion stays within the latency
(LUT) and FLOPs budgets (``ctnas.choices``): every proposal, baseline and the result are within budget by
construction. Each sample is still checked with the LUT predictor and FLOPs table; one over a budget would be
redrawn and counted (``over_budget_redraws``; expected 0). Masked options are counted (``masked_options``).

Outputs: the common files through the context, ``checkpoint.pt`` (after every supernet epoch and every
``checkpoint_every`` iterations; ``--resume`` continues to the same result).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch

from nasdeploy.errors import NasDeployError
from nasdeploy.progress import progress_bar
from nasdeploy.search.base import STRATEGIES, SearchStrategy
from nasdeploy.search.context import SearchContext, SearchOutcome, mix_seed
from nasdeploy.search.ctnas.choices import CHOICES, ChoiceSequence, Limit
from nasdeploy.search.ctnas.config import PRESETS, CTNASConfig, validate
from nasdeploy.search.ctnas.controller import Controller, Reinforce
from nasdeploy.search.ctnas.curriculum import explore, sample_pairs, update_baseline
from nasdeploy.search.ctnas.labels import LabelState, SupernetLabels, sample_labelled
from nasdeploy.search.ctnas import nac as nac_lib

log = logging.getLogger(__name__)

RESULT_RULE = "the last baseline: Algorithm 2 over all baselines B and the last iteration's samples S, run once more after the last iteration"


@dataclass
class LoopState:
    """The controller phase's state besides the modules (checkpointed every ``checkpoint_every`` iterations)."""

    iteration: int = 0
    baseline: list[int] = field(default_factory=list)  # decisions of β
    baselines: list[list[int]] = field(default_factory=list)  # B
    last_samples: list[list[int]] = field(default_factory=list)  # S of the latest iteration
    explored_pairs: list[tuple[Any, Any]] = field(default_factory=list)  # D, as (decisions key, decisions key)
    explored_labels: list[int] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    baseline_updates: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"controller_samples": 0, "explore_samples": 0,
                                                            "masked_options": 0, "over_budget_redraws": 0})
    seconds: float = 0.0


# The controller decides two inputs per node, then their ops (ENAS/CTNAS's DARTS decisions): SE-NAS's
# "two-inputs" DARTS path space, not the paper SE-NAS space of all 14 edges with none.
ADAPTER_OPTIONS = SimpleNamespace(darts_cell="two-inputs")


class CTNASRun:
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

    # -------------------------------------------------------------- budgets
    def limits(self) -> list[Limit]:
        out = []
        if self.ctx.latency_budget_ms is not None:
            out.append(Limit("latency_ms", self.adapter.latency, self.ctx.latency_budget_ms))
        if self.ctx.flops_budget is not None:
            out.append(Limit("flops", self.adapter.flops, self.ctx.flops_budget))
        return out

    def check_budgets(self) -> None:
        if not any(self.seq.mask(0, [])):
            cheapest = {l.name: round(self.seq.cheapest(l), 4) for l in self.seq.limits}
            raise NasDeployError(f"no {self.ctx.space.name} architecture meets the budgets {[(l.name, l.budget) for l in self.seq.limits]}: "
                                 f"the cheapest is {cheapest}; raise --latency-budget / --flops-budget")

    def within_budget(self, decisions: list[int]) -> bool:
        """The LUT predictor on the genotype itself (not the additive tables the mask used) and the FLOPs table."""
        key = tuple(decisions)
        if key not in self.predicted:
            self.predicted[key] = self.ctx.predict_latency_ms(self.arch(decisions))
        latency = self.predicted[key]
        if self.ctx.latency_budget_ms is not None and latency is not None and latency > self.ctx.latency_budget_ms * (1 + 1e-9):
            return False
        flops = [l for l in self.seq.limits if l.name == "flops"]
        return all(self.seq.cost(l, decisions) <= l.budget for l in flops)

    # -------------------------------------------------------------- architectures
    def arch(self, decisions: list[int]):
        return self.adapter.to_arch(self.seq.to_path(decisions))

    def register(self, bank: nac_lib.GraphBank, decisions: list[int]) -> int:
        key = tuple(decisions)
        if key not in self.graphs:
            self.graphs[key] = self.ctx.space.arch_graph(self.arch(decisions), self.ctx.template)
        return bank.add(key, self.graphs[key])

    def propose(self, controller: Controller, generator: torch.Generator, state: LoopState, grad: bool):
        """One masked sample of π, checked against the predictor (redrawn and counted if ever over budget)."""
        for _ in range(100):
            with torch.set_grad_enabled(grad):
                sample = controller.sample(self.seq.mask, generator)
            state.counts["masked_options"] += sample.masked_options
            if self.within_budget(sample.decisions):
                return sample
            state.counts["over_budget_redraws"] += 1
        raise NasDeployError("the controller proposed 100 architectures in a row over the budget; report this as a bug")

    # -------------------------------------------------------------- checkpoint
    def checkpoint(self):
        return self.ctx.checkpoint(self.ctx.out_dir / "checkpoint.pt")

    def save(self, payload: dict[str, Any]) -> None:
        self.checkpoint().save(payload)

    # -------------------------------------------------------------- phase 1: labels
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

    # -------------------------------------------------------------- phase 2: NAC + controller
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

    def nac_steps(self, nac, optimizer, bank, pairs, labels, state: LoopState, steps: int, phase: int = 1) -> float | None:
        """NAC steps on C = A ∪ D; once D is not empty, ``explored_share`` of each batch comes from D (§4.2)."""
        rng = torch.Generator().manual_seed(mix_seed(self.ctx.seed, 13, phase, state.iteration))
        loss = None
        if self.explored is None and state.explored_pairs:  # after a resume: D from the state's keys, once
            self.explored = (torch.tensor([(bank.index[a], bank.index[b]) for a, b in state.explored_pairs], dtype=torch.long),
                             torch.tensor(state.explored_labels, dtype=torch.long))
        explored, explored_y = self.explored if self.explored is not None else (None, None)
        batch = self.config.nac_batch_size
        for _ in range(steps):
            n_explored = int(round(self.config.explored_share * batch)) if explored is not None else 0
            a = torch.randint(len(pairs), (batch - n_explored,), generator=rng)
            x, y = pairs[a], labels[a]
            if n_explored:
                e = torch.randint(len(explored), (n_explored,), generator=rng)
                x, y = torch.cat([x, explored[e]]), torch.cat([y, explored_y[e]])
            loss = nac_lib.train_step(nac, optimizer, bank, x, y)
        return loss

    def iteration(self, state: LoopState, nac, nac_opt, bank, pairs, labels, reinforce: Reinforce, generator) -> str:
        config = self.config
        nac_loss = self.nac_steps(nac, nac_opt, bank, pairs, labels, state, config.nac_steps)  # step 7
        # steps 9-10: N samples, reward NAC(α_j, β) (+ entropy inside Reinforce.step)
        samples = [self.propose(reinforce.controller, generator, state, grad=True) for _ in range(config.controller_batch)]
        state.counts["controller_samples"] += len(samples)
        beta = self.register(bank, state.baseline)
        compared = torch.tensor([(self.register(bank, s.decisions), beta) for s in samples], dtype=torch.long)
        scores = nac_lib.compare(nac, bank, compared).tolist()
        step = reinforce.step(samples, scores)
        # steps 12-13: S and data exploration (Algorithm 3)
        explore_samples = [self.propose(reinforce.controller, generator, state, grad=False).decisions
                           for _ in range(config.explore_samples)]
        state.counts["explore_samples"] += len(explore_samples)
        kept = self.explore(state, nac, bank, explore_samples, generator)
        # steps 14-15
        if state.baseline not in state.baselines:
            state.baselines.append(list(state.baseline))
        state.last_samples = explore_samples
        state.iteration += 1
        if state.iteration % config.baseline_every == 0 and state.iteration < config.iterations:
            self.update_baseline(state, nac, bank)
        if state.iteration % max(1, config.iterations // 50) == 0 or state.iteration == 1:
            state.history.append({"iteration": state.iteration, "reward": round(step["reward"], 5),
                                  "nac_score_vs_baseline": round(sum(scores) / len(scores), 5),
                                  "nac_loss": None if nac_loss is None else round(nac_loss, 5), "explored_kept": kept,
                                  "explored_total": len(state.explored_pairs)})
        return f"reward {step['reward']:.3f}, |D| {len(state.explored_pairs)}, baselines {len(state.baselines)}"

    def explore(self, state: LoopState, nac, bank, samples: list[list[int]], generator) -> int:
        """Algorithm 3 on the sampled set: NAC-labelled pairs, the ``explore_keep`` most confident kept in D."""
        if self.config.explore_keep == 0:
            return 0
        indices = [self.register(bank, d) for d in samples]
        pairs = sample_pairs(len(indices), self.config.explore_pairs, generator)
        as_bank = torch.tensor([(indices[i], indices[j]) for i, j in pairs.tolist()], dtype=torch.long).reshape(-1, 2)
        distinct = as_bank[:, 0] != as_bank[:, 1]  # α_k ≠ α'_k (the policy can repeat an architecture)
        as_bank = as_bank[distinct]
        if len(as_bank) == 0:
            return 0
        found = explore(as_bank, nac_lib.compare(nac, bank, as_bank), self.config.explore_keep)
        for (a, b), y in zip(found.pairs.tolist(), found.labels.tolist()):
            state.explored_pairs.append((bank.keys[a], bank.keys[b]))
            state.explored_labels.append(int(y))
        if self.explored is None:
            self.explored = (found.pairs, found.labels)
        else:
            self.explored = (torch.cat([self.explored[0], found.pairs]), torch.cat([self.explored[1], found.labels]))
        overflow = len(state.explored_pairs) - self.config.explored_cap
        if overflow > 0:  # the oldest explored pairs leave C
            del state.explored_pairs[:overflow], state.explored_labels[:overflow]
            self.explored = (self.explored[0][overflow:], self.explored[1][overflow:])
        return len(found.labels)

    def update_baseline(self, state: LoopState, nac, bank, final: bool = False) -> list[int]:
        """Algorithm 2 over H = B ∪ S."""
        candidates: list[list[int]] = []
        for d in [*state.baselines, state.baseline, *state.last_samples]:
            if list(d) not in candidates:
                candidates.append(list(d))
        if len(candidates) == 1:
            return candidates[0]
        matrix = nac_lib.score_matrix(nac, bank, [self.register(bank, d) for d in candidates])
        pick = update_baseline(matrix)
        changed = candidates[pick] != state.baseline
        state.baseline = candidates[pick]
        state.baseline_updates.append({"iteration": state.iteration, "candidates": len(candidates), "changed": changed,
                                       "score": float((matrix[pick].sum() - matrix[pick, pick]) / (len(candidates) - 1)),
                                       "predicted_latency_ms": self.predicted.get(tuple(state.baseline)), "final": final})
        return state.baseline

    def nac_quality(self, nac, bank, items: list[int], values: list[float]) -> dict[str, Any]:
        """Held-out architectures (never in a training pair): pairwise accuracy and Kendall τ (appendix F)."""
        pairwise = nac_lib.pairwise_accuracy(nac, bank, items, values)
        tau = nac_lib.kendall_tau(nac_lib.nac_ranking_scores(nac, bank, items), values)
        return {"architectures": len(items), "pairs": pairwise["pairs"], "pairwise_accuracy": pairwise["accuracy"], "kendall_tau": tau}

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
            **state.counts, "retrain_epochs": self.config.retrain_epochs,
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


@STRATEGIES.register("ctnas")
class CTNAS(SearchStrategy):
    """Contrastive NAS (Chen et al. 2021): a GCN comparator's P(α better than β) as the controller's reward."""

    name = "ctnas"
    spaces = ("darts", "mobilenet")
    config_class = CTNASConfig
    presets = PRESETS
    uses_flops_budget = True
    summary = "LSTM controller rewarded by a GCN architecture comparator vs a curriculum baseline; supernet labels; budget-masked; Chen et al. 2021"

    def validate(self, config: CTNASConfig) -> None:
        validate(config)

    def retrain_recipe(self, space: str) -> str:
        # appendix D: DARTS cells retrain with the DARTS recipe; MobileNet-like nets with the supernet's (SE-NAS)
        return "senas" if space == "mobilenet" else "icdarts"

    def search(self, ctx: SearchContext, config: CTNASConfig) -> SearchOutcome:
        return CTNASRun(ctx, config).run()
