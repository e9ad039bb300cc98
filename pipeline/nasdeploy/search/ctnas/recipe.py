"""CTNAS' retraining recipe (``train.recipes``), registered with the strategy.

``ctnas`` — Chen et al. (2021) appendix D, "More Evaluation Details in DARTS search space": 600 epochs, batch 96,
SGD momentum 0.9, weight decay 3e-4, lr 0.025 cosine-annealed to a minimum of 0.001, cutout 16, path dropout 0.2,
auxiliary towers 0.4, "following the setting in [29]" (DARTS), whose gradient clip of 5 is used (App. D gives
none). The network is App. D's too: 18 cells (16 normal + 2 reduction at 1/3 and 2/3 of the depth) of 44
initial channels, the deployment template of the paper preset (``deploy_layers``, ``deploy_channels``).

On the MobileNetV3-like space App. D retrains nothing (the searched net inherits the OFA supernet's weights and is
evaluated without fine-tuning); ``CTNAS.retrain_recipe`` names ``senas`` there (a choice: a supernet recipe).
"""

from nasdeploy.train.recipes import Recipe, register

register(Recipe(
    "ctnas", "Chen et al. 2021 App. D (DARTS space): SGD 0.025 cosine to 0.001, batch 96, wd 3e-4, drop-path 0.2, 600 epochs",
    paper=dict(
        epochs=(600, "App. D"), batch_size=(96, "App. D"), optimizer=("sgd", "App. D"), lr=(0.025, "App. D"),
        momentum=(0.9, "App. D"), weight_decay=(3e-4, "App. D"), schedule=("cosine", "App. D"),
        lr_min=(0.001, "App. D: 'a minimum of 0.001'"), cutout=(16, "App. D"), drop_path=(0.2, "App. D"),
        auxiliary_weight=(0.4, "App. D"), grad_clip=(5.0, "choice: not given; DARTS' 5 ([29], which App. D follows)"),
    ),
    cpu=dict(epochs=3, batch_size=64),
    tiny=dict(epochs=1, batch_size=32, max_batches=8),
))
