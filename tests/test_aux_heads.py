"""The auxiliary heads (``spaces.heads``): §3.1.1's heads on both reduction cells combined with the final logits, in
the search network S and the evaluation network E, the losses that read them, DARTS' tower kept as an option, and
retraining / export with the main path only."""

from __future__ import annotations

import math
import random

import onnx
import pytest
import torch

from nasdeploy.search.shared.darts_supernet import SearchNetwork
from nasdeploy.search.shared.objective import classification_loss, soft_target_loss
from nasdeploy.spaces.darts import AuxiliaryHead, DartsSpace
from nasdeploy.spaces.heads import CombinedOutput, DistillHead, ReductionHeads, final_output
from nasdeploy.spaces.ops import op_space_names

SPACE = DartsSpace()


def tiny(**changes):
    return SPACE.default_template("tiny", **changes)  # 5 cells, reductions at 1 and 3


def genotype():
    return SPACE.sample(tiny(), random.Random(0))


def test_cdarts_heads_sit_on_both_reduction_cells_in_e_and_s():
    template = tiny(aux_head="cdarts")
    net = SPACE.build(genotype(), template).train()
    assert net.aux_heads.indices == list(template.reduction_indices) == [1, 3]
    assert net.auxiliary_head is None  # no DARTS tower next to them
    out = net(torch.randn(2, 3, 32, 32))
    assert isinstance(out, CombinedOutput) and out.logits.shape == out.combined.shape == (2, 10)
    assert net.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)  # eval: the main path's logits only
    search = SearchNetwork(template, op_space_names("3"), "xdarts").train()
    assert search.aux_heads.indices == [1, 3]
    s_out = search(torch.randn(2, 3, 32, 32))
    assert isinstance(s_out, CombinedOutput) and s_out.combined.shape == (2, 10)
    assert search.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert all(any(p is q for q in search.weight_parameters()) for p in search.aux_heads.parameters())  # heads are w_S


def test_combined_output_is_the_mean_of_both_heads_and_the_logits():
    """§3.1.1 / CDARTS: equal weights 1/3 for the two reduction heads and the classifier."""
    heads = ReductionHeads([_Layout(8, 4), _Layout(16, 2)], (0, 1), num_classes=2)
    fixed = [torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 6.0]])]
    for head, value in zip(heads.heads, fixed):
        head.forward = lambda x, value=value: value  # a head with a known output
    out = heads(torch.tensor([[0.0, 3.0]]), {0: torch.zeros(1), 1: torch.zeros(1)})
    assert torch.allclose(out.combined, torch.tensor([[1.0, 3.0]]))  # ((3,0) + (0,6) + (0,3)) / 3
    assert torch.equal(out.logits, torch.tensor([[0.0, 3.0]]))


def test_losses_read_the_heads_as_documented():
    """L^S / L^E = CE(logits) + w·CE(combined); Eq. 3.7-3.8 compares the combined outputs (the final outputs)."""
    y = torch.tensor([1])
    out = CombinedOutput(torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 0.0]]))
    ce = lambda z: -math.log(math.exp(z[1]) / (math.exp(z[0]) + math.exp(z[1])))  # noqa: E731
    assert float(classification_loss(out, y, 0.4)) == pytest.approx(ce([0.0, 1.0]) + 0.4 * ce([2.0, 0.0]), rel=1e-6)
    assert float(classification_loss(out, y, 0.0)) == pytest.approx(ce([0.0, 1.0]), rel=1e-6)
    other = CombinedOutput(torch.tensor([[5.0, 5.0]]), torch.tensor([[0.0, 2.0]]))
    expected = soft_target_loss(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]]), 2.0)
    assert torch.allclose(soft_target_loss(final_output(out), final_output(other), 2.0), expected)
    # the DARTS tower is an extra loss term, not part of the output
    tower = (torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 0.0]]))
    assert torch.equal(final_output(tower), tower[0])
    assert float(classification_loss(tower, y, 0.4)) == pytest.approx(ce([0.0, 1.0]) + 0.4 * ce([2.0, 0.0]), rel=1e-6)


