"""FLOPs and parameter counts.

``count_flops`` counts multiply-accumulates (MACs) of one eval-mode forward pass at ``input_shape``
(batch included, so pass batch 1 for per-image FLOPs) with forward hooks on:

* ``nn.Conv2d``: ``out_elements * (c_in / groups) * k_h * k_w`` (stride, dilation and padding act through
  the output size; dilation does not change the per-output cost);
* ``nn.Linear``: ``out_elements * in_features``.

BatchNorm, activations, pooling, additions, concatenations and squeeze-excitation's elementwise product are
not counted (the usual convention of ProxylessNAS/DARTS FLOP tables); convs inside SE blocks are counted.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def _conv_macs(module: nn.Conv2d, output: torch.Tensor) -> int:
    k_h, k_w = module.kernel_size
    return int(output.numel()) * (module.in_channels // module.groups) * k_h * k_w


def _linear_macs(module: nn.Linear, output: torch.Tensor) -> int:
    return int(output.numel()) * module.in_features


def count_flops(module: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-adds of ``module(torch.zeros(input_shape))`` in eval mode (training state restored after)."""
    total = 0

    def hook(m: nn.Module, inputs, output) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += _conv_macs(m, output)
        elif isinstance(m, nn.Linear):
            total += _linear_macs(m, output)

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = module.training
    module.eval()
    try:
        param = next(module.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            module(torch.zeros(*input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
    return total


def count_params(module: nn.Module) -> int:
    """Number of parameters (all of them, trainable or not; buffers excluded)."""
    return sum(p.numel() for p in module.parameters())
