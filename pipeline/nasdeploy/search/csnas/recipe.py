"""CSNAS' retraining recipe (``train.recipes``), registered with the strategy.

``csnas`` — Nguyen & Chang, appendix B (CIFAR-10 validation), "employed from existing studies [1], [3]-[5], [8]":
1200 epochs, batch 128, momentum SGD lr 0.025, momentum 0.9, weight decay 3e-4, gradient clip 5, cutout 16, path
dropout 0.2 increased linearly, an auxiliary classifier at 2/3 of the depth weighted 0.4, on 20 cells of 36
initial channels (the paper template). App. B names no schedule: DARTS' ([8]) cosine to 0 is used.
(§V-B.2's recipe, lr 0.02 decayed ×0.99 every 3.5 epochs on 18 × 48 cells, is the skin-lesion case study's.)
"""

from nasdeploy.train.recipes import Recipe, register

register(Recipe(
    "csnas", "Nguyen & Chang App. B (CIFAR-10): SGD 0.025, wd 3e-4, clip 5, drop-path 0.2, batch 128, 1200 epochs",
    paper=dict(
        epochs=(1200, "App. B"), batch_size=(128, "App. B"), optimizer=("sgd", "App. B"), lr=(0.025, "App. B"),
        momentum=(0.9, "App. B"), weight_decay=(3e-4, "App. B"),
        schedule=("cosine", "choice: not given; DARTS' ([8])"), lr_min=(0.0, "choice: not given; DARTS' 0"),
        cutout=(16, "App. B"), drop_path=(0.2, "App. B: increased linearly"), auxiliary_weight=(0.4, "App. B"),
        grad_clip=(5.0, "App. B"),
    ),
    cpu=dict(epochs=3, batch_size=64),
    tiny=dict(epochs=1, batch_size=32, max_batches=8),
))
