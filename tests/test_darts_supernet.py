"""The one DARTS supernet module: edge order, the shared cell forward, PC-DARTS partial channels and edge
normalisation, and the SE-NAS adapter registry."""

import random

import pytest
import torch

from nasdeploy.errors import NasDeployError
from nasdeploy.search.shared import discretize
from nasdeploy.search.shared.darts_supernet import MixedOp, SearchCell, SearchNetwork
from nasdeploy.search.shared.paths import EdgewisePaths, Path
from nasdeploy.search.shared.space_adapters import ADAPTERS, DARTS_CELLS, DartsSupernet, genotype_of, make_adapter
from nasdeploy.spaces import get_space
from nasdeploy.spaces.blocks import channel_shuffle, half_size_max_pool
from nasdeploy.spaces.darts import (
    DartsCell,
    DartsNetwork,
    all_node_inputs,
    cell_layouts,
    edge_index,
    locate_edge,
    node_edge_ranges,
    num_edges,
)

OPS = ["skip_connect", "max_pool_3x3", "sep_conv_3x3", "dil_conv_3x3"]
GENOTYPE_NODES = [
    [("sep_conv_3x3", 0), ("skip_connect", 1)],
    [("max_pool_3x3", 0), ("dil_conv_3x3", 2)],
    [("sep_conv_3x3", 1), ("skip_connect", 3)],
    [("dil_conv_3x3", 2), ("max_pool_3x3", 4)],
]


def tiny(**overrides):
    return get_space("darts").default_template("tiny", **{"C": 8, "auxiliary": False, **overrides})


def cell_inputs(layout, batch=2):
    return torch.randn(batch, layout.c_pp, layout.h_pp, layout.w_pp), torch.randn(batch, layout.c_p, layout.h, layout.w)


# ---- edge order -------------------------------------------------------------------------------------

@pytest.mark.parametrize("nodes", [1, 2, 4, 5])
def test_edge_order_has_one_owner(nodes):
    ranges = node_edge_ranges(nodes)
    assert [r.start for r in ranges] == [edge_index(j, 0) for j in range(nodes)]
    assert [len(r) for r in ranges] == [j + 2 for j in range(nodes)]
    assert ranges[-1].stop == num_edges(nodes) == sum(j + 2 for j in range(nodes))
    assert [locate_edge(e) for e in range(num_edges(nodes))] == [(j, i) for j in range(nodes) for i in range(j + 2)]
    assert [list(r) for r in all_node_inputs(nodes)] == [list(range(j + 2)) for j in range(nodes)]
    assert discretize.node_edge_ranges is node_edge_ranges and discretize.num_edges is num_edges
    paths = EdgewisePaths(OPS, nodes)
    for layer in range(paths.num_layers):
        cell_type, node, i = paths.locate(layer)
        assert paths.edge(cell_type, node, i) == layer == cell_type * num_edges(nodes) + edge_index(node, i)


# ---- channel shuffle and partial channels -------------------------------------------------------------

@pytest.mark.parametrize("channels, groups", [(8, 4), (16, 4), (12, 3), (8, 1)])
def test_channel_shuffle_is_a_permutation_undone_by_its_inverse(channels, groups):
    x = torch.arange(channels, dtype=torch.float32).view(1, channels, 1, 1).expand(2, channels, 3, 3).contiguous()
    y = channel_shuffle(x, groups)
    order = y[0, :, 0, 0].long().tolist()
    assert sorted(order) == list(range(channels))
    per_group = channels // groups
    assert order == [g * per_group + c for c in range(per_group) for g in range(groups)]  # c·K + g <- g·(C/K) + c
    assert torch.equal(channel_shuffle(y, per_group), x)


def test_partial_channels_one_is_the_plain_mixed_op():
    torch.manual_seed(0)
    op = MixedOp(OPS, [True, False, True, True], 8, 1).eval()
    assert op.partial_channels == 1
    x, w = torch.randn(2, 8, 6, 6), torch.softmax(torch.randn(len(OPS)), 0)
    expected = sum(w[o] * m(x) for o, m in zip([0, 2, 3], op.ops))  # Eq. 3.1 over the present ops
    assert torch.equal(op(x, w), expected)


