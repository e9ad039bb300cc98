"""CTNAS: the GCN and NAC by hand and on a toy ordering, REINFORCE, Algorithms 2 and 3, budget masking, and a
tiny end-to-end search (real supernet on digits, real LUT predictor on a hand-made table, resume)."""

from __future__ import annotations

import random

import pytest
import torch

from nasdeploy.io import read_json
from nasdeploy.latency.predictor import predict_latency_ms
from nasdeploy.latency.trust import TablePolicy
from nasdeploy.search.base import SearchRequest, get_strategy
from nasdeploy.search.ctnas import nac as nac_lib
from nasdeploy.search.ctnas.choices import CHOICES, Limit
from nasdeploy.search.ctnas.controller import Controller, Reinforce
from nasdeploy.search.ctnas.curriculum import comparison_scores, explore, sample_pairs, update_baseline
from nasdeploy.spaces.base import get_space
from nasdeploy.spaces.graph import ArchGraph, GraphPart, dag
from nasdeploy.spaces.record import ArchitectureRecord
from test_senas_search import hand_made_table  # the FLOPs-priced table


# ------------------------------------------------------------------------------------------ graphs
def test_darts_genotype_encodes_both_cells_as_dags():
    from nasdeploy.spaces.darts import Genotype

    space = get_space("darts")
    template = space.default_template("tiny")
    cell = [[("sep_conv_3x3", 0), ("skip_connect", 1)], [("max_pool_3x3", 0), ("sep_conv_3x3", 2)],
            [("none", 0)], [("dil_conv_3x3", 3), ("avg_pool_3x3", 4)]]
    genotype = Genotype(normal=cell, normal_concat=[2, 3, 4, 5], reduce=cell[:2] + [[("skip_connect", 1)], cell[3]],
                        reduce_concat=[2, 3, 4, 5])
    graph = space.arch_graph(genotype, template)
    normal = graph.parts[0]
    # inputs, 2 ops + add, 2 ops + add, add (its only edge is none), 2 ops + add, concat
    assert normal.node_ops == ("c_k-2", "c_k-1", "sep_conv_3x3", "skip_connect", "add", "max_pool_3x3", "sep_conv_3x3",
                               "add", "add", "dil_conv_3x3", "avg_pool_3x3", "add", "concat")
    a = normal.adjacency_tensor()
    assert a[2, 0] == 1 and a[3, 1] == 1 and a[4, 2] == 1 and a[4, 3] == 1  # node 0 = sep(c_k-2) + skip(c_k-1)
    assert a[6, 4] == 1  # node 1's sep_conv reads node 0 (state 2)
    assert a[9, 7] == 1 and a[10, 8] == 1  # node 3 reads states 3 and 4: the add nodes of nodes 1 and 2
    assert a[12, [4, 7, 8, 11]].tolist() == [1, 1, 1, 1] 
    assert a.sum() == 4 + 4 + 0 + 4 + 4  # per node: input -> op and op -> add (node 2: none, nothing), concat reads 4
    x = normal.features()
    assert x.sum(1).tolist() == [1.0] * normal.size and x[2, normal.vocabulary.index("sep_conv_3x3")] == 1
    assert graph.parts[1].node_ops[8:10] == ("skip_connect", "add")  # the reduction cell is its own part


def test_mobilenet_choices_encode_as_a_chain_with_positions():
    from nasdeploy.spaces.mobilenet import LayerwiseArch, layer_layouts

    space = get_space("mobilenet")
    template = space.default_template("cpu")
    choices = [layout.choices[0] for layout in layer_layouts(template)]
    choices[-2] = "identity"  # the second layer of the fifth stage
    part = space.arch_graph(LayerwiseArch(choices), template).parts[0]
    n = len(choices) + 2
    assert part.node_ops == ("input", *choices, "output")
    assert torch.equal(part.adjacency_tensor(), torch.diag(torch.ones(n - 1), -1))  # node k reads node k-1
    x = part.features()
    assert x.shape == (n, len(part.vocabulary) + n)
    assert x[:, len(part.vocabulary):].equal(torch.eye(n))  # position one-hot


# ------------------------------------------------------------------------------------------ GCN / NAC by hand
def three_node_graph() -> ArchGraph:
    """0 -> 1 -> 2, ops a, b, a."""
    return ArchGraph((GraphPart(dag(3, [(0, 1), (1, 2)]), ("a", "b", "a"), ("a", "b")),))


