"""SE-NAS' retraining recipe (``train.recipes``), registered with the strategy.

``senas`` — Hu et al. (2021) §4: "the training settings and hyper-parameters of all searched models follow
supernet training" ([42]): SGD momentum 0.9, weight decay 4e-5, batch 1024, lr 0.5 decayed per iteration as
lr·(1 − e/T), 240 epochs (300k iterations); no cutout, drop-path or auxiliary tower (MobileNet-like nets).
SE-NAS on the DARTS space retrains "following the training setting of [36]" (P-DARTS), which is the DARTS
recipe: ``SENAS.retrain_recipe`` returns ``icdarts`` there.
"""

from nasdeploy.train.recipes import Recipe, register

register(Recipe(
    "senas", "Hu et al. 2021 §4: retraining follows supernet training ([42]): SGD 0.5, 1 - e/T per iteration, 240 epochs",
    paper=dict(epochs=240, batch_size=1024, lr=0.5, momentum=0.9, weight_decay=4e-5, schedule="linear", cutout=0,
               drop_path=0.0, auxiliary_weight=0.0, grad_clip=5.0),
    cpu=dict(epochs=3, batch_size=64, lr=0.5 * 64 / 1024),
    tiny=dict(epochs=1, batch_size=32, lr=0.5 * 32 / 1024, max_batches=8),
))
