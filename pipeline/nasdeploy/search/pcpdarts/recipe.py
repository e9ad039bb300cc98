"""PCP-DARTS' retraining recipe (``train.recipes``), registered with the strategy.

``pcp-darts`` — Deevi et al. (2024) §III-B, the "training stages" of ``pcp-darts`` and ``ss-pcp-darts``:
cross-entropy, Adam lr 6e-4, β = (0.5, 0.999) "with weight decay", auxiliary towers, cutout. The paper gives no
weight decay, tower weight, cutout length, epochs, batch, schedule, drop-path or clipping: each is named below
as a choice (DARTS' or P-DARTS' [9] value, the progressive search PCP-DARTS builds on). Adam's rate is not scaled
with the batch on the cpu preset. The evaluation network has 20 cells (§IV-A.2; its width is not given: the paper
template's 36, DARTS').
"""

from nasdeploy.train.recipes import Recipe, register

register(Recipe(
    "pcp-darts", "Deevi et al. 2024 §III-B (training stages): Adam 6e-4, betas (0.5, 0.999), auxiliary towers, cutout",
    paper=dict(
        optimizer=("adam", "§III-B"), lr=(6e-4, "§III-B"), adam_betas=((0.5, 0.999), "§III-B"),
        weight_decay=(3e-4, "choice: §III-B says 'with weight decay', no value; DARTS' 3e-4"),
        auxiliary_weight=(0.4, "§III-B: auxiliary towers; choice: DARTS' weight 0.4"),
        cutout=(16, "§III-B: cutout; choice: DARTS' length 16"),
        epochs=(600, "choice: not given; DARTS' and P-DARTS' 600"),
        batch_size=(128, "choice: not given; P-DARTS' 128"),
        schedule=("cosine", "choice: not given for training (§III-B: cosine for the search)"),
        lr_min=(0.0, "choice: not given; cosine to 0"),
        drop_path=(0.3, "choice: not given; P-DARTS' 0.3"),
        grad_clip=(5.0, "choice: not given; DARTS' 5"),
    ),
    cpu=dict(epochs=3, batch_size=64),
    tiny=dict(epochs=1, batch_size=32, max_batches=8),
))
