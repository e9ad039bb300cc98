"""A latency controller that steers α under a budget every step: a Lagrange multiplier updated by dual ascent.

The constrained problem is  min_α L_val(α)  s.t.  P_disc(α) <= B,  where P_disc is the predicted latency
(``latency.predictor.predict_latency_ms``) of the genotype the discretisation rule would produce from α *now*.
P_disc is a step function of α, so α descends on a differentiable surrogate instead: Algorithm 3's expected
latency P(α) normalised by its value at the start, P(α)/P(α_0) (unitless, like TF-NAS's LAT(α)/T,
Hu et al. 2020, so one step size suits any table's scale). The multiplier λ ascends on the true constraint:

    α step:      minimise  L_val(α) + λ · P(α) / P(α_0)                     (``penalty``)
    dual step:   λ ← max(0, λ + η · g)       if g > 0 (over the target)        (``observe``)
                 λ ← max(0, λ + η·s · g)     if g <= 0, with s = ``shrink`` <= 1
                 g = P_disc / (B · (1 − margin)) − 1

This is the basic differential method of multipliers (Platt & Barr 1988, "Constrained Differential
Optimization"): gradient descent on the primal variables and gradient *ascent* on the multiplier, projected
onto λ >= 0 (Arrow-Hurwicz-Uzawa). λ grows while the genotype is over the target and shrinks, never below 0,
when it is under, so the search is pushed exactly as hard as the budget needs instead of by a preset δ.
The additive update is chosen over a multiplicative one (λ ← λ·e^{ηg}) because it can reach λ = 0, i.e.
switch the penalty off entirely, when the budget is loose.

Two guards against ending over the budget. g is a step function of α, so plain dual ascent does not settle:
its equilibrium is a chattering one whose *time average* of g is 0 (the mixed equilibrium of the Lagrangian
game for non-convex constraints, Cotter, Jiang & Sridharan 2019), i.e. the genotype spends a share of the
steps over the target and the last step may be one of them. (1) ``shrink`` < 1 descends on slack more slowly
than it ascends on excess: at equilibrium η·E[g⁺] = η·s·E[g⁻], so the share of steps over the target is small
and, once the genotype is under, λ relaxes slowly instead of dropping and letting the genotype rebound.
(2) ``margin`` aims a little under B, so that a small rebound stays under B.

Known limit (measured on the cpu preset, 24 α steps with Adam): Adam moves each α coordinate by about its
learning rate whatever λ is, so once the penalty dominates a coordinate a larger λ buys nothing; and Algorithm
3's depth term lowers P when *any* op of a shallow edge (input k < 2) gains weight, so on those edges the
penalty can push a costly op up together with the cheap ones and leave the op choice to the task loss. Then
P_disc can plateau over the budget however high λ climbs, and ``search.shared.budget.fit_to_budget`` finishes the job.

The decoupled latency step (``ControllerConfig.step = "decoupled"``, the default) removes that limit. Adam divides
each coordinate's step by its own gradient scale, so in λ·P/P(α_0) added to α's loss only the *sign* of ∂P/∂α
survives: every op cheaper than its edge's expectation rises by the same step, the dearest of them as fast as the
cheapest, and with the tiny and cpu presets' 3-24 α steps the argmax among them is left to the initialisation's
noise. As AdamW decouples weight decay from Adam's normalisation (Loshchilov & Hutter 2019), the latency term is
then kept out of Adam and applied after its step as a plain gradient step, scaled once for all coordinates:

    α ← Adam step on the task loss (Eq. 3.9) only
    α ← α − lr_α · λ · ∇_α P / max|∇_α P|                                        (``decoupled_step``)

so the most penalised coordinate moves λ learning rates and every other in proportion to its own ∂P/∂α (its op's
cost against the edge's expectation, Algorithm 3): dear ops sink faster than cheap ones, and the choice among the
ops under the budget still follows the task loss where λ is small. λ is the same dual variable (``observe``), now
in units of α's learning rate. ``step = "adam"`` keeps λ·P/P(α_0) inside α's loss (Adam's step), as before.

Modes (``ControllerConfig.mode``): ``lagrangian`` (the above; needs a budget), ``fixed`` (Eq. 4.1's δ·P(α)
with P unnormalised, as in Table 4.7's δ ∈ {0.01, 0.05, 0.1}), ``off`` (no latency term).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from nasdeploy.errors import NasDeployError

MODES = ("lagrangian", "fixed", "off")
STEPS = ("decoupled", "adam")


@dataclass
class ControllerConfig:
    """``mode``: lagrangian | fixed | off. ``step``: decoupled (λ's term stepped after Adam's, module docstring) |
    adam (λ·P/P(α_0) inside α's loss). ``eta``: dual step size η per observed α step. ``margin``: aim at
    B·(1 − margin). ``shrink``: the step on slack relative to η (1: plain dual ascent). ``lambda_init``: λ
    before the first step. ``lambda_max``: cap on λ (None: no cap)."""

    mode: str = "lagrangian"
    step: str = "decoupled"
    eta: float = 1.0
    margin: float = 0.03
    shrink: float = 0.25
    lambda_init: float = 0.0
    lambda_max: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise NasDeployError(f"unknown latency control mode {self.mode!r}; choose one of: {', '.join(MODES)}")
        if self.step not in STEPS:
            raise NasDeployError(f"unknown latency step {self.step!r}; choose one of: {', '.join(STEPS)}")
        if self.eta < 0 or self.lambda_init < 0 or not 0 <= self.margin < 1 or not 0 <= self.shrink <= 1:
            raise NasDeployError(f"latency control needs eta >= 0, lambda_init >= 0, 0 <= margin < 1 and 0 <= shrink <= 1; "
                                 f"got eta={self.eta}, lambda_init={self.lambda_init}, margin={self.margin}, shrink={self.shrink}")

    @classmethod
    def from_settings(cls, settings) -> "ControllerConfig":
        """From a strategy's settings ``latency_control``, ``lambda_step``, ``lambda_eta``, ``lambda_margin``, ``lambda_shrink`` and
        ``lambda_init`` (the names every budget-controlled DARTS strategy shares); raises on bad values."""
        return cls(mode=settings.latency_control, step=settings.lambda_step, eta=settings.lambda_eta,
                   margin=settings.lambda_margin, shrink=settings.lambda_shrink, lambda_init=settings.lambda_init)


class LatencyController:
    """Sets the weight of the latency term in α's loss: λ by dual ascent, a fixed δ, or nothing (module docstring).

    ``budget_ms``: B (None: no budget). ``fixed_delta``: Eq. 4.1's δ; when given, the mode is ``fixed``
    whatever ``config.mode`` says. ``p0``: P(α_0), the surrogate's normaliser.
    """

    def __init__(self, budget_ms: float | None, fixed_delta: float | None, p0: float, config: ControllerConfig | None = None):
        self.config = config or ControllerConfig()
        self.budget_ms = None if budget_ms is None else float(budget_ms)
        self.fixed_delta = None if fixed_delta is None else float(fixed_delta)
        self.p0 = float(p0)
        if self.fixed_delta is not None:
            self.mode = "fixed"
        elif self.config.mode == "lagrangian" and self.budget_ms is None:
            self.mode = "off"  # no budget, nothing to steer to
        elif self.config.mode == "fixed":
            raise NasDeployError("latency control mode 'fixed' needs δ; pass --set delta=0.05 (Eq. 4.1) or choose lagrangian")
        else:
            self.mode = self.config.mode
        if self.mode == "lagrangian" and self.p0 <= 0:
            raise NasDeployError(f"P(alpha_0) = {self.p0} must be positive to normalise the latency surrogate")
        self.lam = float(self.config.lambda_init) if self.mode == "lagrangian" else 0.0
        self.steps = 0
        self.history: list[dict] = []

    @property
    def target_ms(self) -> float | None:
        return None if self.budget_ms is None else self.budget_ms * (1.0 - self.config.margin)

    @property
    def coefficient(self) -> float:
        """λ (lagrangian), δ (fixed) or 0 (off): the weight of the latency term, for logs and Eq. 4.1's w_S term."""
        if self.mode == "fixed":
            return self.fixed_delta
        return self.lam if self.mode == "lagrangian" else 0.0

    @property
    def decoupled(self) -> bool:
        """Whether λ's term is stepped apart from Adam (``decoupled_step``) instead of added to α's loss."""
        return self.mode == "lagrangian" and self.config.step == "decoupled"

    def penalty(self, expected: torch.Tensor) -> torch.Tensor:
        """The term to add to α's loss for Algorithm 3's ``expected`` = P(α): λ·P/P(α_0), δ·P (Eq. 4.1), or 0
        (also 0 with the decoupled step: λ's term is ``decoupled_step``'s)."""
        if self.mode == "fixed":
            return self.fixed_delta * expected  # Eq. 4.1: δ·P(α), P unnormalised
        if self.mode == "lagrangian" and not self.decoupled:
            return self.lam * expected / self.p0
        return expected.new_zeros(())

    def latency_gradient(self, expected: torch.Tensor, params) -> list[torch.Tensor] | None:
        """∇P(α) for ``decoupled_step``, taken before the task loss's backward pass; None when there is no such step
        (adam step, fixed δ, off, or λ = 0)."""
        params = list(params)
        if not self.decoupled or self.lam <= 0:
            return None
        grads = torch.autograd.grad(expected, params, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]

    @torch.no_grad()
    def decoupled_step(self, params, gradient: list[torch.Tensor] | None, lr: float) -> None:
        """After Adam's step on the task loss: α ← α − lr·λ·∇P/max|∇P| (module docstring; the scale is shared by
        all coordinates, so each moves in proportion to its own ∂P/∂α)."""
        if gradient is None:
            return
        scale = max(float(g.abs().max()) for g in gradient) if gradient else 0.0
        if scale <= 0:
            return
        for p, g in zip(params, gradient):
            p.add_(g, alpha=-lr * self.lam / scale)

    def constraint(self, discretised_ms: float) -> float:
        """g = P_disc / (B·(1 − margin)) − 1: positive while the discretised genotype is over the target."""
        return float(discretised_ms) / self.target_ms - 1.0

    def observe(self, discretised_ms: float) -> None:
        """After each α step: dual ascent λ ← max(0, λ + η·g), η·shrink on slack (Platt & Barr 1988; module docstring)."""
        self.steps += 1
        if self.mode == "lagrangian":
            g = self.constraint(discretised_ms)
            step = self.config.eta if g > 0 else self.config.eta * self.config.shrink
            lam = max(0.0, self.lam + step * g)
            self.lam = lam if self.config.lambda_max is None else min(lam, float(self.config.lambda_max))
        self.history.append({"step": self.steps, "lambda": self.coefficient, "discretised_ms": float(discretised_ms)})

    def describe(self) -> str:
        """One line for the search log: the rule and its source."""
        if self.mode == "fixed":
            return (f"delta fixed at {self.fixed_delta:g} (no adaptation): delta * P(alpha) added to alpha's loss, "
                    "P = Algorithm 3 unnormalised (Eq. 4.1, Table 4.7)")
        if self.mode == "off":
            return "no latency term: no latency budget and no delta (accuracy-only search)"
        cfg = self.config
        term = ("decoupled latency step after Adam's: alpha <- alpha - lr * lambda * grad P / max|grad P|" if self.decoupled
                else f"lambda * P(alpha) / P(alpha_0) added to alpha's loss, P(alpha_0) = {self.p0:.6g}")
        return (f"lagrangian: {term}; after every "
                f"alpha step lambda <- max(0, lambda + eta * g), g = P_disc / ({self.budget_ms:g} ms * (1 - {cfg.margin:g})) - 1, "
                f"eta = {cfg.eta:g} if g > 0 else {cfg.eta * cfg.shrink:g}, P_disc = predicted latency of the genotype "
                f"discretised from alpha, lambda_0 = {cfg.lambda_init:g} (dual ascent, differential method of multipliers, "
                "Platt & Barr 1988)")

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "lambda": self.lam, "steps": self.steps, "history": [dict(h) for h in self.history],
                "p0": self.p0, "config": asdict(self.config)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("mode") != self.mode:
            raise NasDeployError(f"latency controller state is for mode {state.get('mode')!r}, not {self.mode!r}")
        self.lam, self.steps, self.p0 = float(state["lambda"]), int(state["steps"]), float(state["p0"])
        self.history = [dict(h) for h in state["history"]]
