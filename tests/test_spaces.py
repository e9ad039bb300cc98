"""Search spaces: op registry shapes, DARTS genotypes/networks, MobileNet-like layers, op enumeration."""

import json
import math
import random

import pytest
import torch

from nasdeploy.errors import NasDeployError
from nasdeploy.spaces import OpInstance, get_space
from nasdeploy.spaces.darts import (
    DartsNetwork,
    Genotype,
    cell_layouts,
    edge_index,
    edge_instance,
    num_edges,
)
from nasdeploy.spaces.mobilenet import LayerwiseArch, choices_for_layer, layer_instance, layer_layouts
from nasdeploy.spaces.ops import OP_SPACES, OPS, build_op, op_space_names


ALL_SPACE_OPS = sorted({op for ops in OP_SPACES.values() for op in ops} | {"none", "random"})

DARTS_V2 = {
    "normal": [[["sep_conv_3x3", 0], ["sep_conv_3x3", 1]], [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]],
               [["sep_conv_3x3", 1], ["skip_connect", 0]], [["skip_connect", 0], ["dil_conv_3x3", 2]]],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [[["max_pool_3x3", 0], ["max_pool_3x3", 1]], [["skip_connect", 2], ["max_pool_3x3", 1]],
               [["max_pool_3x3", 0], ["skip_connect", 2]], [["skip_connect", 2], ["max_pool_3x3", 1]]],
    "reduce_concat": [2, 3, 4, 5],
}


# ---- ops --------------------------------------------------------------------------------------------

def test_op_space_3_is_exactly_darts():
    assert OP_SPACES["3"] == ["skip_connect", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5",
                              "dil_conv_3x3", "dil_conv_5x5"]


def test_op_spaces_share_common_ops_and_exclude_zero_like():
    for key, ops in OP_SPACES.items():
        assert {"skip_connect", "max_pool_3x3", "avg_pool_3x3"} <= set(ops), key
        assert "none" not in ops and "random" not in ops
        assert len(ops) == len(set(ops))
        assert all(op in OPS for op in ops)
    assert set(OP_SPACES) == {"1", "2", "3", "4", "combined"}


def test_op_space_names_unknown_key():
    assert op_space_names(3) == OP_SPACES["3"]
    with pytest.raises(NasDeployError, match="unknown op space"):
        op_space_names("7")


@pytest.mark.parametrize("name", ALL_SPACE_OPS)
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_builds_and_keeps_shape(name, stride):
    op = build_op(name, 16, 16, stride).eval()
    with torch.no_grad():
        y = op(torch.randn(1, 16, 8, 8))
    assert y.shape == (1, 16, 8 // stride, 8 // stride)


@pytest.mark.parametrize("name", ["skip_connect", "max_pool_3x3", "sep_conv_5x5", "relu", "conv_9x1_1x9",
                                  "mbconv_v2_5x5_g4", "fused_mbconv_3x3_g6", "none", "dw_conv_3x3"])
def test_ops_change_channels_and_odd_sizes(name):
    op = build_op(name, 8, 12, 2).eval()
    with torch.no_grad():
        y = op(torch.randn(2, 8, 7, 7))
    assert y.shape == (2, 12, 4, 4)


def test_unknown_op_and_bad_stride():
    with pytest.raises(NasDeployError, match="unknown operation"):
        build_op("conv_11x11", 4, 4, 1)
    with pytest.raises(NasDeployError, match="stride"):
        build_op("conv_3x3", 4, 4, 3)


def test_zero_and_random_ops():
    x = torch.randn(1, 4, 8, 8)
    assert torch.count_nonzero(build_op("none", 4, 4, 2)(x)) == 0
    r = build_op("random", 4, 4, 1)(x)
    assert r.shape == x.shape and 0 <= r.min() and r.max() <= 1


# ---- DARTS ------------------------------------------------------------------------------------------

def test_edge_order():
    assert num_edges(4) == 14
    assert [edge_index(0, 0), edge_index(0, 1), edge_index(1, 0), edge_index(1, 2), edge_index(3, 4)] == [0, 1, 2, 4, 13]
    seen = [edge_index(j, i) for j in range(4) for i in range(j + 2)]
    assert seen == list(range(14))


def test_genotype_json_round_trip():
    space = get_space("darts")
    g = space.arch_from_json(json.loads(json.dumps(DARTS_V2)))
    assert g.normal[3] == [("skip_connect", 0), ("dil_conv_3x3", 2)]
    assert space.arch_to_json(g) == DARTS_V2
    g2 = space.sample(space.default_template("tiny"), random.Random(3))
    assert space.arch_from_json(json.loads(json.dumps(space.arch_to_json(g2)))) == g2


def test_genotype_nodes_may_have_any_number_of_inputs():
    d = json.loads(json.dumps(DARTS_V2))
    d["normal"][0] = [["sep_conv_3x3", 0]]
    d["normal"][3] = [["skip_connect", i] for i in range(5)]
    g = Genotype.from_json(d)
    net = DartsNetwork(g, get_space("darts").default_template("tiny", C=4)).eval()
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["normal"][0].__setitem__(0, ["conv_11x11", 0]), "unknown op"),
    (lambda d: d["normal"][1].__setitem__(0, ["skip_connect", 3]), "inputs 0..2"),
    (lambda d: d["reduce"].__setitem__(2, []), "no inputs"),
    (lambda d: d.__setitem__("normal_concat", [1, 2]), "concat"),
    (lambda d: d.pop("reduce"), "malformed"),
    (lambda d: d["normal"].__setitem__(0, "sep_conv_3x3"), "malformed"),
])
def test_genotype_validation(mutate, message):
    d = json.loads(json.dumps(DARTS_V2))
    mutate(d)
    with pytest.raises(NasDeployError, match=message):
        get_space("darts").arch_from_json(d)


