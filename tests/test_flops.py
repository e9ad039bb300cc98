"""FLOP (multiply-accumulate) and parameter counts, checked against hand computation."""

import random

from torch import nn

from nasdeploy.spaces import get_space
from nasdeploy.spaces.blocks import SepConv
from nasdeploy.spaces.flops import count_flops, count_params



def test_conv_flops():
    assert count_flops(nn.Conv2d(3, 16, 3, padding=1), (1, 3, 32, 32)) == 16 * 3 * 9 * 32 * 32


def test_strided_dilated_grouped_conv_flops():
    conv = nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=8, bias=False)
    assert count_flops(conv, (1, 8, 16, 16)) == 8 * 1 * 9 * 8 * 8
    grouped = nn.Conv2d(8, 16, 3, padding=1, groups=4)
    assert count_flops(grouped, (1, 8, 10, 10)) == 16 * 2 * 9 * 10 * 10


def test_linear_flops_and_batch():
    assert count_flops(nn.Linear(20, 10), (1, 20)) == 200
    assert count_flops(nn.Linear(20, 10), (3, 20)) == 600


def test_sep_conv_flops():
    c, h = 16, 8
    dw = c * 9 * h * h
    pw = c * c * h * h
    assert count_flops(SepConv(c, c, 3, 1, 1), (1, c, h, h)) == 2 * (dw + pw)
    # stride 2: both halves run at 4x4
    assert count_flops(SepConv(c, c, 3, 2, 1), (1, c, h, h)) == 2 * (c * 9 * 16 + c * c * 16)


def test_bn_pool_activation_not_counted():
    net = nn.Sequential(nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1))
    assert count_flops(net, (1, 4, 8, 8)) == 0


def test_network_is_sum_of_parts():
    parts = [nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
             nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 16, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
             nn.Linear(16, 10)]
    net = nn.Sequential(*parts)
    expected = 8 * 3 * 9 * 16 * 16 + 8 * 9 * 16 * 16 + 16 * 8 * 16 * 16 + 16 * 10
    assert count_flops(net, (1, 3, 32, 32)) == expected


def test_mobilenet_network_flops_equal_sum_of_instances():
    space = get_space("mobilenet")
    t = space.default_template("tiny")
    arch = space.sample(t, random.Random(2))
    total = count_flops(space.build(arch, t), (1, 3, t.input_size, t.input_size))
    parts = sum(count_flops(space.build_op(i), (1, i.c_in, i.h, i.w)) for i in space.arch_op_instances(arch, t))
    assert total == parts > 0


def test_darts_network_flops_equal_sum_of_instances():
    space = get_space("darts")
    t = space.default_template("tiny", C=4, auxiliary=False)
    arch = space.sample(t, random.Random(4))
    total = count_flops(space.build(arch, t), (1, 3, 32, 32))
    parts = sum(count_flops(space.build_op(i), (1, i.c_in, i.h, i.w)) for i in space.arch_op_instances(arch, t))
    assert total == parts > 0


def test_flops_restore_training_mode():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).train()
    count_flops(net, (1, 3, 4, 4))
    assert net.training


def test_params():
    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.Linear(16, 10))
    assert count_params(net) == sum(p.numel() for p in net.parameters()) == 16 * 27 + 16 + 32 + 170
    space = get_space("mobilenet")
    model = space.build(space.sample(space.default_template("tiny"), random.Random(0)), space.default_template("tiny"))
    assert count_params(model) == sum(p.numel() for p in model.parameters()) > 0