def test_darts_head_keeps_the_old_network():
    """aux_head=darts (the template default): DARTS' tower on the second reduction cell, the same state dict keys."""
    template = tiny()
    assert template.aux_head == "darts"
    net = SPACE.build(genotype(), template).train()
    assert isinstance(net.auxiliary_head, AuxiliaryHead) and net.aux_heads is None
    assert not any(k.startswith("aux_heads") for k in net.state_dict())
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert type(net(torch.randn(2, 3, 32, 32))) is tuple and aux.shape == (2, 10)
    assert SearchNetwork(template, op_space_names("3"), "darts").aux_heads is None  # S never had the tower
    plain = SPACE.build(genotype(), tiny(aux_head="none")).train()
    assert plain.auxiliary_head is None and plain.aux_heads is None
    assert plain(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_icdarts_templates_follow_the_aux_head_setting():
    from types import SimpleNamespace

    from nasdeploy.search.icdarts.config import ICDARTSConfig
    from nasdeploy.search.icdarts.run import icdarts_setup

    ctx = SimpleNamespace(template=tiny())
    cdarts = icdarts_setup(ctx, ICDARTSConfig())  # the default: the dissertation's heads
    assert (cdarts.search_template.auxiliary, cdarts.search_template.aux_head) == (True, "cdarts")
    assert (cdarts.eval_template.auxiliary, cdarts.eval_template.aux_head) == (True, "cdarts")
    darts = icdarts_setup(ctx, ICDARTSConfig(aux_head="darts"))
    assert darts.search_template.auxiliary is False and darts.eval_template.aux_head == "darts"
    none = icdarts_setup(ctx, ICDARTSConfig(aux_head="none"))
    assert none.search_template.auxiliary is False and none.eval_template.auxiliary is False


def test_retraining_trains_the_heads_and_export_keeps_the_main_path(tmp_path):
    from nasdeploy.export.onnx_export import export_onnx
    from nasdeploy.spaces.record import ArchitectureRecord
    from nasdeploy.train.config import TrainConfig
    from nasdeploy.train.trainer import inference_params, train_template

    record = ArchitectureRecord(space="darts", template=tiny(aux_head="cdarts", auxiliary=False), arch=genotype(), metrics={})
    template = train_template(record, TrainConfig(), num_classes=10)
    assert (template.auxiliary, template.aux_head) == (True, "cdarts")
    net = SPACE.build(record.arch, template)
    main_only = SPACE.build(record.arch, tiny(auxiliary=False))
    assert inference_params(net) == sum(p.numel() for p in main_only.parameters())
    net.eval()
    path = tmp_path / "net.onnx"
    export_onnx(net, (1, 3, 32, 32), path)
    graph = onnx.load(str(path)).graph
    assert len(graph.output) == 1
    assert sum(node.op_type in ("Gemm", "MatMul") for node in graph.node) == 1  # the classifier; no head's linear


def test_distill_head_adapts_to_small_maps():
    assert DistillHead(8, 10, 16)(torch.randn(2, 8, 16, 16)).shape == (2, 10)
    assert DistillHead(8, 10, 2)(torch.randn(2, 8, 2, 2)).shape == (2, 10)


def test_unknown_aux_head_is_one_clear_error():
    from nasdeploy.errors import NasDeployError
    from nasdeploy.search.base import get_strategy

    with pytest.raises(NasDeployError, match="aux_head"):
        get_strategy("icdarts").settings("tiny", {"aux_head": "tower"})
    with pytest.raises(NasDeployError, match="aux_head=darts"):
        get_strategy("hierarchical-icdarts").settings("tiny", {"aux_head": "cdarts"})
    with pytest.raises(NasDeployError, match="auxiliary head"):
        tiny(aux_head="tower")


class _Layout:
    def __init__(self, c_out: int, out_h: int):
        self.c_out, self.out_h = c_out, out_h