def test_gcn_forward_on_a_three_node_graph_by_hand():
    gcn = nac_lib.GCN(2, 2)
    with torch.no_grad():
        gcn.layer0.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -2.0]]))
        gcn.layer1.weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 1.0]]))
    t = nac_lib.stack_graphs([three_node_graph()])
    z = gcn(t["features"], t["adjacency"], t["mask"])
    # Â = A + I = [[1,0,0],[1,1,0],[0,1,1]]; X W0 = [[1,0],[0,-2],[1,0]]; Â X W0 = [[1,0],[1,-2],[1,-2]];
    # ReLU -> [[1,0],[1,0],[1,0]]; · W1 -> [1,-1] per row; Â · -> [[1,-1],[2,-2],[2,-2]]; mean -> [5/3, -5/3]
    assert z.shape == (1, 1, 2)
    assert z[0, 0].tolist() == pytest.approx([5 / 3, -5 / 3])


def test_padding_does_not_change_the_embedding_and_eq6_by_hand():
    small = three_node_graph()
    big = ArchGraph((GraphPart(dag(5, [(0, 1), (1, 2), (2, 3), (3, 4)]), ("a", "b", "a", "b", "a"), ("a", "b")),))
    nac = nac_lib.NAC((2,), hidden=2)
    with torch.no_grad():
        nac.gcn.layer0.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -2.0]]))
        nac.gcn.layer1.weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 1.0]]))
        nac.fc.weight.copy_(torch.tensor([[0.3, 0.0, -0.3, 0.0]]))
        nac.fc.bias.zero_()
    bank = nac_lib.GraphBank([small, big], ["small", "big"])  # small is padded to 5 nodes
    z_small = nac.embed(bank.batch([0]))
    assert z_small[0].tolist() == pytest.approx([5 / 3, -5 / 3])
    z_big = nac.embed(bank.batch([1]))[0]
    p = nac(bank.batch([0]), bank.batch([1]))  # Eq. 6: σ(0.3·(z_small[0] - z_big[0]))
    assert float(p.detach()) == pytest.approx(float(torch.sigmoid(0.3 * (5 / 3 - z_big[0].detach()))))


def params_of(space, genotype, template) -> int:
    return sum(p.numel() for p in space.build(genotype, template).parameters())


def test_nac_learns_more_parameters_is_better_and_flips_when_swapped():
    """Toy ordering (the issue's test): label 1{params(α) ≥ params(α')} on random DARTS genotypes."""
    torch.manual_seed(0)
    space = get_space("darts")
    template = space.default_template("tiny", auxiliary=False)
    rng = random.Random(0)
    genotypes = [space.sample(template, rng) for _ in range(150)]
    values = [params_of(space, g, template) for g in genotypes]
    bank = nac_lib.GraphBank([space.arch_graph(g, template) for g in genotypes], list(range(len(genotypes))))
    train, held = list(range(110)), list(range(110, 150))
    pairs, labels = nac_lib.all_pairs(train, [values[i] for i in train])
    nac = nac_lib.NAC(bank.graphs[0].feature_dims, hidden=32)
    optimizer = nac_lib.make_optimizer(nac, lr=3e-3, weight_decay=5e-4)  # the paper's Adam, a larger step for a toy
    gen = torch.Generator().manual_seed(0)
    for _ in range(250):
        at = torch.randint(len(pairs), (256,), generator=gen)
        nac_lib.train_step(nac, optimizer, bank, pairs[at], labels[at])
    result = nac_lib.pairwise_accuracy(nac, bank, held, [values[i] for i in held])
    assert result["pairs"] > 700 and result["accuracy"] >= 0.90
    held_pairs = torch.tensor([(a, b) for a in held for b in held if a < b])
    forward = nac_lib.compare(nac, bank, held_pairs) >= 0.5
    backward = nac_lib.compare(nac, bank, held_pairs.flip(1)) >= 0.5
    assert (forward != backward).float().mean() >= 0.90


def test_kendall_tau_eq12():
    assert nac_lib.kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0
    assert nac_lib.kendall_tau([1, 2, 3], [30, 20, 10]) == -1.0
    assert nac_lib.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx((5 - 1) / 6)


# ------------------------------------------------------------------------------------------ controller
def test_reinforce_raises_the_mean_toy_reward():
    torch.manual_seed(0)
    controller = Controller([3, 4, 3, 5, 2, 3], hidden=16)
    reinforce = Reinforce(controller, lr=0.02, entropy_weight=5e-4, reward_decay=0.9)
    gen = torch.Generator().manual_seed(0)
    everything = lambda t, decisions: [True] * controller.step_sizes[t]  # noqa: E731
    rewards = []
    for _ in range(60):
        samples = [controller.sample(everything, gen) for _ in range(8)]
        toy = [sum(d == 0 for d in s.decisions) / len(s.decisions) for s in samples]  # share of first options
        rewards.append(sum(toy) / len(toy))
        reinforce.step(samples, toy)
    first, last = sum(rewards[:3]) / 3, sum(rewards[-10:]) / 10  # uniform policy: E = mean(1/size) = 0.32
    assert first < 0.45 and last > 0.8


