"""SE-NAS' retraining recipe (``train.recipes``), registered with the strategy.

``senas`` — Hu et al. (2021) §4.3: "the training settings and hyper-parameters of all searched models follow
supernet training" ([42]): SGD momentum 0.9, weight decay 4e-5, batch 1024, lr 0.5 decayed per iteration as
lr·(1 − e/T), 240 epochs (300k iterations); no cutout, drop-path or auxiliary tower (MobileNet-like nets).
SE-NAS on the DARTS space retrains "following the training setting of [36]" (P-DARTS), which is the DARTS
recipe: ``SENAS.retrain_recipe`` returns ``icdarts`` there.
"""

from nasdeploy.train.recipes import Recipe, register

register(Recipe(
    "senas", "Hu et al. 2021 §4.3: retraining follows supernet training ([42]): SGD 0.5, 1 - e/T per iteration, 240 epochs",
    paper=dict(
        epochs=(240, "§4.3: 240 epochs (300,000 iterations)"), batch_size=(1024, "§4.3"), optimizer=("sgd", "§4.3"),
        lr=(0.5, "§4.3"), momentum=(0.9, "§4.3"), weight_decay=(4e-5, "§4.3"),
        schedule=("linear", "§4.3: lr·(1 − e/T) per iteration"), cutout=(0, "choice: none named ([42])"),
        drop_path=(0.0, "choice: none named ([42])"), auxiliary_weight=(0.0, "MobileNet-like nets have no tower"),
        grad_clip=(5.0, "choice: not given; the trainer's clip"),
    ),
    cpu=dict(epochs=3, batch_size=64, lr=0.5 * 64 / 1024),
    tiny=dict(epochs=1, batch_size=32, lr=0.5 * 32 / 1024, max_batches=8),
))
