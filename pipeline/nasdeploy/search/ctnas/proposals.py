"""CTNAS' proposals within the budgets (``ctnas.choices`` masks every decision so that the cheapest completion
fits), mixed into ``CTNASRun`` (``ctnas.run``): the limits, their pre-check, the redraw check of each sample, the
architecture graphs in the NAC's bank."""

from __future__ import annotations

import torch

from nasdeploy.errors import NasDeployError
from nasdeploy.search.ctnas import nac as nac_lib
from nasdeploy.search.ctnas.choices import Limit
from nasdeploy.search.ctnas.controller import Controller
from nasdeploy.search.ctnas.state import LoopState


class BudgetedProposals:
    """Budgets and proposals of a ``CTNASRun``."""

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