@pytest.mark.parametrize("stride, size", [(1, 6), (2, 6), (2, 7)])
def test_partial_channels_compute_one_kth_and_bypass_the_rest(stride, size):
    k, c = 4, 16
    torch.manual_seed(0)
    op = MixedOp(OPS, [True] * len(OPS), c, stride, partial_channels=k).eval()
    norms = [m for m in op.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.num_features == c // k for m in norms)  # the ops are built on C/K channels
    x, w = torch.randn(2, c, size, size), torch.softmax(torch.randn(len(OPS)), 0)
    with torch.no_grad():
        y = op(x, w)
    out = -(-size // stride)
    assert y.shape == (2, c, out, out)
    unshuffled = channel_shuffle(y, c // k)
    bypass = x[:, c // k :] if stride == 1 else half_size_max_pool(x[:, c // k :])
    assert unshuffled[:, c // k :].shape[1] == c - c // k  # exactly (1 - 1/K) of the channels bypass
    assert torch.equal(unshuffled[:, c // k :], bypass)
    assert torch.equal(unshuffled[:, : c // k], op.mix(x[:, : c // k], w))


def test_partial_channels_must_divide_the_channels():
    with pytest.raises(NasDeployError, match="partial channels K = 3"):
        MixedOp(OPS, [True] * len(OPS), 8, 1, partial_channels=3)


def test_search_network_with_partial_channels_keeps_shapes_and_trains():
    torch.manual_seed(0)
    net = SearchNetwork(tiny(), OPS + ["none"], partial_channels=4)
    y = net(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 10)
    y.sum().backward()
    assert net.alpha_normal.grad is not None and net.alpha_normal.grad.abs().sum() > 0


# ---- edge normalisation ----------------------------------------------------------------------------------

def test_search_cell_forward_is_unchanged_eq_3_1():
    """The shared cell forward gives exactly what the continuous cell computed before: x_j = Σ_i ō(x_i)."""
    torch.manual_seed(0)
    layout = cell_layouts(tiny())[1]
    cell = SearchCell(layout, 4, OPS, torch.ones(14, len(OPS), dtype=torch.bool)).eval()
    s0, s1 = cell_inputs(layout)
    w = torch.softmax(torch.randn(14, len(OPS)), dim=-1)
    with torch.no_grad():
        states = list(cell.preprocess(s0, s1))
        for edges in node_edge_ranges(4):
            states.append(sum(cell.edges[e](states[i], w[e]) for i, e in enumerate(edges)))
        expected = torch.cat(states[2:], dim=1)
        assert torch.equal(cell(s0, s1, w), expected)
        assert torch.equal(cell(s0, s1, w, torch.ones(14)), expected)  # β weights of one change nothing


def test_edge_normalisation_off_is_the_default_network():
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    default = SearchNetwork(tiny(), OPS)
    torch.manual_seed(0)
    off = SearchNetwork(tiny(), OPS, edge_normalisation=False, partial_channels=1)
    assert list(off.state_dict()) == list(default.state_dict())
    assert [n for n, _ in off.named_parameters()] == [n for n, _ in default.named_parameters()]
    assert off.arch_parameters() == [off.alpha_normal, off.alpha_reduce] and off.edge_weights() == (None, None)
    assert torch.equal(off(x), default(x))


def test_edge_normalisation_weights_nodes_and_gets_gradient():
    torch.manual_seed(0)
    net = SearchNetwork(tiny(), OPS, edge_normalisation=True)
    assert net.beta_normal.shape == net.beta_reduce.shape == (14,)
    assert net.arch_parameters() == [net.alpha_normal, net.alpha_reduce, net.beta_normal, net.beta_reduce]
    assert all(id(p) not in {id(b) for b in (net.beta_normal, net.beta_reduce)} for p in net.weight_parameters())
    with torch.no_grad():
        net.beta_normal.copy_(torch.randn(14))
    weights, _ = net.edge_weights()
    for j, edges in enumerate(node_edge_ranges(4)):  # softmax(β) over node j's incoming edges
        assert torch.allclose(weights[edges.start : edges.stop], torch.softmax(net.beta_normal[edges.start : edges.stop], 0))
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    assert net.beta_normal.grad is not None and net.beta_normal.grad.abs().sum() > 0
    assert net.beta_reduce.grad is not None and net.beta_reduce.grad.abs().sum() > 0


# ---- the three cell kinds agree ---------------------------------------------------------------------------

@pytest.mark.parametrize("cell_index", [0, 1, 2])  # normal, reduction, normal after a reduction
def test_one_hot_search_cell_equals_discrete_cell(cell_index):
    torch.manual_seed(0)
    layout = cell_layouts(tiny())[cell_index]
    search = SearchCell(layout, 4, OPS, torch.ones(14, len(OPS), dtype=torch.bool)).eval()
    discrete = DartsCell(GENOTYPE_NODES, [2, 3, 4, 5], layout).eval()
    weights = torch.zeros(14, len(OPS))
    discrete.preprocess.load_state_dict(search.preprocess.state_dict())
    for j, node in enumerate(GENOTYPE_NODES):
        for slot, (op, i) in enumerate(node):
            e, o = edge_index(j, i), OPS.index(op)
            weights[e, o] = 1.0
            discrete.ops[j][slot].load_state_dict(search.edges[e].ops[o].state_dict())
    s0, s1 = cell_inputs(layout)
    with torch.no_grad():
        assert torch.equal(search(s0, s1, weights), discrete(s0, s1))


@pytest.mark.parametrize("cell", ["two-inputs", "paper"])
def test_senas_path_equals_its_discrete_network(cell):
    """The supernet on a path computes exactly the discrete network of the path's genotype; for the paper's
    cell (§3.5: all edges, none included) the path puts ``none`` on every edge of node 0 of the normal cell,
    so that node outputs zeros and the genotype keeps one ``none`` edge for it."""
    template = tiny(C=4)
    paths = DARTS_CELLS[cell](list(OPS), template.nodes)
    torch.manual_seed(0)
    supernet = DartsSupernet(paths, template, get_space("darts")).eval()
    path = paths.sample(paths.candidates, random.Random(0))
    if cell == "paper":
        path = Path(tuple("none" if layer in (0, 1) else c for layer, c in enumerate(path.choices)))
        assert "none" in path.choices[2:]  # other none edges too (seeded draw)
    genotype = genotype_of(paths, path, template.nodes)
    if cell == "paper":
        assert genotype.normal[0] == [("none", 0)]
        assert all(op != "none" for node in genotype.normal[1:] + genotype.reduce for op, _ in node)
    net = DartsNetwork(genotype, template).eval()
    net.stem.load_state_dict(supernet.stem.state_dict())
    net.classifier.load_state_dict(supernet.classifier.state_dict())
    for c, (cell_module, layout) in enumerate(zip(net.cells, supernet.layouts)):
        cell_module.preprocess.load_state_dict(supernet.preprocess[c].state_dict())
        cell_type = int(layout.reduction)
        for j in range(template.nodes):
            for slot, i in enumerate(paths.node_inputs(path, cell_type, j)):
                cell_module.ops[j][slot].load_state_dict(supernet.op(c, paths.edge(cell_type, j, i), path).state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), supernet(x, path))


# ---- SE-NAS adapters ---------------------------------------------------------------------------------------

def test_senas_adapters_are_registered():
    assert {"mobilenet", "darts"} <= set(ADAPTERS.names())
    with pytest.raises(NasDeployError, match="SE-NAS supports the .* spaces, not 'resnet'; pass --space"):
        make_adapter("resnet", None, None)
