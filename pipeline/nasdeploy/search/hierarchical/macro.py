"""The macro phase of hierarchical ICDARTS, version 1 (Herron 2023, §6, Algorithm 4, Figure 6.2).

S_macro (``MacroSearchNetwork``): the micro phase's cells at the deployment depth; cell k reads cell k - 1 and
Σ_i softmax(γ_k)_i · skip_i(out(s_i)) over its skip sources s_i (``spaces.darts_macro.skip_sources``, nearest
first). γ_{k,i} starts at -gamma_init·i, so the nearest source weighs most (§6). γ̄ (``discretize_skips``) keeps,
per cell, the previous cell and the source with the highest γ (ties: the nearer one): that is E_macro.

Algorithm 4 is Algorithm 1 with γ in α's place, so ``MacroRun`` is an ``ICDARTSRun`` with its S, its
architecture optimiser and its penalty swapped: per step γ on a *val* batch (Eq. 6.2 + the latency term), w_S on
a *train* batch (Eq. 6.3, distillation from E_macro), w_E on the same batch (Eq. 6.4); E_macro regenerated from
γ̄ every S_U steps and warmed up on *train* (Eq. 6.1); the losses are ``search.shared.objective``'s.

Budget (the macro analogue of Algorithm 3, ``MacroLatency``): the only part of the network γ changes is each
cell's skip preprocessing, so the expected latency of S_macro under γ is

    P(γ) = O( F + Σ_k Σ_i softmax(γ_k)_i · T[skip(s_i → k)],  N )

with T the table's entry (per-instance correction included), F the sum of every γ-independent instance (stem,
each cell's ops and its previous-cell preprocessing, classifier), N the number of ops (constant: one skip per
cell) and O the table's overhead model a + b·S + c·N (identity when none is fitted). For a one-hot γ, P(γ) is
exactly ``predict_latency_ms`` of that E_macro. The Lagrangian controller uses it as it uses Algorithm 3.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from nasdeploy.latency.predictor import op_latency_ms, overhead_coef, sum_and_count
from nasdeploy.latency.overhead import apply_overhead
from nasdeploy.search.icdarts.run import ICDARTSRun, SearchSetup
from nasdeploy.spaces.darts import Genotype, genotype_layouts
from nasdeploy.spaces.darts_macro import (
    MacroGenotype,
    MacroNetwork,
    default_inputs,
    fixed_macro_instances,
    skip_instance,
    skip_sources,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ S_macro and γ̄
def initial_gamma(cell: int, gamma_init: float) -> torch.Tensor:
    """γ_{k,i} = -gamma_init · i over cell k's sources, nearest first: the nearest weighs most (§6)."""
    return -gamma_init * torch.arange(len(skip_sources(cell)), dtype=torch.float32)


class GammaParameters:
    """γ as the architecture parameters of a macro search network (``self.gammas``, one vector per choice point);
    every other parameter is a weight. Softmax(γ) weights the choices (Eqs. 6.1–6.4 train γ like α)."""

    gammas: nn.ParameterList

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.gammas)

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.gammas}
        return [p for p in self.parameters() if id(p) not in arch]

    def gamma_weights(self) -> list[torch.Tensor]:
        return [torch.softmax(g, dim=0) for g in self.gammas]


class MacroSearchNetwork(GammaParameters, MacroNetwork):
    """S_macro: every cell mixes all its skip sources with softmax(γ_k) (Figure 6.2, left)."""

    def __init__(self, cells: Genotype, template, gamma_init: float):
        super().__init__(cells, template, [skip_sources(k) for k in range(template.layers)])
        self.gammas = nn.ParameterList(nn.Parameter(initial_gamma(k, gamma_init)) for k in range(template.layers))

    def forward(self, x: torch.Tensor):
        return super().forward(x, self.gamma_weights())


def discretize_skips(gammas: Sequence[torch.Tensor]) -> list[int]:
    """γ̄ (version 1): per cell the skip source with the highest γ; a tie goes to the nearer source."""
    inputs = []
    for k, gamma in enumerate(gammas):
        values = [float(v) for v in gamma.detach().reshape(-1)]
        best = max(range(len(values)), key=lambda i: (values[i], -i))
        inputs.append(skip_sources(k)[best])
    return inputs


