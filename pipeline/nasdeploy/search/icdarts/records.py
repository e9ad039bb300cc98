"""What an ICDARTS run records and restores, mixed into ``ICDARTSRun`` (``icdarts.run``): the per-epoch record of
``search_log.json`` (losses, P(α), the predicted latency, the genotype, α), E's held-out accuracy, Algorithm 2's
edge-set scores and the checkpoint state.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from nasdeploy.search.shared.supernet import batchnorms, cumulative_statistics
from nasdeploy.spaces.darts import node_edge_ranges


class RunRecords:
    """Epoch records and checkpoint state of an ``ICDARTSRun``."""

    # ---------------------------------------------------------------- records
    def epoch_record(self, epoch: int, phase: str, lr: float, means: dict[str, float], seconds: float) -> dict[str, Any]:
        from nasdeploy.latency.predictor import predict_latency_ms

        space = self.setup.space
        genotype = self.genotype("retraining")
        weights_n, weights_r = self.S.mixing_weights()
        record = {"epoch": epoch, "phase": phase, "lr": lr, "delta": self.latency_control.coefficient, **means,
                  "genotype": space.arch_to_json(genotype),
                  "genotype_E": space.arch_to_json(self.genotype_E) if self.genotype_E is not None else None}
        if self.setup.table is not None:
            with torch.no_grad():
                record["expected_latency_ms"] = float(self.penalty())
            record["predicted_latency_ms"] = predict_latency_ms(self.setup.table, genotype, space, self.setup.deploy_template)
        if phase == "search" and self.E is not None:
            record["acc_E_val"] = self.evaluation_accuracy()
        record["alpha_normal"] = [[round(float(v), 5) for v in row] for row in weights_n.detach().cpu()]
        record["alpha_reduce"] = [[round(float(v), 5) for v in row] for row in weights_r.detach().cpu()]
        record["seconds"] = seconds
        return record

    @torch.no_grad()
    def evaluation_accuracy(self, limit: int = 256) -> float:
        """E's accuracy (eval mode) on the first ``limit`` images of the val half.

        E has trained for a few dozen steps only, so its running batch-norm statistics are still far from the
        data's; a copy of E gets them re-estimated (cumulative average) on the first ``limit`` *train* images
        first. No randomness and E itself is untouched, so a resumed search logs the same value.
        """
        net = copy.deepcopy(self.E)
        with cumulative_statistics([bn for bn in batchnorms([net]) if bn.track_running_stats]):
            net.train()
            xt = self.setup.train_set.tensors[0][:limit].to(self.setup.device)
            for i in range(0, len(xt), 128):
                net(xt[i : i + 128])
        net.eval()
        x, y = (t[:limit].to(self.setup.device) for t in self.setup.val_set.tensors)
        correct = sum(int((net(x[i : i + 128]).argmax(dim=1) == y[i : i + 128]).sum()) for i in range(0, len(y), 128))
        return correct / max(len(y), 1)

    def edge_set_scores(self) -> list[dict[str, float]]:
        """Algorithm 2's α score of each op in each edge set (node): its largest mixing weight on the node's edges."""
        scores = []
        for weights in self.S.mixing_weights():
            for edges in node_edge_ranges(self.setup.search_template.nodes):
                block = weights[edges.start : edges.stop].detach().max(dim=0).values
                scores.append({op: float(block[o]) for o, op in enumerate(self.setup.op_names)})
        return scores

    # ---------------------------------------------------------------- checkpoint
    def checkpoint(self):
        """This run's checkpoint: the shared helper, bound to the context's settings plus this phase's masks."""
        masks = [None if m is None else m.int().tolist() for m in self.masks]
        return self.setup.ctx.checkpoint(self.checkpoint_path, masks=masks, total_epochs=self.total_epochs)

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "step": self.step,
            "S": self.S.state_dict(), "opt_w": self.opt_w.state_dict(), "opt_a": self.opt_a.state_dict(),
            "E": self.E.state_dict() if self.E is not None else None,
            "opt_e": self.opt_e.state_dict() if self.opt_e is not None else None,
            "genotype_E": self.setup.space.arch_to_json(self.genotype_E) if self.genotype_E is not None else None,
            "latency_control": self.latency_control.state_dict(), "log": self.log, "seconds": self.seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        space = self.setup.space
        self.epoch, self.step, self.log, self.seconds = state["epoch"], state["step"], state["log"], state["seconds"]
        self.S.load_state_dict(state["S"])
        self.opt_w.load_state_dict(state["opt_w"])
        self.opt_a.load_state_dict(state["opt_a"])
        self.latency_control.load_state_dict(state["latency_control"])
        if state["genotype_E"] is not None:
            self.genotype_E = space.arch_from_json(state["genotype_E"])
            self.E = space.build(self.genotype_E, self.setup.eval_template).to(self.setup.device)
            self.E.load_state_dict(state["E"])
            self.opt_e = torch.optim.SGD(self.E.parameters(), lr=self.cfg.w_lr, momentum=self.cfg.w_momentum,
                                         weight_decay=self.cfg.w_weight_decay)
            self.opt_e.load_state_dict(state["opt_e"])

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"
