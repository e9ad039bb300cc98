"""The result of a CSNAS study, mixed into ``CSNASRun`` (``csnas.run``): its best completed trial as the searched
architecture, the trial counts and one row per trial in ``search_log.json``."""

from __future__ import annotations

from typing import Any

from nasdeploy.errors import NasDeployError
from nasdeploy.search.context import SearchOutcome
from nasdeploy.search.csnas.candidate import SearchImages
from nasdeploy.search.csnas.encoding import decode

OBJECTIVE = ("mean over every search image of L_θ (Eq. 3: λ·L_NCE(r_x, z^t) + (1-λ)·L_NCE(r_x, z)) after the "
             "candidate's training, one pass without updates, fixed-seed views, memory-bank anchors; minimised")


class StudyOutcome:
    """The ``SearchOutcome`` of a ``CSNASRun``'s study."""

    def outcome(self, study, where: str, seconds: float, images: SearchImages) -> SearchOutcome:
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            raise NasDeployError(f"study {study.study_name!r} has no completed trial (all failed or were rejected); "
                                 "see search_log.json and raise the budget or lower lr")
        best = min(complete, key=lambda t: (t.value, t.number))
        genotype = decode(best.params, self.nodes)
        rows = [trial_row(t) for t in trials]
        counts = {
            "trials_complete": len(complete),
            "trials_trained": sum(1 for t in complete if t.user_attrs.get("trained")),
            "trials_duplicate": sum(1 for t in complete if "duplicate_of" in t.user_attrs),
            "trials_rejected": sum(1 for t in trials if t.state == TrialState.PRUNED and "rejected" in t.user_attrs),
            "trials_failed": sum(1 for t in trials if t.state == TrialState.FAIL),
            "trials_running": sum(1 for t in trials if t.state == TrialState.RUNNING),
        }
        metrics: dict[str, Any] = {
            "contrastive_loss": best.value, "best_trial": best.number, **counts,
            "trained_here": len(self.here["trained"]), "rejected_here": len(self.here["rejected"]),
            "workers": len({t.user_attrs.get("worker") for t in trials if t.user_attrs.get("worker")}),
            "study": study.study_name, "storage": where,
            "op_space": str(self.ctx.template.op_space), "nodes": self.nodes,
        }
        log_extra = {
            "objective": OBJECTIVE, "worker": self.worker, "here": self.here,
            "search_images": {"count": len(images), "of": images.total, "fraction": self.config.data_fraction},
            "search_template": self.search_template.to_dict(), "best": trial_row(best), "trials": rows,
        }
        extra = [p for p in [self.ctx.out_dir / "csnas_study.journal"] if p.is_file()]
        return SearchOutcome(arch=genotype, search_seconds=seconds, metrics=metrics, log=log_extra, extra_files=extra,
                             title=f"CSNAS trial {best.number} (contrastive loss {best.value:.3f})")


def trial_row(trial) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {
        "number": trial.number, "state": trial.state.name, "value": trial.value, "worker": attrs.get("worker"),
        "trained": bool(attrs.get("trained")), "predicted_latency_ms": attrs.get("predicted_latency_ms"),
        "rejected": attrs.get("rejected"), "duplicate_of": attrs.get("duplicate_of"), "failed": attrs.get("failed"),
        "train_seconds": attrs.get("train_seconds"), "train_losses": attrs.get("train_losses"),
        "constraints": dict(trial.constraints) if trial.constraints else None, "params": trial.params,
    }