# ------------------------------------------------------------------------------------------ P(γ)
class MacroLatency:
    """P(γ) of the module docstring, for one set of cells at the deployment template (costs looked up once)."""

    def __init__(self, table, cells: Genotype, template):
        layouts = genotype_layouts(cells, template)
        fixed = fixed_macro_instances(MacroGenotype(cells, default_inputs(template.layers)), template)
        self.fixed_ms, count = sum_and_count(table, fixed)
        self.count = count + template.layers  # one skip preprocessing per cell
        self.costs = [torch.tensor([op_latency_ms(table, skip_instance(layouts, template, s, k)) for s in skip_sources(k)])
                      for k in range(template.layers)]
        self.coef = overhead_coef(table)

    def __call__(self, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        total = weights[0].new_tensor(self.fixed_ms)
        for w, cost in zip(weights, self.costs):
            total = total + (w * cost.to(w)).sum()  # Σ_i softmax(γ_k)_i · T[skip(s_i → k)]
        return total if self.coef is None else apply_overhead(self.coef, total, float(self.count))


# ------------------------------------------------------------------------------------------ Algorithm 4
class SkipGraph:
    """Version 1's macro search graph: S_macro, γ̄, P(γ) and the last-resort fix-up for the micro phase's cells."""

    def __init__(self, cells: Genotype, gamma_init: float):
        self.cells, self.gamma_init = cells, gamma_init

    def network(self, template) -> MacroSearchNetwork:
        return MacroSearchNetwork(self.cells, template, self.gamma_init)

    def arch(self, network: MacroSearchNetwork) -> MacroGenotype:
        return MacroGenotype(self.cells, discretize_skips(network.gammas))

    def latency(self, table, template) -> MacroLatency:
        return MacroLatency(table, self.cells, template)

    def fit(self, arch: MacroGenotype, budget_ms: float, predict, table, template) -> "SkipFit":
        return fit_skips_to_budget(arch, budget_ms, predict, table, template)

    def describe(self, arch: MacroGenotype) -> dict[str, Any]:
        return {"inputs": list(arch.inputs)}


class MacroRun(ICDARTSRun):
    """Algorithm 4: ``ICDARTSRun``'s loop (epochs, steps, E regeneration, checkpoints) on S_macro and γ of ``graph``."""

    seed_salt = 0x3AC0

    def __init__(self, setup: SearchSetup, out_dir: Path, epochs: int, graph, label: str = "macro"):
        self.graph = graph
        self.latency = graph.latency(setup.table, setup.deploy_template) if setup.table is not None else None
        super().__init__(setup, out_dir, epochs, label=label)

    def build_search_network(self) -> nn.Module:
        return self.graph.network(self.setup.search_template)

    def stem_repeat_source(self) -> None:
        return None  # P(γ) prices skip preprocessings from the table; op weights do not apply

    def penalty(self) -> torch.Tensor:
        """P(γ) (module docstring), in ms."""
        return self.latency(self.S.gamma_weights())

    def genotype(self, stage: str = "retraining") -> MacroGenotype:
        """γ̄: the micro phase's cells in the template the current γ discretises to (the same for E and the result)."""
        return self.graph.arch(self.S)

    def epoch_record(self, epoch: int, phase: str, lr: float, means: dict[str, float], seconds: float) -> dict[str, Any]:
        from nasdeploy.latency.predictor import predict_latency_ms

        record = {"epoch": epoch, "phase": phase, "lr": lr, "delta": self.latency_control.coefficient, **means,
                  **self.graph.describe(self.genotype()),
                  "E": self.graph.describe(self.genotype_E) if self.genotype_E is not None else None}
        if self.setup.table is not None:
            with torch.no_grad():
                record["expected_latency_ms"] = float(self.penalty())
            record["predicted_latency_ms"] = predict_latency_ms(self.setup.table, self.genotype(), self.setup.space,
                                                                self.setup.deploy_template)
        if phase == "search" and self.E is not None:
            record["acc_E_val"] = self.evaluation_accuracy()
        record["gamma"] = [[round(float(v), 5) for v in w.detach()] for w in self.S.gamma_weights()]
        record["seconds"] = seconds
        return record


def macro_setup(micro: SearchSetup, config) -> SearchSetup:
    """S_macro and E_macro at the deployment depth (the result's cells); S_macro's width ``macro_channels``."""
    deploy = micro.deploy_template
    eval_template = replace(micro.eval_template, layers=deploy.layers)
    search_template = replace(eval_template, C=config.macro_channels or eval_template.C, auxiliary=False)
    macro_config = replace(config, pretrain_epochs=config.macro_pretrain_epochs, warmup_epochs=config.macro_warmup(),
                           update_every=config.macro_update_every, alpha_lr=config.macro_lr)
    return SearchSetup(ctx=micro.ctx, search_template=search_template, eval_template=eval_template,
                       op_names=micro.op_names, zero=micro.zero, config=macro_config)


# ------------------------------------------------------------------------------------------ budget fix-up
@dataclass
class SkipFit:
    arch: MacroGenotype
    predicted_ms: float
    replacements: list[dict]


def fit_skips_to_budget(arch: MacroGenotype, budget_ms: float, predict: Callable[[MacroGenotype], float],
                        table, template) -> SkipFit:
    """Last resort: move the cell whose skip saves most to its cheapest source, until the prediction fits.

    The micro phase's result (every cell on k - 2) met the budget and is one of the candidates, so all-cheapest
    meets it too: this ends under the budget whenever the micro phase did.
    """
    layouts = genotype_layouts(arch.cells, template)

    def cost(k: int, s: int) -> float:
        return op_latency_ms(table, skip_instance(layouts, template, s, k))

    return greedy_fit(arch.inputs, range(len(arch.inputs)), skip_sources, cost,
                      lambda inputs: MacroGenotype(arch.cells, inputs), predict, budget_ms, ("from", "to"))


def greedy_fit(choices: list[int], slots, options: Callable[[int], Any], cost: Callable[[int, int], float],
               build: Callable[[list[int]], MacroGenotype], predict: Callable[[MacroGenotype], float], budget_ms: float,
               keys: tuple[str, str]) -> SkipFit:
    """The greedy both last-resort fix-ups share (v1 skips, v2 cell types): while ``predict(build(choices))`` is over
    the budget, move the slot whose choice costs most above its cheapest option (``cost(slot, option)``) to that
    option; stop when no slot saves anything. Each move is recorded as ``{"cell", keys[0], keys[1], "saved_ms"}``."""
    choices, replacements = list(choices), []
    current = build(list(choices))
    predicted = predict(current)
    while predicted > budget_ms:
        saving, k = max((cost(k, choices[k]) - min(cost(k, t) for t in options(k)), k) for k in slots)
        if saving <= 0:
            break
        cheapest = min(options(k), key=lambda t: cost(k, t))
        replacements.append({"cell": k, keys[0]: choices[k], keys[1]: cheapest, "saved_ms": round(saving, 6)})
        choices[k] = cheapest
        current = build(list(choices))
        predicted = predict(current)
    return SkipFit(current, predicted, replacements)
