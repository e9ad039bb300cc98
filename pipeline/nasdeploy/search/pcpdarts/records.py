"""What a PCP-DARTS search records and restores, mixed into ``PCPSearch`` (``pcpdarts.run``): the per-epoch record of
``search_log.json`` and the checkpoint state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class PCPRecords:
    """Epoch records and checkpoint state of a ``PCPSearch``."""

    def epoch_record(self, means: dict[str, float], seconds: float) -> dict[str, Any]:
        genotype = self.genotype()
        weights_n, weights_r = self.S.mixing_weights()
        edges_n, edges_r = self.edge_weights()
        phase = self.setup.phases[self.phase]
        record = {"phase": self.phase, "layers": phase.layers, "epoch": self.epoch, "lr": self.lr_at(self.epoch),
                  "alpha_trained": self.epoch >= self.cfg.frozen_epochs, "skip_dropout": self.current_skip_dropout(),
                  "lambda": self.latency_control.coefficient, **means,
                  "genotype": self.ctx.space.arch_to_json(genotype), "seconds": seconds}
        if self.ctx.table is not None:
            with torch.no_grad():
                record["expected_latency_ms"] = float(self.penalty())
            record["predicted_latency_ms"] = self.ctx.predict_latency_ms(genotype)
        record["alpha_normal"] = [[round(float(v), 5) for v in row] for row in weights_n.detach().cpu()]
        record["alpha_reduce"] = [[round(float(v), 5) for v in row] for row in weights_r.detach().cpu()]
        record["beta_normal"] = [round(float(v), 5) for v in edges_n.detach().cpu()]
        record["beta_reduce"] = [round(float(v), 5) for v in edges_r.detach().cpu()]
        return record

    def checkpoint(self):
        return self.ctx.checkpoint(self.checkpoint_path)

    @property
    def checkpoint_path(self) -> Path:
        return self.ctx.out_dir / "checkpoint.pt"

    def state_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "epoch": self.epoch, "step": self.step, "seconds": self.seconds,
                "masks": [m.int().tolist() for m in self.masks], "S": self.S.state_dict(),
                "opt_w": self.opt_w.state_dict(), "opt_a": self.opt_a.state_dict(),
                "projector": self.projector.state_dict() if self.projector is not None else None,
                "opt_p": self.opt_p.state_dict() if self.opt_p is not None else None,
                "latency_control": self.latency_control.state_dict(), "log": self.log,
                "phase_history": self.phase_history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.phase, self.epoch, self.step, self.seconds = state["phase"], state["epoch"], state["step"], state["seconds"]
        self.masks = tuple(torch.tensor(m, dtype=torch.bool) for m in state["masks"])
        self.build_phase()
        self.S.load_state_dict(state["S"])
        self.opt_w.load_state_dict(state["opt_w"])
        self.opt_a.load_state_dict(state["opt_a"])
        if self.projector is not None:
            self.projector.load_state_dict(state["projector"])
            self.opt_p.load_state_dict(state["opt_p"])
        self.latency_control.load_state_dict(state["latency_control"])
        self.log, self.phase_history = state["log"], state["phase_history"]
