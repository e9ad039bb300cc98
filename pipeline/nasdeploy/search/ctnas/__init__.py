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

**Evaluation** (appendix D, DARTS space): the paper preset's deployment template is the paper's evaluation network,
18 cells (16 normal + 2 reduction) x 44 channels (``deploy_layers``, ``deploy_channels``), and the searched cells
retrain with the ``ctnas`` recipe (``ctnas.recipe``: batch 96, weight decay 3e-4, drop-path 0.2, cosine to 0.001).
"""

from __future__ import annotations

from typing import Any

from nasdeploy.search.base import STRATEGIES, SearchStrategy
from nasdeploy.search.context import SearchContext, SearchOutcome
from nasdeploy.search.ctnas import recipe  # noqa: F401  (registers the ctnas retraining recipe)
from nasdeploy.search.ctnas.config import PRESETS, CTNASConfig, validate
from nasdeploy.search.ctnas.run import CTNASRun


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

    def template_overrides(self, config: CTNASConfig, table_template=None, space: str = "darts") -> dict[str, Any]:
        """Appendix D's evaluation network on the DARTS space (the paper preset: 18 cells x 44 channels)."""
        if space != "darts":
            return {}
        fields = {"layers": config.deploy_layers, "C": config.deploy_channels}
        return {name: value for name, value in fields.items() if value is not None}

    def retrain_recipe(self, space: str) -> str:
        # appendix D: DARTS cells retrain with the paper's recipe; MobileNet-like nets are not retrained there (OFA
        # supernet weights, no fine-tuning): the supernet recipe of SE-NAS is our choice
        return "senas" if space == "mobilenet" else "ctnas"

    def search(self, ctx: SearchContext, config: CTNASConfig) -> SearchOutcome:
        return CTNASRun(ctx, config).run()
