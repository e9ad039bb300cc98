"""Work a runtime merges: ops on one tensor that start alike (``spaces.ops.leading_work``, ``shared_work``), counted
per DARTS genotype (``merged_work``) and fitted as overhead-model features (``latency.overhead``)."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from nasdeploy.latency.overhead import apply_overhead, fit_overhead
from nasdeploy.latency.predictor import predict_latency_ms
from nasdeploy.spaces.base import get_space
from nasdeploy.spaces.darts import Genotype, genotype_layouts
from nasdeploy.spaces.blocks import FactorizedReduce
from nasdeploy.spaces.ops import leading_work, shared_work

from test_predictor import hand_table


def test_leading_work_names_the_shared_start():
    assert leading_work("sep_conv_3x3", 16, 16, 1) == "ReLU()"
    assert leading_work("dil_conv_5x5", 16, 16, 2) == "ReLU()"
    assert leading_work("skip_connect", 16, 16, 2) == "ReLU()"  # FactorizedReduce starts with a ReLU
    assert leading_work("max_pool_3x3", 16, 16, 1) == "max_pool_3x3|16>16|s1"  # the whole pool
    assert leading_work("avg_pool_3x3", 16, 16, 2) != leading_work("avg_pool_3x3", 16, 16, 1)
    assert leading_work("skip_connect", 16, 16, 1) is None  # identity: nothing to compute
    assert leading_work("conv_3x3", 16, 16, 1) is None  # starts with weights


def test_shared_work_adds_the_factorized_reduce_shift():
    shift = FactorizedReduce.SHARED_WORK["merged_shift_kelems"]
    assert shared_work("skip_connect", 16, 16, 2) == (("merged_kelems", "ReLU()"), ("merged_shift_kelems", shift))
    assert shared_work("sep_conv_3x3", 16, 16, 1) == (("merged_kelems", "ReLU()"),)  # a ReLU, no shifted copy
    assert shared_work("max_pool_3x3", 16, 16, 2) == (("merged_kelems", "max_pool_3x3|16>16|s2"),)
    assert shared_work("skip_connect", 16, 16, 1) == ()  # identity


def optimised_op_counts(module: nn.Module, shape: tuple[int, ...], tmp_path) -> Counter:
    """Node types of ``module`` exported to ONNX and optimised by ONNX Runtime (all levels, one thread)."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from nasdeploy.hardware.onnx_file import export_module

    path = export_module(module.eval(), shape, tmp_path / "m.onnx")
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.intra_op_num_threads = 1
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Counter(node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)


def test_onnx_path_shifts_once_for_two_factorized_reduces(tmp_path):
    """Two factorized reduces on one input share the shifted copy (Pad, Slice and, in ONNX Runtime's NCHWc layout, the
    reorder back into it) as well as the ReLU: the graph has as many of those nodes as with one."""
    class Reduces(nn.Module):
        def __init__(self, n: int):
            super().__init__()
            self.ops = nn.ModuleList([FactorizedReduce(16, 16) for _ in range(n)])

        def forward(self, x):
            return sum(op(x) for op in self.ops)

    one, two = (optimised_op_counts(Reduces(n), (1, 16, 16, 16), tmp_path) for n in (1, 2))
    assert one["Pad"] == 1 and one["Slice"] >= 1
    for op in ("Pad", "Slice", "ReorderInput", "Relu"):
        assert two[op] == one[op], (op, one, two)
    assert two["Conv"] == 2 * one["Conv"]  # the weighted work is not shared