def test_controller_never_samples_a_masked_option():
    controller = Controller([4, 4], hidden=8)
    mask = lambda t, decisions: [o == (3 - t) for o in range(4)]  # noqa: E731
    for seed in range(5):
        sample = controller.sample(mask, torch.Generator().manual_seed(seed))
        assert sample.decisions == [3, 2] and float(sample.entropy.detach()) == 0.0 and sample.masked_options == 6


# ------------------------------------------------------------------------------------------ Algorithms 2 and 3
def test_algorithm2_picks_the_nac_best_on_a_hand_made_matrix():
    p = torch.tensor([[0.5, 0.2, 0.6, 0.1],
                      [0.8, 0.5, 0.9, 0.4],
                      [0.4, 0.1, 0.5, 0.3],
                      [0.9, 0.6, 0.7, 0.5]])
    # s = mean of off-diagonal row entries: [0.3, 0.7, 0.2667, 0.7333]
    assert comparison_scores(p).tolist() == pytest.approx([0.3, 0.7, 0.8 / 3, 2.2 / 3])
    assert update_baseline(p) == 3
    tie = torch.tensor([[0.5, 0.6, 0.6], [0.4, 0.5, 0.8], [0.4, 0.2, 0.5]])  # s_0 = s_1 = 0.6: s_i ≥ ŝ keeps the last
    assert update_baseline(tie) == 1


def test_algorithm3_keeps_the_k_most_confident_pairs():
    pairs = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 0], [1, 3]])
    p = torch.tensor([0.95, 0.45, 0.2, 0.55, 0.7])  # confidence 0.45, 0.05, 0.30, 0.05, 0.20
    found = explore(pairs, p, 3)
    assert found.pairs.tolist() == [[0, 1], [2, 3], [1, 3]]
    assert found.labels.tolist() == [1, 0, 1]
    assert found.confidence.tolist() == pytest.approx([0.45, 0.30, 0.20])
    assert len(explore(pairs, p, 10).labels) == 5


def test_sampled_pairs_are_distinct_and_off_the_diagonal():
    pairs = sample_pairs(6, 100, torch.Generator().manual_seed(0))
    assert len(pairs) == 30 and len({tuple(p) for p in pairs.tolist()}) == 30 and all(a != b for a, b in pairs.tolist())


# ------------------------------------------------------------------------------------------ budgets
@pytest.fixture(scope="module")
def darts_lut(tmp_path_factory):
    space = get_space("darts")
    template = space.default_template("tiny")
    path = tmp_path_factory.mktemp("lut") / "darts-tiny.json"
    return path, hand_made_table("darts", template, path), space, template


@pytest.mark.parametrize("space_name", ["darts", "mobilenet"])
def test_no_sampled_architecture_is_over_the_budget(space_name, tmp_path):
    from nasdeploy.search.shared.space_adapters import make_adapter, search_template_for

    space = get_space(space_name)
    template = space.default_template("tiny")
    table = hand_made_table(space_name, template, tmp_path / "t.json")
    from nasdeploy.search.ctnas.run import ADAPTER_OPTIONS

    adapter = make_adapter(space_name, search_template_for(space, template, 10, 3), template, table, ADAPTER_OPTIONS)
    free = CHOICES.get(space_name)(adapter, [])
    rng = random.Random(0)
    latencies = sorted(predict_latency_ms(table, adapter.to_arch(free.to_path(free.sample_uniform(rng, False))), space, template)
                       for _ in range(40))
    budget = latencies[2]  # tighter than 90 % of random architectures
    flops_budget = free.cheapest(Limit("flops", adapter.flops, 0.0)) * 1.3
    seq = CHOICES.get(space_name)(adapter, [Limit("latency_ms", adapter.latency, budget), Limit("flops", adapter.flops, flops_budget)])
    controller = Controller(seq.step_sizes, hidden=8)
    gen = torch.Generator().manual_seed(0)
    masked = 0
    for _ in range(60):
        sample = controller.sample(seq.mask, gen)
        masked += sample.masked_options
        arch = adapter.to_arch(seq.to_path(sample.decisions))
        assert predict_latency_ms(table, arch, space, template) <= budget * (1 + 1e-9)
        assert seq.cost(seq.limits[1], sample.decisions) <= flops_budget
    assert masked > 0  # the mask did the work: unmasked draws break this budget 90 % of the time
    path = seq.to_path(seq.sample_uniform(rng, masked=True))  # additive latency table == the predictor
    assert adapter.latency.of(adapter.paths, path) == pytest.approx(predict_latency_ms(table, adapter.to_arch(path), space, template))


