"""PCP-DARTS' retraining recipe (``train.recipes``), registered with the strategy.

``pcp-darts`` — Deevi et al. (2024) §IV-A, for ``pcp-darts`` and ``ss-pcp-darts``: Adam lr 6e-4, β = (0.5, 0.999)
"with weight decay" (the value is not given: DARTS' 3e-4 here), cross-entropy with the auxiliary tower (0.4),
cutout; epochs, batch, drop-path and clipping as the DARTS recipe (not stated in the paper). Adam's rate is not
scaled with the batch on the cpu preset.
"""

from nasdeploy.train.recipes import Recipe, register

register(Recipe(
    "pcp-darts", "Deevi et al. 2024 §IV-A (SS PCP-DARTS training stage): Adam 6e-4, betas (0.5, 0.999), auxiliary tower",
    paper=dict(epochs=600, batch_size=128, lr=6e-4, optimizer="adam", adam_betas=(0.5, 0.999), weight_decay=3e-4,
               schedule="cosine", cutout=16, drop_path=0.3, auxiliary_weight=0.4, grad_clip=5.0),
    cpu=dict(epochs=3, batch_size=64),
    tiny=dict(epochs=1, batch_size=32, max_batches=8),
))