def test_templates_and_presets():
    space = get_space("darts")
    assert (space.default_template("paper").C, space.default_template("paper").layers) == (36, 20)
    t = space.default_template("tiny", C=4, op_space=2)
    assert (t.C, t.layers, t.op_space) == (4, 5, "2")
    assert space.template_from_dict(t.to_dict()) == t
    with pytest.raises(NasDeployError):
        space.default_template("huge")
    with pytest.raises(NasDeployError):
        space.default_template("tiny", colour=1)


def test_cell_layouts_follow_darts():
    t = get_space("darts").default_template("cpu")
    layouts = cell_layouts(t)
    assert [l.index for l in layouts if l.reduction] == [2, 5]
    assert [l.reduction_prev for l in layouts] == [False, False, False, True, False, False, True, False]
    assert (layouts[0].c_pp, layouts[0].c_p, layouts[0].c) == (48, 48, 16)
    assert (layouts[2].c, layouts[2].h, layouts[3].h, layouts[3].h_pp) == (32, 32, 16, 32)
    assert (layouts[-1].c, layouts[-1].h) == (64, 8)
    inst = edge_instance(layouts[2], 0, "sep_conv_3x3")
    assert (inst.stride, inst.h, inst.c_in) == (2, 32, 32)
    inst = edge_instance(layouts[2], 2, "sep_conv_3x3")
    assert (inst.stride, inst.h) == (1, 16)  # intermediate nodes of a reduction cell are already halved


