"""The steps of ICDARTS' Algorithm 1, one method each, mixed into ``ICDARTSRun`` (``icdarts.run``).

An epoch of the pre-training (Eq. 3.4: w_S only) or of the search: per step α on a *val* batch (Eq. 3.9 + the
latency term), the controller's dual update, w_S on a *train* batch (Eq. 3.10 / 4.1), w_E on the same batch
(Eq. 3.11); E is regenerated from the discretised α every S_U steps and warmed up. The gradient routing:
``search.shared.objective``.
"""

from __future__ import annotations

import torch

from nasdeploy.errors import NasDeployError
from nasdeploy.search.context import mix_seed
from nasdeploy.search.shared.objective import (
    accuracy,
    alpha_objective,
    evaluation_objective,
    pretrain_objective,
    running_means,
    search_weight_objective,
)


class Algorithm1Steps:
    """Epochs and steps of Algorithm 1 on the run's S, E, optimisers and latency controller."""

    # ---------------------------------------------------------------- schedule and data
    def loaders(self, epoch: int):
        bs, make_loader = self.cfg.batch_size, self.setup.ctx.loader  # under torchrun: this rank's share (distributed)
        train = make_loader(self.setup.train_set, bs, shuffle=True, seed=mix_seed(self.setup.seed, epoch, 1), drop_last=True)
        val = make_loader(self.setup.val_set, bs, shuffle=True, seed=mix_seed(self.setup.seed, epoch, 2), drop_last=True)
        if len(train) == 0 or len(val) == 0:
            raise NasDeployError(f"batch size {bs} is larger than half the training set ({len(self.setup.train_set)}); pass a smaller --batch-size")
        return train, val

    def steps_in(self, loader) -> int:
        cap = self.cfg.steps_per_epoch
        return len(loader) if cap is None else min(cap, len(loader))

    # ---------------------------------------------------------------- epochs
    def pretrain_epoch(self, epoch: int, bar, task) -> dict[str, float]:
        """Eq. 3.4: w_S only, α fixed, on train."""
        train, _ = self.loaders(epoch)
        steps, values = self.steps_in(train), {}
        self.S.train()
        for n, (x, y) in enumerate(train):
            if n >= steps:
                break
            x, y = x.to(self.setup.device), y.to(self.setup.device)
            self.opt_w.zero_grad(set_to_none=True)
            objective = pretrain_objective(self.S, x, y, self.cfg.aux_weight)
            objective.loss.backward()
            self.setup.ctx.average_gradients(self.S.weight_parameters())
            torch.nn.utils.clip_grad_norm_(self.S.weight_parameters(), self.cfg.w_grad_clip)
            self.opt_w.step()
            for key, value in {**objective.parts, "acc_S_train": accuracy(objective.logits, y)}.items():
                values.setdefault(key, []).append(value)
            bar.update(task, advance=1, info=f"L_S {objective.parts['loss_S_train']:.3f}")
        return running_means(values)

    def search_epoch(self, epoch: int, lr: float, bar, task) -> dict[str, float]:
        train, val = self.loaders(epoch)
        steps = min(self.steps_in(train), self.steps_in(val))
        update_every = self.cfg.update_every or steps
        values: dict[str, list[float]] = {}
        device = self.setup.device
        for n, ((xt, yt), (xv, yv)) in enumerate(zip(train, val)):
            if n >= steps:
                break
            if self.E is None or self.step % update_every == 0:
                self.regenerate(epoch, lr)
            for group in self.opt_e.param_groups:
                group["lr"] = lr
            parts = self.search_step(xt.to(device), yt.to(device), xv.to(device), yv.to(device))
            for key, value in parts.items():
                values.setdefault(key, []).append(value)
            info = f"L_S {parts['loss_S_train']:.3f} L_E {parts['loss_E_train']:.3f}"
            if "expected_latency_ms" in parts:
                info += f" E[lat] {parts['expected_latency_ms']:.2f} ms coef {self.latency_control.coefficient:.3g}"
            bar.update(task, advance=1, info=info)
        return running_means(values)

    # ---------------------------------------------------------------- one step: α, w_S, w_E
    def search_step(self, xt, yt, xv, yv) -> dict[str, float]:
        """One iteration of Algorithm 1 after (possible) regeneration of E: α on val, w_S and w_E on train."""
        self.S.train()
        self.E.train()
        obj_a, p_value = self.update_alpha(xv, yv)
        self.observe_latency()
        obj_w, obj_e = self.update_search_weights(xt, yt, p_value)
        self.step_evaluation(obj_e)
        self.step += 1
        return {**obj_a.parts, **obj_w.parts, **obj_e.parts, "acc_S_val": accuracy(obj_a.logits, yv),
                "acc_S_train": accuracy(obj_w.logits, yt), "acc_E_train": accuracy(obj_e.logits, yt)}

    def update_alpha(self, xv, yv):
        """α ← Eq. 3.9 + the latency term (decoupled λ step after Adam's, λ·P/P(α_0), or Eq. 4.1's δ·P) on val; P's value."""
        cfg, control = self.cfg, self.latency_control
        self.opt_a.zero_grad(set_to_none=True)
        obj_a = alpha_objective(self.S, self.E, xv, yv, cfg.distill_lambda, cfg.temperature, 0.0, None, cfg.aux_weight)
        loss_a, p_value, latency_gradient = obj_a.loss, 0.0, None
        if self.setup.table is not None and control.mode != "off":
            expected = self.penalty()
            loss_a = loss_a + control.penalty(expected)
            latency_gradient = control.latency_gradient(expected, self.S.arch_parameters())  # decoupled step's ∇P
            obj_a.parts["expected_latency_ms"] = p_value = float(expected.detach())
        loss_a.backward()
        self.setup.ctx.average_gradients(self.S.arch_parameters())
        self.opt_a.step()
        control.decoupled_step(list(self.S.arch_parameters()), latency_gradient, cfg.alpha_lr)
        return obj_a, p_value

    def observe_latency(self) -> None:
        """The controller's dual update on the genotype α discretises to now."""
        if self.setup.table is not None:
            from nasdeploy.latency.predictor import predict_latency_ms

            self.latency_control.observe(predict_latency_ms(self.setup.table, self.genotype("retraining"),
                                                            self.setup.space, self.setup.deploy_template))

    def update_search_weights(self, xt, yt, p_value: float):
        """w_S ← Eq. 3.10 / 4.1, on train (E's logits, computed here on the same batch, are constants)."""
        cfg, control = self.cfg, self.latency_control
        self.opt_w.zero_grad(set_to_none=True)
        self.opt_e.zero_grad(set_to_none=True)
        obj_e = evaluation_objective(self.E, xt, yt, cfg.aux_weight)
        p_scale = control.p0 if control.mode == "lagrangian" else 1.0  # the term α saw: λ·P/P(α_0) or δ·P
        obj_w = search_weight_objective(self.S, xt, yt, obj_e.final.detach(), cfg.distill_lambda, cfg.temperature,
                                        control.coefficient, p_value / p_scale, cfg.aux_weight)
        obj_w.loss.backward()
        self.setup.ctx.average_gradients(self.S.weight_parameters())
        torch.nn.utils.clip_grad_norm_(self.S.weight_parameters(), cfg.w_grad_clip)
        self.opt_w.step()
        return obj_w, obj_e

    def step_evaluation(self, obj_e) -> None:
        """w_E ← Eq. 3.11, on the same train batch (its own optimiser, its own loss only)."""
        obj_e.loss.backward()
        self.setup.ctx.average_gradients(self.E.parameters())
        torch.nn.utils.clip_grad_norm_(self.E.parameters(), self.cfg.w_grad_clip)
        self.opt_e.step()

    # ---------------------------------------------------------------- the evaluation network E
    def regenerate(self, epoch: int, lr: float, bar=None) -> None:
        """Discretise α to ᾱ, generate E in the evaluation template and warm it up: Algorithm 1's inner loop, w_E by
        Eq. 3.5 (L^E on *val*; ``eval_warmup_data=train``: Eq. 3.11's split); then joint steps on *train* (Eq. 3.11)."""
        cfg, make_loader = self.cfg, self.setup.ctx.loader
        self.genotype_E = self.genotype("evaluation")
        self.E = self.setup.space.build(self.genotype_E, self.setup.eval_template).to(self.setup.device)
        # a new E is a fresh network: its warm-up runs at the initial rate (at the annealed rate of late epochs
        # a few warm-up steps leave it at chance), then it follows S's cosine schedule
        warmup_lr = cfg.eval_warmup_lr if cfg.eval_warmup_lr is not None else cfg.w_lr
        self.opt_e = torch.optim.SGD(self.E.parameters(), lr=warmup_lr, momentum=cfg.w_momentum,
                                     weight_decay=cfg.w_weight_decay)
        self.E.train()
        for w in range(cfg.warmup_epochs):
            data = self.setup.val_set if cfg.eval_warmup_data == "val" else self.setup.train_set
            loader = make_loader(data, cfg.batch_size, shuffle=True,
                                 seed=mix_seed(self.setup.seed, epoch, self.step, 3 + w), drop_last=True)
            for n, (x, y) in enumerate(loader):
                if n >= self.steps_in(loader):
                    break
                self.update_evaluation(x.to(self.setup.device), y.to(self.setup.device))

    def update_evaluation(self, x, y):
        """w_E ← Eq. 3.11 (its own optimiser, its own loss only)."""
        self.opt_e.zero_grad(set_to_none=True)
        objective = evaluation_objective(self.E, x, y, self.cfg.aux_weight)
        objective.loss.backward()
        self.setup.ctx.average_gradients(self.E.parameters())
        torch.nn.utils.clip_grad_norm_(self.E.parameters(), self.cfg.w_grad_clip)
        self.opt_e.step()
        return objective