def test_onnx_path_computes_repeated_work_once(tmp_path):
    """The premise of the feature, on the real exporter and runtime: two equal pools and two ReLUs on one input
    become one each (the TorchScript exporter's common-subexpression pass already merges them; ONNX Runtime's would)."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from nasdeploy.hardware.onnx_file import export_module

    class TwoOfEach(nn.Module):
        def __init__(self):
            super().__init__()
            self.pools = nn.ModuleList([nn.MaxPool2d(3, 1, 1), nn.MaxPool2d(3, 1, 1)])
            self.convs = nn.ModuleList([nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)) for _ in range(2)])

        def forward(self, x):
            return sum(p(x) for p in self.pools) + sum(c(x) for c in self.convs)

    path = export_module(TwoOfEach().eval(), (1, 4, 8, 8), tmp_path / "m.onnx")
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for graph in (path, tmp_path / "optimized.onnx"):
        ops = Counter(node.op_type for node in onnx.load(str(graph)).graph.node)
        assert ops["MaxPool"] == 1 and ops["Relu"] == 1 and ops["Conv"] == 2, (graph.name, ops)


def test_darts_merged_work_by_hand():
    darts = get_space("darts")
    template = darts.default_template("tiny")
    # normal cell: dil_conv after sep_conv on input 0 (one ReLU repeated), max_pool twice on input 1 (whole pool),
    # avg_pool on 1 after max_pool on 1 (different work: nothing), skip_connect (identity: nothing)
    normal = [[("sep_conv_3x3", 0), ("max_pool_3x3", 1)], [("dil_conv_3x3", 0), ("max_pool_3x3", 1)],
              [("avg_pool_3x3", 1), ("skip_connect", 0)], [("skip_connect", 0), ("sep_conv_5x5", 2)]]
    # reduction cell: nothing repeated on one input
    reduce = [[("max_pool_3x3", 0), ("sep_conv_3x3", 1)], [("avg_pool_3x3", 0), ("max_pool_3x3", 1)],
              [("sep_conv_3x3", 2), ("dil_conv_3x3", 3)], [("max_pool_3x3", 2), ("avg_pool_3x3", 4)]]
    genotype = Genotype(normal=normal, normal_concat=[2, 3, 4, 5], reduce=reduce, reduce_concat=[2, 3, 4, 5])
    normal_cells = [layout for layout in genotype_layouts(genotype, template) if not layout.reduction]
    expected = sum(2 * layout.c * layout.h * layout.w for layout in normal_cells) / 1000.0
    assert expected > 0
    assert darts.merged_work(genotype, template) == pytest.approx({"merged_kelems": expected, "merged_shift_kelems": 0.0})
    # the reduction cell with its ReLU-led skip (a FactorizedReduce) after a sep_conv on input 1 repeats that ReLU
    reduce_skip = [[("sep_conv_3x3", 1), ("max_pool_3x3", 0)], [("skip_connect", 1), ("avg_pool_3x3", 0)]] + reduce[2:]
    with_skip = Genotype(normal=normal, normal_concat=[2, 3, 4, 5], reduce=reduce_skip, reduce_concat=[2, 3, 4, 5])
    reductions = [layout for layout in genotype_layouts(with_skip, template) if layout.reduction]
    assert darts.merged_work(with_skip, template)["merged_kelems"] == pytest.approx(
        expected + sum(layout.c * layout.h * layout.w for layout in reductions) / 1000.0)
    assert get_space("mobilenet").merged_work(None, None) == {}


def test_darts_merged_shift_by_hand():
    """Two skips (factorized reduces) on input 0 of the reduction cell repeat the ReLU and the shifted copy; a skip
    next to a sep_conv on input 1 repeats only the ReLU."""
    darts = get_space("darts")
    template = darts.default_template("tiny")
    normal = [[("max_pool_3x3", 0), ("avg_pool_3x3", 1)], [("sep_conv_3x3", 0), ("skip_connect", 1)],
              [("avg_pool_3x3", 2), ("max_pool_3x3", 3)], [("sep_conv_3x3", 4), ("skip_connect", 2)]]
    reduce = [[("skip_connect", 0), ("sep_conv_3x3", 1)], [("skip_connect", 0), ("skip_connect", 1)],
              [("sep_conv_3x3", 2), ("dil_conv_3x3", 3)], [("max_pool_3x3", 2), ("avg_pool_3x3", 4)]]
    genotype = Genotype(normal=normal, normal_concat=[2, 3, 4, 5], reduce=reduce, reduce_concat=[2, 3, 4, 5])
    reductions = [layout for layout in genotype_layouts(genotype, template) if layout.reduction]
    elements = sum(layout.c * layout.h * layout.w for layout in reductions) / 1000.0
    assert elements > 0
    # input 0: one repeated ReLU and one repeated shift; input 1: skip after sep_conv, one repeated ReLU
    assert darts.merged_work(genotype, template) == pytest.approx(
        {"merged_kelems": 2 * elements, "merged_shift_kelems": elements})


def test_fit_keeps_merged_work_only_when_it_predicts():
    rng = np.random.default_rng(0)
    sums, merged = rng.uniform(0.5, 2.0, 30), rng.uniform(0.0, 300.0, 30)
    noise = rng.normal(0.0, 0.01, 30)
    planted = [{"sum_ms": s, "n_ops": 80, "merged_kelems": m, "measured_ms": 0.2 + 1.1 * s - 0.0004 * m + e}
               for s, m, e in zip(sums, merged, noise)]
    model = fit_overhead(planted)
    assert model["fitted_features"] == ["sum_ms", "merged_kelems"]
    assert model["coef"]["merged_kelems"] == pytest.approx(-0.0004, rel=0.1)
    assert model["coef"]["sum_ms"] == pytest.approx(1.1, rel=0.05)
    # the same networks on a runtime that merges nothing: the feature only adds variance and is dropped
    unmerged = [{**s, "measured_ms": 0.2 + 1.1 * s["sum_ms"] + e} for s, e in zip(planted, noise)]
    model = fit_overhead(unmerged)
    assert model["fitted_features"] == ["sum_ms"] and model["coef"]["merged_kelems"] == 0.0


def test_fit_gives_each_kind_of_merged_work_its_own_coefficient():
    """A planted shift saving (dearer per element than a ReLU) is recovered with its own coefficient next to the ReLU's;
    a kind that explains nothing gets no weight that matters."""
    rng = np.random.default_rng(1)
    sums, relu, shift = rng.uniform(0.5, 2.0, 40), rng.uniform(0.0, 300.0, 40), rng.choice([0.0, 49.0, 98.0], 40)
    noise = rng.normal(0.0, 0.005, 40)
    samples = [{"sum_ms": s, "n_ops": 80, "merged_kelems": r, "merged_shift_kelems": h,
                "measured_ms": 0.2 + 1.1 * s - 0.0003 * r - 0.0015 * h + e} for s, r, h, e in zip(sums, relu, shift, noise)]
    model = fit_overhead(samples)
    assert model["fitted_features"] == ["sum_ms", "merged_kelems", "merged_shift_kelems"]
    assert model["coef"]["merged_kelems"] == pytest.approx(-0.0003, rel=0.15)
    assert model["coef"]["merged_shift_kelems"] == pytest.approx(-0.0015, rel=0.1)
    without_shift = [{**s, "measured_ms": 0.2 + 1.1 * s["sum_ms"] - 0.0003 * s["merged_kelems"] + e}
                     for s, e in zip(samples, noise)]
    model = fit_overhead(without_shift)
    assert "merged_kelems" in model["fitted_features"]
    # the leave-one-out rule drops it or (in 27 of 100 seeds here) keeps it by chance at a negligible weight
    assert abs(model["coef"]["merged_shift_kelems"]) < 1e-4


def test_prediction_applies_merged_work():
    darts = get_space("darts")
    template = darts.default_template("tiny")
    table = hand_table("darts", template, lambda inst: 0.1)
    arch = darts.sample(template, random.Random(5))
    merged = darts.merged_work(arch, template)["merged_kelems"]
    assert merged > 0  # a sampled tiny genotype repeats some work (seed 5)
    coef = {"intercept": 0.3, "sum_ms": 1.0, "n_ops": 0.0}
    table.overhead = {"coef": coef}
    without = predict_latency_ms(table, arch)
    table.overhead = {"coef": {**coef, "merged_kelems": -0.001}}
    assert predict_latency_ms(table, arch) == pytest.approx(without - 0.001 * merged)
    # a genotype with two skips (factorized reduces) on one reduction-cell input: the shift term applies too
    reduce = [[("skip_connect", 0), ("skip_connect", 0)]] + [list(node) for node in arch.reduce[1:]]
    shifted = Genotype(normal=arch.normal, normal_concat=arch.normal_concat, reduce=reduce, reduce_concat=arch.reduce_concat)
    work = darts.merged_work(shifted, template)
    assert work["merged_shift_kelems"] > 0
    table.overhead = {"coef": coef}
    plain = predict_latency_ms(table, shifted)
    table.overhead = {"coef": {**coef, "merged_kelems": -0.001, "merged_shift_kelems": -0.002}}
    assert predict_latency_ms(table, shifted) == pytest.approx(
        plain - 0.001 * work["merged_kelems"] - 0.002 * work["merged_shift_kelems"])
    assert apply_overhead(coef, 2.0, 10) == pytest.approx(2.3)  # a table fitted before the feature