def test_darts_network_shapes_and_auxiliary():
    space = get_space("darts")
    t = space.default_template("tiny", C=4, drop_path=0.2)
    net = space.build(space.arch_from_json(DARTS_V2), t)
    x = torch.randn(2, 3, 32, 32)
    net.train()
    logits, aux = net(x)
    assert logits.shape == aux.shape == (2, 10)
    net.drop_path_prob = 0.0
    net.eval()
    with torch.no_grad():
        out = net(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    net_no_aux = space.build(space.arch_from_json(DARTS_V2), space.default_template("tiny", C=4, auxiliary=False)).train()
    assert net_no_aux(x).shape == (2, 10)


def test_darts_network_cpu_preset_eval():
    space = get_space("darts")
    t = space.default_template("cpu")
    net = space.build(space.arch_from_json(DARTS_V2), t).eval()
    assert len(net.cells) == 8 and net.auxiliary_head is not None
    with torch.no_grad():
        assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_darts_network_other_input_sizes():
    space = get_space("darts")
    t = space.default_template("tiny", C=4, input_size=28, in_channels=1, num_classes=7, op_space="combined")
    net = space.build(space.sample(t, random.Random(1)), t)
    logits, aux = net.train()(torch.randn(2, 1, 28, 28))
    assert logits.shape == aux.shape == (2, 7)


# ---- MobileNet-like ---------------------------------------------------------------------------------

def test_mobilenet_paper_layers():
    space = get_space("mobilenet")
    t = space.default_template("paper")
    layouts = layer_layouts(t)
    assert len(layouts) == 21
    firsts = [0, 4, 8, 12, 16, 20]
    for l in layouts:
        assert ("identity" in l.choices) == (l.index not in firsts)
        assert len(l.choices) == (6 if l.index in firsts else 7)
    assert math.prod(len(l.choices) for l in layouts) == 6 ** 6 * 7 ** 15
    assert choices_for_layer(t, 0) == ["mb3_e3", "mb3_e6", "mb5_e3", "mb5_e6", "mb7_e3", "mb7_e6"]
    assert [(l.c_in, l.c_out, l.h, l.stride) for l in layouts[:2]] == [(24, 32, 112, 2), (32, 32, 56, 1)]
    assert (layouts[-1].c_in, layouts[-1].c_out, layouts[-1].h) == (256, 432, 7)
    assert layer_instance(layouts[0], "mb5_e6") == OpInstance("mb5_e6", 24, 32, 112, 112, 2)
    fixed = {i.op: i for i in space.arch_op_instances(LayerwiseArch(["mb3_e3"] * 21), t)}
    assert fixed["first_conv"] == OpInstance("first_conv", 3, 40, 224, 224, 2)
    assert fixed["feature_mix"] == OpInstance("feature_mix", 432, 1728, 7, 7, 1)
    assert fixed["classifier"] == OpInstance("classifier", 1728, 1000, 7, 7, 1)


@pytest.mark.parametrize("preset, overrides, layers", [("tiny", {}, 10), ("cpu", {}, 9), ("cpu", {"depth": None}, 21)])
def test_mobilenet_network_shapes(preset, overrides, layers):
    space = get_space("mobilenet")
    t = space.default_template(preset, **overrides)
    arch = space.sample(t, random.Random(0))
    assert len(arch.choices) == layers
    net = space.build(arch, t)
    assert net.train()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_mobilenet_arch_json_and_validation():
    space = get_space("mobilenet")
    t = space.default_template("cpu")
    arch = space.sample(t, random.Random(5))
    assert space.arch_from_json(json.loads(json.dumps(space.arch_to_json(arch)))) == arch
    assert space.template_from_dict(json.loads(json.dumps(t.to_dict()))) == t
    with pytest.raises(NasDeployError, match="unknown choice"):
        space.arch_from_json({"layers": ["mb9_e9"]})
    with pytest.raises(NasDeployError, match="layers"):
        space.arch_from_json({"choices": []})
    with pytest.raises(NasDeployError, match="cannot be 'identity'"):
        space.build(LayerwiseArch(["identity"] + ["mb3_e3"] * 8), t)
    with pytest.raises(NasDeployError, match="has 3 layers, the template has 9"):
        space.build(LayerwiseArch(["mb3_e3"] * 3), t)


def test_identity_layers_cost_nothing():
    space = get_space("mobilenet")
    t = space.default_template("cpu")
    choices = [l.choices[-1] for l in layer_layouts(t)]  # identity wherever allowed
    instances = space.arch_op_instances(LayerwiseArch(choices), t)
    assert all(i.op != "identity" for i in instances)
    assert len(instances) == 4 + 6


# ---- op enumeration (both spaces) -------------------------------------------------------------------

@pytest.mark.parametrize("space_name, preset", [("darts", "cpu"), ("darts", "paper"), ("mobilenet", "cpu"),
                                                ("mobilenet", "paper")])
def test_op_instances_cover_every_architecture(space_name, preset):
    space = get_space(space_name)
    t = space.default_template(preset)
    instances = space.op_instances(t)
    keys = {i.key() for i in instances}
    assert len(keys) == len(instances)  # distinct
    rng = random.Random(0)
    for _ in range(20):
        arch = space.sample(t, rng)
        assert {i.key() for i in space.arch_op_instances(arch, t)} <= keys


def test_darts_op_instances_fixed_parts():
    space = get_space("darts")
    t = space.default_template("cpu")
    ops = {i.op for i in space.op_instances(t)}
    assert {"stem", "preprocess_1x1", "factorized_reduce", "classifier"} <= ops
    assert "auxiliary" not in ops and "none" not in ops
    arch = space.arch_from_json(DARTS_V2)
    instances = space.arch_op_instances(arch, t)
    assert sum(i.op == "stem" for i in instances) == 1
    assert sum(i.op == "factorized_reduce" for i in instances) == 2
    assert sum(i.op == "preprocess_1x1" for i in instances) == 2 * 8 - 2
    assert len(instances) == 1 + 2 * 8 + 8 * 8 + 1
    assert OpInstance("classifier", 256, 10, 8, 8, 1) in instances


def _shape_of(inst: OpInstance):
    if inst.op == "classifier":
        return (1, inst.c_out)
    return (1, inst.c_out, math.ceil(inst.h / inst.stride), math.ceil(inst.w / inst.stride))


@pytest.mark.parametrize("space_name", ["darts", "mobilenet"])
def test_build_op_matches_instance(space_name):
    space = get_space(space_name)
    t = space.default_template("tiny")
    instances = space.op_instances(t)
    # one per (op, stride) plus the fixed parts, to keep the test fast
    instances = list({(i.op, i.stride): i for i in instances}.values())
    for inst in instances:
        module = space.build_op(inst).eval()
        with torch.no_grad():
            y = module(torch.randn(1, inst.c_in, inst.h, inst.w))
        assert tuple(y.shape) == _shape_of(inst), inst.key()
