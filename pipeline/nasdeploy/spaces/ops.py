"""The operations registry: name -> ``(c_in, c_out, stride, affine) -> nn.Module``, and the op spaces.

Op spaces 1-4 are Table 4.1 of the ICDARTS dissertation (Herron 2023) and "combined" is Table 4.2;
``skip_connect``/``max_pool_3x3``/``avg_pool_3x3`` (marked * there) are in every space. ``none`` and
``random`` (Table 3.1 zero configurations) are registered but listed in no space: the search adds them.

Every op maps ``(N, c_in, H, W)`` to ``(N, c_out, ceil(H / stride), ceil(W / stride))``. Shape adaption
where an op has no stride or channel change of its own:

* identity at stride 2 is ``FactorizedReduce`` (DARTS); at stride 1 with ``c_in != c_out`` a 1x1 ReLUConvBN.
* elementwise ops (``relu``, ``leaky_relu``, ``sigmoid``, ``tanh``, ``batchnorm``) are preceded by the same
  adapter (``FactorizedReduce`` at stride 2, 1x1 ReLUConvBN on a channel change), then apply the op.
* pools are followed by nothing when channels match, else by a 1x1 ReLUConvBN.
* ``dw_conv_k`` is a depthwise conv, followed by a 1x1 conv only when ``c_out != c_in``.

Basic ``conv_k`` is a bare convolution; ``min_conv_k`` is conv + BN (the dissertation, §4.1: "a convolution
followed by a batch norm"); ``std_conv_k`` is ReLU-conv-BN.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

from torch import nn

from nasdeploy.errors import NasDeployError
from nasdeploy.registry import Registry
from nasdeploy.spaces.blocks import (
    ConvBNAct,
    DilConv,
    FactorizedReduce,
    FusedMBConv,
    Identity,
    InvertedResidual,
    RandomOutput,
    ReLUConvBN,
    SepConv,
    Zero,
)

OpConstructor = Callable[[int, int, int, bool], nn.Module]
OPS: Registry[OpConstructor] = Registry("operation")


def build_op(name: str, c_in: int, c_out: int, stride: int, affine: bool = True) -> nn.Module:
    """The module of op ``name`` mapping ``c_in`` to ``c_out`` channels at ``stride`` (1 or 2)."""
    if stride not in (1, 2):
        raise NasDeployError(f"op {name!r} asked for stride {stride}; ops support stride 1 or 2")
    return OPS.get(name)(c_in, c_out, stride, affine)


def shape_adapter(c_in: int, c_out: int, stride: int, affine: bool) -> nn.Module | None:
    """What an op without its own stride/channel change is preceded by (``None`` when nothing is needed)."""
    if stride == 2:
        return FactorizedReduce(c_in, c_out, affine=affine)
    if c_in != c_out:
        return ReLUConvBN(c_in, c_out, 1, 1, 0, affine=affine)
    return None


def _then(first: nn.Module | None, op: nn.Module) -> nn.Module:
    return op if first is None else nn.Sequential(first, op)


# ---- zero-like (Table 3.1) and common ops (Table 4.1 *) ---------------------------------------------

OPS.register("none")(lambda c_in, c_out, stride, affine: Zero(c_out, stride))
OPS.register("random")(lambda c_in, c_out, stride, affine: RandomOutput(c_out, stride))


@OPS.register("skip_connect")
def skip_connect(c_in: int, c_out: int, stride: int, affine: bool) -> nn.Module:
    adapter = shape_adapter(c_in, c_out, stride, affine)
    return Identity() if adapter is None else adapter


def _pool(kind: str, k: int) -> OpConstructor:
    def make(c_in: int, c_out: int, stride: int, affine: bool) -> nn.Module:
        if kind == "max":
            pool: nn.Module = nn.MaxPool2d(k, stride=stride, padding=k // 2)
        else:
            pool = nn.AvgPool2d(k, stride=stride, padding=k // 2, count_include_pad=False)
        return pool if c_in == c_out else nn.Sequential(pool, ReLUConvBN(c_in, c_out, 1, 1, 0, affine=affine))

    return make


for _k in (3, 5):
    OPS.register(f"max_pool_{_k}x{_k}")(_pool("max", _k))
    OPS.register(f"avg_pool_{_k}x{_k}")(_pool("avg", _k))


# ---- op space 1: basic operations -------------------------------------------------------------------

def _conv(k: int) -> OpConstructor:
    return lambda c_in, c_out, stride, affine: nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)


def _dw_conv(k: int) -> OpConstructor:
    def make(c_in: int, c_out: int, stride: int, affine: bool) -> nn.Module:
        dw = nn.Conv2d(c_in, c_in, k, stride=stride, padding=k // 2, groups=c_in, bias=False)
        return dw if c_in == c_out else nn.Sequential(dw, nn.Conv2d(c_in, c_out, 1, bias=False))

    return make


def _elementwise(make_op: Callable[[int, bool], nn.Module]) -> OpConstructor:
    return lambda c_in, c_out, stride, affine: _then(shape_adapter(c_in, c_out, stride, affine), make_op(c_out, affine))


for _k in (3, 5):
    OPS.register(f"conv_{_k}x{_k}")(_conv(_k))
    OPS.register(f"dw_conv_{_k}x{_k}")(_dw_conv(_k))
OPS.register("relu")(_elementwise(lambda c, affine: nn.ReLU(inplace=False)))
OPS.register("leaky_relu")(_elementwise(lambda c, affine: nn.LeakyReLU(0.2, inplace=False)))
OPS.register("sigmoid")(_elementwise(lambda c, affine: nn.Sigmoid()))
OPS.register("tanh")(_elementwise(lambda c, affine: nn.Tanh()))
OPS.register("batchnorm")(_elementwise(lambda c, affine: nn.BatchNorm2d(c, affine=affine)))


# ---- op space 2: simple (NASNet-style) operations ---------------------------------------------------

def _min_conv(k: int) -> OpConstructor:
    return lambda c_in, c_out, stride, affine: ConvBNAct(c_in, c_out, k, stride, act=None, affine=affine)


def _std_conv(k: int) -> OpConstructor:
    return lambda c_in, c_out, stride, affine: ReLUConvBN(c_in, c_out, k, stride, k // 2, affine=affine)


def _conv_nx1_1xn(n: int) -> OpConstructor:
    """ReLU -> N×1 conv -> 1×N conv -> BN; the stride is split over the two convs (NASNet/DARTS)."""

    def make(c_in: int, c_out: int, stride: int, affine: bool) -> nn.Module:
        return nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, (n, 1), stride=(stride, 1), padding=(n // 2, 0), bias=False),
            nn.Conv2d(c_out, c_out, (1, n), stride=(1, stride), padding=(0, n // 2), bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    return make


for _k in (3, 5):
    OPS.register(f"min_conv_{_k}x{_k}")(_min_conv(_k))
    OPS.register(f"std_conv_{_k}x{_k}")(_std_conv(_k))
OPS.register("conv_7x1_1x7")(_conv_nx1_1xn(7))
OPS.register("conv_9x1_1x9")(_conv_nx1_1xn(9))


# ---- op space 3: DARTS operations -------------------------------------------------------------------

for _k in (3, 5):
    OPS.register(f"sep_conv_{_k}x{_k}")(
        lambda c_in, c_out, stride, affine, k=_k: SepConv(c_in, c_out, k, stride, k // 2, affine=affine))
    OPS.register(f"dil_conv_{_k}x{_k}")(
        lambda c_in, c_out, stride, affine, k=_k: DilConv(c_in, c_out, k, stride, k - 1, dilation=2, affine=affine))


# ---- op space 4 / combined: MBConv blocks -----------------------------------------------------------

def _mbconv(k: int, expand: int) -> OpConstructor:
    """MobileNetV2 inverted residual (ReLU6, no SE)."""
    return lambda c_in, c_out, stride, affine: InvertedResidual(c_in, c_out, k, stride, expand, affine=affine)


def _mbconv_v2(k: int, expand: int) -> OpConstructor:
    """EfficientNet MBConv: SiLU and squeeze-excitation at ratio 0.25."""
    return lambda c_in, c_out, stride, affine: InvertedResidual(
        c_in, c_out, k, stride, expand, se_ratio=0.25, act=nn.SiLU, affine=affine)


def _fused_mbconv(k: int, expand: int) -> OpConstructor:
    return lambda c_in, c_out, stride, affine: FusedMBConv(c_in, c_out, k, stride, expand, affine=affine)


for _k in (3, 5):
    OPS.register(f"mbconv_{_k}x{_k}")(_mbconv(_k, 6))
    for _g in (1, 4, 6):
        OPS.register(f"mbconv_v2_{_k}x{_k}_g{_g}")(_mbconv_v2(_k, _g))
for _g in (1, 4, 6):
    OPS.register(f"fused_mbconv_3x3_g{_g}")(_fused_mbconv(3, _g))

# MobileNet-like layer candidates (ProxylessNAS / SE-NAS Table 2): mb{k}_e{e}.
for _k in (3, 5, 7):
    for _e in (3, 6):
        OPS.register(f"mb{_k}_e{_e}")(_mbconv(_k, _e))


# ---- op spaces ---------------------------------------------------------------------------------------

COMMON_OPS = ["skip_connect", "max_pool_3x3", "avg_pool_3x3"]

OP_SPACES: dict[str, list[str]] = {
    "1": COMMON_OPS + ["conv_3x3", "conv_5x5", "dw_conv_3x3", "dw_conv_5x5", "relu", "leaky_relu", "sigmoid", "tanh",
                       "batchnorm"],
    "2": COMMON_OPS + ["min_conv_3x3", "min_conv_5x5", "std_conv_3x3", "std_conv_5x5", "conv_7x1_1x7", "conv_9x1_1x9"],
    "3": COMMON_OPS + ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"],
    "4": COMMON_OPS + ["mbconv_3x3", "mbconv_v2_3x3_g1", "fused_mbconv_3x3_g1"],
    "combined": [
        "relu", "leaky_relu", "sigmoid", "tanh", "batchnorm", "skip_connect",
        "conv_3x3", "conv_5x5", "max_pool_3x3", "max_pool_5x5", "avg_pool_3x3", "avg_pool_5x5",
        "min_conv_3x3", "min_conv_5x5", "std_conv_3x3", "std_conv_5x5", "conv_7x1_1x7", "conv_9x1_1x9",
        "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
        "mbconv_3x3", "mbconv_5x5",
        "mbconv_v2_3x3_g1", "mbconv_v2_3x3_g4", "mbconv_v2_3x3_g6",
        "mbconv_v2_5x5_g1", "mbconv_v2_5x5_g4", "mbconv_v2_5x5_g6",
        "fused_mbconv_3x3_g1", "fused_mbconv_3x3_g4", "fused_mbconv_3x3_g6",
    ],
}


def op_space_names(key: str | int) -> list[str]:
    """The candidate ops of op space ``key`` ("1".."4" or "combined"), without ``none``/``random``."""
    try:
        return list(OP_SPACES[str(key)])
    except KeyError:
        raise NasDeployError(f"unknown op space {key!r}; choose one of: {', '.join(OP_SPACES)}") from None


# ---- work a graph optimiser computes once ----------------------------------------------------------------

# the overhead-model features (latency.overhead) for repeated work, thousands of input elements each: the weight-free
# start of an op (a ReLU, a whole pool) and the shifted copy a factorized reduce makes of its input
MERGED_WORK_FEATURES = ("merged_kelems", "merged_shift_kelems")


@lru_cache(maxsize=None)
def leading_work(name: str, c_in: int, c_out: int, stride: int) -> str | None:
    """A signature of what op ``name`` computes first without weights: the op itself (``name|c_in>c_out|s<stride>``)
    when it has no weights at all, else its first layer (``ReLU()``); None when it starts with a weighted layer or
    computes nothing (identity).

    Two edges of a cell that read one tensor and share a signature start with the same computation: DARTS'
    ReLU-led ops (sep/dil conv, ReLU-conv-BN, factorized reduce) the same ReLU, two equal pools the whole op. A graph pass that eliminates common subexpressions computes it once: torch.onnx's TorchScript
    exporter and ONNX Runtime's optimiser both do (checked: two MaxPools, two AvgPools and two ReLUs on one input
    became one of each), eager PyTorch does not. The op timed alone pays for it every time; the overhead model
    (``latency.overhead``) learns what the merging saves from the fit networks.
    """
    module = build_op(name, c_in, c_out, stride)
    leaf = module
    while next(leaf.children(), None) is not None:
        leaf = next(leaf.children())
    if isinstance(leaf, (Identity, nn.Identity)) or _has_state(leaf):
        return None
    if not _has_state(module):
        return f"{name}|{c_in}>{c_out}|s{stride}"
    return f"{type(leaf).__name__}({_without_inplace(leaf)})"


@lru_cache(maxsize=None)
def shared_work(name: str, c_in: int, c_out: int, stride: int) -> tuple[tuple[str, str], ...]:
    """``(feature, signature)`` of each piece of weight-free work op ``name`` does on its input that another op on the
    same input with the same signature repeats: its leading work (``leading_work``, feature ``merged_kelems``), then
    what its module declares in ``SHARED_WORK`` (a factorized reduce's shifted copy, ``merged_shift_kelems``). Each
    feature has its own coefficient in the overhead model: a ReLU and a layout round trip cost differently per element.
    """
    first = leading_work(name, c_in, c_out, stride)
    if first is None:
        return ()
    module = build_op(name, c_in, c_out, stride)
    # each piece once, even if the op held two modules declaring it: a second copy would read as the edge repeating itself
    declared = dict.fromkeys(part for sub in module.modules() for part in getattr(type(sub), "SHARED_WORK", {}).items())
    return (("merged_kelems", first),) + tuple(declared)


def _has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _without_inplace(module: nn.Module) -> str:
    return ", ".join(part for part in module.extra_repr().split(", ") if not part.startswith("inplace"))
