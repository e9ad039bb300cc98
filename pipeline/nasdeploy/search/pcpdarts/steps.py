"""One epoch of PCP-DARTS, mixed into ``PCPSearch`` (``pcpdarts.run``): the schedule and the train / val loaders,
per step α and β on a *val* batch (``alpha_objective``: L_CE, or ssf·L_BT + (1 − ssf)·L_CE, plus the latency
controller's term) and the weights on a *train* batch (L_CE, skip-connect dropout)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nasdeploy.errors import NasDeployError
from nasdeploy.search.context import mix_seed
from nasdeploy.search.pcpdarts.progressive import skip_dropout_rate
from nasdeploy.search.shared.barlow_twins import barlow_twins_terms
from nasdeploy.search.shared.darts_supernet import SearchNetwork
from nasdeploy.search.shared.objective import Objective, accuracy, running_means


# ------------------------------------------------------------------------------------------ the α objective
def alpha_objective(net: SearchNetwork, x: torch.Tensor, y: torch.Tensor, ssf: float, projector=None,
                    views: tuple[torch.Tensor, torch.Tensor] | None = None, bt_lambda: float = 5e-3) -> Objective:
    """§IV-B.1: L_CE (vanilla), or ssf·L_BT + (1 − ssf)·L_CE on the two views (SS PCP-DARTS).

    The cross-entropy forward runs first, so the random channel choices it draws are the same as a plain
    cross-entropy step's; at ssf = 0 the Barlow Twins forward is skipped and α's gradient is exactly L_CE's.
    The two views go through the network in one batch: both twins see the same random channel choice, i.e. they
    are one network, as Barlow Twins' "two identical networks" (§III-D); it also saves a forward pass.
    """
    logits = net(x)
    ce = F.cross_entropy(logits, y)
    parts = {"loss_CE_val": float(ce.detach())}
    if ssf == 0.0:
        return Objective(ce, parts, logits)
    z_a, z_b = projector(net.features(torch.cat(views))).chunk(2)
    bt = barlow_twins_terms(z_a, z_b, bt_lambda)
    parts.update({"loss_BT_val": float(bt.loss.detach()), "bt_invariance": float(bt.invariance.detach()),
                  "bt_redundancy": float(bt.redundancy.detach())})
    return Objective(ssf * bt.loss + (1.0 - ssf) * ce, parts, logits)


class PCPSteps:
    """Schedule, loaders and the steps of a ``PCPSearch`` epoch."""

    def lr_at(self, epoch: int) -> float:
        """Cosine annealing of the weights' rate over each phase (§III-B, P-DARTS per stage)."""
        cfg = self.cfg
        return cfg.w_lr_min + 0.5 * (cfg.w_lr - cfg.w_lr_min) * (1 + math.cos(math.pi * epoch / cfg.epochs_per_phase))

    def loaders(self):
        from nasdeploy.train.data import make_loader

        bs, data = self.cfg.batch_size, self.ctx.data
        train = make_loader(data.train, bs, shuffle=True, seed=mix_seed(self.ctx.seed, self.phase, self.epoch, 1), drop_last=True)
        val = make_loader(data.val, bs, shuffle=True, seed=mix_seed(self.ctx.seed, self.phase, self.epoch, 2), drop_last=True)
        if len(train) == 0 or len(val) == 0:
            raise NasDeployError(f"batch size {bs} is larger than the search's train or val set ({len(data.train)} / "
                                 f"{len(data.val)} images); pass a smaller --set batch_size=")
        return train, val

    def two_views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two distorted views of each image of the batch (the shared context's crop/flip/jitter/grayscale)."""
        a = torch.stack([self.views.view(image) for image in x.cpu()])
        b = torch.stack([self.views.view(image) for image in x.cpu()])
        return a.to(self.ctx.device), b.to(self.ctx.device)

    def alpha_step(self, xv: torch.Tensor, yv: torch.Tensor) -> dict[str, float]:
        """α, β ← §IV-B.1's loss + the controller's latency term, on a val batch; then the dual update."""
        control, table = self.latency_control, self.ctx.table
        self.opt_a.zero_grad(set_to_none=True)
        if self.opt_p is not None:
            self.opt_p.zero_grad(set_to_none=True)
        views = self.two_views(xv) if self.ssf > 0 else None
        obj = alpha_objective(self.S, xv, yv, self.ssf, self.projector, views, getattr(self.cfg, "bt_lambda", 0.0))
        loss, latency_gradient = obj.loss, None
        if table is not None and control.mode != "off":
            expected = self.penalty()
            loss = loss + control.penalty(expected)
            latency_gradient = control.latency_gradient(expected, self.S.arch_parameters())  # decoupled step's ∇P
            obj.parts["expected_latency_ms"] = float(expected.detach())
        loss.backward()
        self.opt_a.step()
        control.decoupled_step(list(self.S.arch_parameters()), latency_gradient, self.cfg.alpha_lr)
        if self.opt_p is not None:
            self.opt_p.step()
        self.opt_w.zero_grad(set_to_none=True)  # the α loss's gradient on w is not used (first order, w on L_CE)
        if table is not None:
            control.observe(self.ctx.predict_latency_ms(self.genotype()))
        return {**obj.parts, "acc_S_val": accuracy(obj.logits, yv)}

    def weight_step(self, xt: torch.Tensor, yt: torch.Tensor) -> dict[str, float]:
        """w ← L_CE on a train batch (§IV-B.2)."""
        self.opt_w.zero_grad(set_to_none=True)
        logits = self.S(xt)
        loss = F.cross_entropy(logits, yt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.S.weight_parameters(), self.cfg.w_grad_clip)
        self.opt_w.step()
        self.step += 1
        return {"loss_CE_train": float(loss.detach()), "acc_S_train": accuracy(logits, yt)}

    def run_epoch(self, bar, task) -> dict[str, float]:
        cfg, device = self.cfg, self.ctx.device
        phase = self.setup.phases[self.phase]
        train_arch = self.epoch >= cfg.frozen_epochs
        self.S.set_skip_dropout(skip_dropout_rate(phase.skip_dropout, self.epoch, cfg.epochs_per_phase,
                                                  cfg.frozen_epochs, cfg.skip_dropout_decay))
        for group in self.opt_w.param_groups:
            group["lr"] = self.lr_at(self.epoch)
        train, val = self.loaders()
        steps = min(len(train), len(val), cfg.steps_per_epoch or len(train))
        values: dict[str, list[float]] = {}
        self.S.train()
        for n, ((xt, yt), (xv, yv)) in enumerate(zip(train, val)):
            if n >= steps:
                break
            parts = self.alpha_step(xv.to(device), yv.to(device)) if train_arch else {}
            parts.update(self.weight_step(xt.to(device), yt.to(device)))
            for key, value in parts.items():
                values.setdefault(key, []).append(value)
            info = f"L_CE {parts['loss_CE_train']:.3f}"
            if "loss_BT_val" in parts:
                info += f" L_BT {parts['loss_BT_val']:.2f}"
            if "expected_latency_ms" in parts:
                info += f" E[lat] {parts['expected_latency_ms']:.2f} ms λ {self.latency_control.coefficient:.3g}"
            bar.update(task, advance=1, info=info)
        return running_means(values)
