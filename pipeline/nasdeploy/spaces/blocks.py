"""Building blocks written once and shared by the op registry, the DARTS cells and the MobileNet-like layers.

Spatial convention: every stride-2 block maps an ``H`` input to ``ceil(H / 2)`` (``k // 2`` padding for
convolutions and pools; ``FactorizedReduce`` pads odd inputs), so all candidate ops on one edge agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor`` without dropping more than 10% (MobileNetV2)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` channel groups (ShuffleNet; PC-DARTS after each partial-channel mixed op).

    Channel ``g * (C // groups) + c`` moves to ``c * groups + g``; ``channel_shuffle(y, C // groups)`` undoes it.
    """
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def half_size_max_pool(x: torch.Tensor) -> torch.Tensor:
    """2x2 max pool, stride 2, ``ceil(H / 2)`` like every stride-2 block (PC-DARTS' bypass of a reduction edge)."""
    return F.max_pool2d(x, 2, 2, ceil_mode=True)


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The DARTS *zero* op: zeros of the output shape (half size at stride 2)."""

    def __init__(self, c_out: int, stride: int = 1):
        super().__init__()
        self.c_out, self.stride = c_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        if x.shape[1] == self.c_out:
            return x.mul(0.0)
        return x.new_zeros(x.shape[0], self.c_out, x.shape[2], x.shape[3])


class RandomOutput(nn.Module):
    """The *random* op of the dissertation's Table 3.1: uniform random values of the output shape."""

    def __init__(self, c_out: int, stride: int = 1):
        super().__init__()
        self.c_out, self.stride = c_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return torch.rand(x.shape[0], self.c_out, x.shape[2], x.shape[3], dtype=x.dtype, device=x.device)


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv -> BN (DARTS/NASNet "standard convolution")."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class ConvBNAct(nn.Sequential):
    """Conv -> BN -> activation (``act=None`` for none), the MobileNet/EfficientNet unit."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU6, affine: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class FactorizedReduce(nn.Module):
    """DARTS stride-2 identity: two offset 1x1 stride-2 convs, concatenated, then BN.

    Odd inputs are padded by one on the right/bottom before the offset path, so both paths give ``ceil(H/2)``.
    ``stride`` 4 (hierarchical ICDARTS: a skip input across two reduction cells) gives ``ceil(H/4)`` the same way.
    """

    # Weight-free work besides its leading ReLU that a second FactorizedReduce on the same input repeats: the shifted
    # copy of the ReLU output. A graph optimiser computes it once (spaces.ops.shared_work); on ONNX Runtime's NCHWc
    # layout it is a round trip (ReorderOutput, Pad, Slice, ReorderInput), far dearer per element than the ReLU.
    SHARED_WORK = {"merged_shift_kelems": "pad(0, 1, 0, 1)[..., 1:, 1:]"}

    def __init__(self, c_in: int, c_out: int, affine: bool = True, stride: int = 2):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=stride, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=stride, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class DilConv(nn.Sequential):
    """ReLU -> depthwise (dilated) conv -> pointwise conv -> BN (DARTS)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """DARTS separable convolution: the depthwise-pointwise unit applied twice (stride on the first)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            DilConv(c_in, c_in, kernel_size, stride, padding, dilation=1, affine=affine),
            DilConv(c_in, c_out, kernel_size, 1, padding, dilation=1, affine=affine),
        )


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) as in EfficientNet: s = σ(W2 δ(W1 GAP(x))), y = s ⊙ x."""

    def __init__(self, channels: int, reduced: int, act: type[nn.Module] = nn.SiLU):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = act()
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # squeeze: global average pool
        s = torch.sigmoid(self.expand(self.act(self.reduce(s))))  # excitation
        return x * s


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual (Sandler 2018), optionally with SE (EfficientNet MBConv, Tan & Le 2019).

    y = x + project(SE(depthwise_k(expand_e(x)))) when ``stride == 1`` and ``c_in == c_out``, else without ``x``.
    ``expand_ratio == 1`` drops the expansion conv. SE squeezes to ``c_in * se_ratio`` channels.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, expand_ratio: int,
                 se_ratio: float = 0.0, act: type[nn.Module] = nn.ReLU6, affine: bool = True):
        super().__init__()
        hidden = c_in * expand_ratio
        self.use_residual = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(c_in, hidden, 1, act=act, affine=affine))
        layers.append(ConvBNAct(hidden, hidden, kernel_size, stride, groups=hidden, act=act, affine=affine))
        if se_ratio > 0:
            layers.append(SqueezeExcite(hidden, max(1, int(c_in * se_ratio)), act=act))
        layers.append(ConvBNAct(hidden, c_out, 1, act=None, affine=affine))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class FusedMBConv(nn.Module):
    """Fused-MBConv (EfficientNetV2, Tan & Le 2021): a full k×k conv replaces expand + depthwise.

    expand_ratio 1: y = BN-SiLU(conv_k(x)); otherwise y = BN(conv_1x1(BN-SiLU(conv_k(x)))); residual as MBConv.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, expand_ratio: int, affine: bool = True):
        super().__init__()
        self.use_residual = stride == 1 and c_in == c_out
        if expand_ratio == 1:
            self.block = ConvBNAct(c_in, c_out, kernel_size, stride, act=nn.SiLU, affine=affine)
        else:
            hidden = c_in * expand_ratio
            self.block = nn.Sequential(
                ConvBNAct(c_in, hidden, kernel_size, stride, act=nn.SiLU, affine=affine),
                ConvBNAct(hidden, c_out, 1, act=None, affine=affine),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class Classifier(nn.Module):
    """Global average pool + linear layer."""

    def __init__(self, c_in: int, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.pool(x), 1))