# ------------------------------------------------------------------------------------------ end to end (tiny)
def request(out, table, budget, resume=False, **options):
    # hand-made table (prices by FLOPs, not by this machine): spot check skipped on purpose
    return SearchRequest(space="darts", out_dir=out, table_path=table, latency_budget_ms=budget, preset="tiny",
                         options=options, table_policy=TablePolicy(trust=True), resume=resume)


class Killed(Exception):
    pass


def test_tiny_search_end_to_end_is_within_budget_and_resumes_to_the_same_result(darts_lut, tmp_path, monkeypatch):
    from nasdeploy.search.ctnas.run import CTNASRun
    from nasdeploy.search.ctnas.labels import SupernetLabels

    path, table, space, template = darts_lut
    rng = random.Random(1)
    budget = sorted(predict_latency_ms(table, space.sample(template, rng), space, template) for _ in range(20))[5]
    result = get_strategy("ctnas").run(request(tmp_path / "a", path, budget))
    record = ArchitectureRecord.load(result.arch_path)
    m = record.metrics
    assert m["predicted_latency_ms"] <= budget and m["over_budget_redraws"] == 0
    assert m["controller_samples"] == 6 * 2 and m["explore_samples"] == 6 * 4
    log = read_json(result.log_path)
    assert len(log["labels"]["values"]) == 8 and log["nac_heldout_final"]["architectures"] == 2
    assert all(u["predicted_latency_ms"] is None or u["predicted_latency_ms"] <= budget for u in log["baseline_updates"])
    assert log["baseline_updates"][-1]["final"]

    # killed once in the supernet phase (after epoch 1) and once in the controller phase (after iteration 3,
    # checkpoint at 2), resumed each time: the same labels, the same architecture
    train_epoch, iteration = SupernetLabels.train_epoch, CTNASRun.iteration

    def kill_epoch(self, state, bar, task):
        if state.epochs_done == 1:
            raise Killed
        return train_epoch(self, state, bar, task)

    def kill_iteration(self, state, *args):
        if state.iteration == 3:
            raise Killed
        return iteration(self, state, *args)

    monkeypatch.setattr(SupernetLabels, "train_epoch", kill_epoch)
    with pytest.raises(Killed):
        get_strategy("ctnas").run(request(tmp_path / "b", path, budget))
    monkeypatch.setattr(SupernetLabels, "train_epoch", train_epoch)
    monkeypatch.setattr(CTNASRun, "iteration", kill_iteration)
    with pytest.raises(Killed):
        get_strategy("ctnas").run(request(tmp_path / "b", path, budget, resume=True))
    monkeypatch.setattr(CTNASRun, "iteration", iteration)
    resumed = get_strategy("ctnas").run(request(tmp_path / "b", path, budget, resume=True))
    again = read_json(resumed.log_path)
    assert again["labels"]["values"] == log["labels"]["values"]
    assert again["result"]["arch"] == log["result"]["arch"]
    assert again["history"] == log["history"] and again["baseline_updates"] == log["baseline_updates"]


def test_tiny_mobilenet_search_meets_latency_and_flops_budgets(tmp_path):
    from nasdeploy.search.shared.space_adapters import make_adapter, search_template_for

    space = get_space("mobilenet")
    template = space.default_template("tiny")
    table = hand_made_table("mobilenet", template, tmp_path / "t.json")
    adapter = make_adapter("mobilenet", search_template_for(space, template, 10, 3), template, table)
    free = CHOICES.get("mobilenet")(adapter, [])
    rng = random.Random(0)
    latencies = sorted(adapter.latency.of(adapter.paths, free.to_path(free.sample_uniform(rng, False))) for _ in range(20))
    flops_budget = free.cheapest(Limit("flops", adapter.flops, 0.0)) * 1.5
    request = SearchRequest(space="mobilenet", out_dir=tmp_path / "out", table_path=tmp_path / "t.json",
                            latency_budget_ms=latencies[5], flops_budget=flops_budget, preset="tiny",
                            table_policy=TablePolicy(trust=True))
    record = ArchitectureRecord.load(get_strategy("ctnas").run(request).arch_path)
    assert record.metrics["predicted_latency_ms"] <= latencies[5]
    assert record.metrics["flops"] <= flops_budget
    assert record.metrics["masked_options"] > 0 and record.metrics["over_budget_redraws"] == 0


def test_bad_settings_are_one_line_errors():
    from nasdeploy.errors import NasDeployError

    strategy = get_strategy("ctnas")
    with pytest.raises(NasDeployError, match="labelled_archs must be >= 4"):
        strategy.settings("cpu", {"labelled_archs": "2"})
    with pytest.raises(NasDeployError, match="label_epochs .* must be <= supernet_epochs"):
        strategy.settings("tiny", {"label_epochs": "5"})
    with pytest.raises(NasDeployError, match="ctnas has no setting 'epochs'"):
        strategy.settings("cpu", {"epochs": "3"})
