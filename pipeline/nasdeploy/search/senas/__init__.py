"""SE-NAS: shrinking-and-expanding supernet search under FLOPs and/or latency budgets (Hu et al. 2021).

Algorithm 1, as run here:

1. Train the single-path supernet for ``epochs`` (None: the paper's first stage for the space, §4.3: 100 epochs
   on MobileNet, 200 on DARTS; uniform paths, paths over a budget rejected and redrawn, §4.3). In the last
   epoch of every stage keep ``snapshots`` = K weight snapshots at evenly spaced mini-batches (Eq. 4).
2. At the end of each stage's training check the stopping condition: ``shrink_stages`` stages done, or (None,
   the paper preset) Algorithm 1's rule (``paper_stop_reason``: the whole space has <= T architectures, so it is
   one partial-model space with no weight sharing left, §3.4; every layer is down to one operator; or a stage
   could remove nothing). Otherwise score every operator with the K-averaged weights (Eq. 4-7,
   ``search.senas.scores``; ``score_samples`` feasible paths containing each operator, with batch-norm
   recalibration), remove the ``shrink_k`` lowest (never a layer's last operator, never one whose removal would
   leave no architecture within the budget), merge adjacent small layer spaces into child spaces of size
   <= ``merge_threshold`` = T and give each partial model its own weights (§3.4), and train the next stage
   (``stage_epochs``) — so the last expanded supernet is trained before it is searched.
3. Evolutionary search (SPOS: ``population``, ``generations``, ``mutation_prob``, crossover) over the final
   space, fitness = held-out accuracy with batch-norm recalibration, every candidate within the budgets.

Learning rate (§4.3): lr · (1 − e/T) per iteration e; ``lr_schedule = "run"`` (paper preset): T = the iterations
of the whole planned search (first stage + the most stages the stopping rule can take, ⌈removable operators / k⌉;
a search that stops earlier ends above 0), ``"stage"``: restarted at every stage.

Spaces: ``mobilenet`` (layer-wise, Table 2) and ``darts`` (edge-wise: each edge of the normal and reduction cell
is a layer; ``darts_cell = "paper"``: all 14 edges, the op space + ``none``, §3.5; ``"two-inputs"``: two sampled
inputs per node; see ``search.shared.paths``).
Data (§4.1): the context holds out ``val_fraction`` of the training split (paper: CIFAR's 5,000 of 50,000 = 0.1);
the supernet trains on the rest; Eq. 4/5, shrinking and the evolutionary fitness read the held-out images.

Settings (``nasdeploy strategies senas``; ``--set key=value``; missing = the preset's value):
``epochs``, ``stage_epochs``, ``shrink_stages``, ``shrink_k`` (k), ``merge_threshold`` (T), ``snapshots`` (K of
Eq. 4), ``score_samples`` (paths per operator for SI), ``val_fraction``, ``lr_schedule``, ``darts_cell``,
``population``, ``generations``, ``mutation_prob``, ``batch_size``, ``lr``, ``momentum``, ``weight_decay``,
``bn_batches`` (training batches for batch-norm recalibration), ``steps_per_epoch`` (cap on mini-batches per epoch;
None = whole epoch), ``val_samples`` (cap on held-out images used; None = all), ``max_tries`` (rejection-sampling
draws before repairing a path), ``final_samples`` (random paths whose mean accuracy is logged as the final supernet
accuracy), ``grad_clip`` (gradient-norm clip; None = off, as in the paper).

Presets: ``paper`` (§4.1/§4.3: 0.1 held out, 100/200 + 5 epochs per stage until the stopping rule, k = 10, T = 50,
1000 paths per operator, SGD lr 0.5 with lr·(1 − e/T) over the search, momentum 0.9, wd 4e-5, batch 1024; K = 10
snapshots is our choice, the paper gives none), ``cpu`` (digits at 32x32 on one core, the MobileNet cpu template
of 9 searchable layers; shortened, see ``PRESETS``), ``tiny`` (tests).

Run: ``nasdeploy search --strategy senas --space mobilenet --table LUT.json --latency-budget 22ms``
(``--flops-budget 320M`` as well or instead; ``--set key=value`` for any option above).

Outputs: ``arch.json``, ``search_log.json`` and ``architecture.png`` through the shared context's writer;
``checkpoint.pt`` (after every epoch, stage and generation; ``--resume`` continues it and ends with the same
architecture as an uninterrupted run: all randomness is derived from (seed, stage, epoch)).
"""

from __future__ import annotations

from nasdeploy.search.base import STRATEGIES, SearchStrategy
from nasdeploy.search.context import SearchContext, SearchOutcome
from nasdeploy.search.senas import recipe  # noqa: F401  (registers the senas retraining recipe)
from nasdeploy.search.senas.config import PRESETS, SenasConfig, validate
from nasdeploy.search.senas.run import SenasRun


@STRATEGIES.register("senas")
class SENAS(SearchStrategy):
    """Shrinking-and-expanding supernet search (Hu et al. 2021, Algorithm 1) under FLOPs and/or latency budgets."""

    name = "senas"
    spaces = ("mobilenet", "darts")
    default_for_spaces = ("mobilenet",)
    config_class = SenasConfig
    presets = PRESETS
    uses_flops_budget = True
    summary = "shrinking-and-expanding single-path supernet + evolution under FLOPs/latency budgets; Hu et al. 2021"
    data_parallel = True  # torchrun: ctx.loader + ctx.average_gradients; paths from the same seed stream on every rank

    def validate(self, config: SenasConfig) -> None:
        validate(config)

    def validation_fraction(self, config: SenasConfig) -> float:
        return config.val_fraction  # §4.1: the supernet trains on the rest

    def retrain_recipe(self, space: str) -> str:
        # §4: MobileNet-like nets retrain with the supernet's settings; DARTS cells "follow [36]" (P-DARTS),
        # which evaluates with the DARTS recipe
        return "senas" if space == "mobilenet" else "icdarts"

    def search(self, ctx: SearchContext, config: SenasConfig) -> SearchOutcome:
        return SenasRun(ctx, config).run()
