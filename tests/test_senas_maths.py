"""SE-NAS maths on hand-made numbers: Eq. 5-7 scores, shrinking, the merging rule (Fig. 3), sampling under budgets."""

from __future__ import annotations

import dataclasses

import math
import random

import pytest
import torch
from torch import nn

from nasdeploy.errors import NasDeployError
from nasdeploy.search.shared.evolution import EvolutionConfig, evolutionary_search
from nasdeploy.search.shared.paths import (
    Budget, EdgewisePaths, LayerCosts, LayerwisePaths, Path, PathCosts, check_budget, sample_feasible,
)
from nasdeploy.search.senas.scores import (
    merge_child_spaces, operator_scores, selection_confidence, selection_importance, shrink,
)
from nasdeploy.search.shared.supernet import LayerwiseSupernet, SnapshotAverage, sgd_step

ALIVE = [["a", "b"], ["c", "d", "e"], ["f"]]
PATHS = [["a", "c", "f"], ["a", "d", "f"], ["b", "c", "f"], ["b", "e", "f"]]
ACCS = [0.8, 0.6, 0.4, 0.2]


def test_selection_importance_is_mean_accuracy_of_paths_with_the_operator():
    si = selection_importance(PATHS, ACCS, ALIVE)
    assert si[(0, "a")] == pytest.approx(0.7)
    assert si[(0, "b")] == pytest.approx(0.3)
    assert si[(1, "c")] == pytest.approx(0.6)
    assert si[(1, "d")] == pytest.approx(0.6)
    assert si[(1, "e")] == pytest.approx(0.2)
    assert si[(2, "f")] == pytest.approx(0.5)
    # an operator on no sampled path gets SI = 0; a layer a path skips (None) is not counted
    si = selection_importance([["a", None, "f"]], [0.9], ALIVE)
    assert si[(1, "c")] == 0.0 and si[(0, "a")] == pytest.approx(0.9)


def test_selection_confidence_is_population_variance_within_layer():
    si = selection_importance(PATHS, ACCS, ALIVE)
    sc = selection_confidence(si, ALIVE)
    assert sc[(0, "a")] == sc[(0, "b")] == pytest.approx(0.04)  # var(0.7, 0.3), ddof 0
    layer1 = (0.6 - 1.4 / 3) ** 2 * 2 + (0.2 - 1.4 / 3) ** 2
    assert sc[(1, "e")] == pytest.approx(layer1 / 3)
    assert sc[(2, "f")] == 0.0


def test_score_is_mean_normalised_si_over_mean_normalised_sc():
    si = selection_importance(PATHS, ACCS, ALIVE)
    scores = operator_scores(si, ALIVE)
    assert set(scores.s) == {(0, "a"), (0, "b"), (1, "c"), (1, "d"), (1, "e")}  # layer 2 has one op: not in the pool
    mean_si = (0.7 + 0.3 + 0.6 + 0.6 + 0.2) / 5
    sc0, sc1 = 0.04, ((0.6 - 1.4 / 3) ** 2 * 2 + (0.2 - 1.4 / 3) ** 2) / 3
    mean_sc = (2 * sc0 + 3 * sc1) / 5
    assert scores.s[(0, "a")] == pytest.approx((0.7 / mean_si) / (sc0 / mean_sc))
    assert scores.s[(1, "e")] == pytest.approx((0.2 / mean_si) / (sc1 / mean_sc))
    assert scores.s[(0, "b")] == pytest.approx((0.3 / mean_si) / (sc0 / mean_sc))
    assert min(scores.s, key=scores.s.get) == (1, "e")


def test_zero_confidence_layer_is_never_pruned_first():
    alive = [["a", "b"], ["c", "d"]]
    si = {(0, "a"): 0.5, (0, "b"): 0.5, (1, "c"): 0.9, (1, "d"): 0.6}
    scores = operator_scores(si, alive)
    assert math.isinf(scores.s[(0, "a")]) and math.isinf(scores.s[(0, "b")])
    assert min(scores.s, key=scores.s.get) == (1, "d")


def test_shrink_removes_exactly_the_k_lowest():
    scores = operator_scores(selection_importance(PATHS, ACCS, ALIVE), ALIVE).s
    alive, removed = shrink(ALIVE, scores, 2)
    assert removed == [(1, "e"), (0, "b")]
    assert alive == [["a"], ["c", "d"], ["f"]]
    assert ALIVE == [["a", "b"], ["c", "d", "e"], ["f"]]  # input untouched


def test_shrink_keeps_at_least_one_operator_per_layer():
    scores = {(0, "a"): 0.1, (0, "b"): 0.2, (1, "c"): 0.3, (1, "d"): 0.4, (1, "e"): 0.5}
    alive, removed = shrink(ALIVE, scores, 10)
    assert all(len(ops) == 1 for ops in alive)
    assert removed == [(0, "a"), (1, "c"), (1, "d")]
    assert alive == [["b"], ["e"], ["f"]]


def test_shrink_skips_protected_operators():
    scores = {(0, "a"): 0.1, (0, "b"): 0.2, (1, "c"): 0.3, (1, "d"): 0.4, (1, "e"): 0.5}
    alive, removed = shrink(ALIVE, scores, 2, keep=lambda current, op: op == (0, "a"))
    assert removed == [(0, "b"), (1, "c")]


def test_merge_reproduces_fig3_toy_example():
    # 6 layers after shrinking, threshold 6: layer 1 keeps 5 ops (5 x 2 > 6, stays alone),
    # layers 2-4 (2 x 1 x 3 = 6) and layers 5-6 (2 x 3 = 6) become the two child spaces of Fig. 3.
    assert merge_child_spaces([5, 2, 1, 3, 2, 3], 6) == [[1, 2, 3], [4, 5]]


def test_merge_rule_greedy_shallow_to_deep():
    assert merge_child_spaces([7] * 6, 50) == [[0, 1], [2, 3], [4, 5]]
    assert merge_child_spaces([7] * 5, 50) == [[0, 1], [2, 3]]
    assert merge_child_spaces([2, 3, 4], 24) == [[0, 1, 2]]  # whole space under T: one child space
    assert merge_child_spaces([5, 5, 5], 4) == []
    # earlier child spaces are kept; merging only runs over the ungrouped layers between them
    assert merge_child_spaces([2, 2, 2, 2], 4, existing=[[1, 2]]) == [[1, 2]]
    assert merge_child_spaces([1, 2, 2, 1, 2], 4, existing=[[1, 2]]) == [[1, 2], [3, 4]]


def tiny_supernet(groups, layers=3):
    torch.manual_seed(0)
    paths = LayerwisePaths([["x", "y"]] * layers)

    def block(layer, choice):
        return nn.Sequential(nn.Conv2d(4, 4, 3 if choice == "x" else 1, padding=1 if choice == "x" else 0), nn.BatchNorm2d(4), nn.ReLU())

    net = LayerwiseSupernet(paths, nn.Conv2d(3, 4, 1), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)), block)
    net.set_child_spaces(groups)
    return net


def test_partial_models_have_independent_weights():
    net = tiny_supernet([[1, 2]])
    one, two = Path(("x", "x", "y")), Path(("x", "y", "x"))
    net.prepare(one, "cpu")
    net.prepare(two, "cpu")
    copy_one = net.candidates["L1to2|x+y|0|1"]
    copy_two = net.candidates["L1to2|y+x|0|1"]
    assert torch.equal(copy_one[0].weight, net.candidates["shared|0|1|x"][0].weight)  # starts from the shared weights
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    nn.functional.cross_entropy(net(x, one), y).backward()
    sgd_step(dict(net.named_parameters()), {}, 0.1, 0.9, 4e-5)
    after = dict(net.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert any(n.startswith("candidates.L1to2|x+y|") for n in changed)
    assert not any(n.startswith("candidates.L1to2|y+x|") for n in changed)  # the other partial model: bit-identical
    assert not any(n.startswith("candidates.shared|0|1|") or n.startswith("candidates.shared|0|2|") for n in changed)
    assert "candidates.shared|0|0|x.0.weight" in changed  # layer 0 is still shared
    assert copy_two is net.candidates["L1to2|y+x|0|1"]


def test_only_the_sampled_path_stays_on_the_training_device():
    """§3.4: idle partial models leave the device. ``meta`` stands in for the parking place (no GPU in CI):
    the copies the path runs are on the training device, every other copy is parked, and parking is skipped
    when the training device is the parking place itself."""
    net = tiny_supernet([[1, 2]])
    one, two = Path(("x", "x", "y")), Path(("x", "y", "x"))
    net.prepare(one, "cpu")
    net.prepare(two, "cpu")
    assert set(net.copy_devices().values()) == {torch.device("cpu")}  # training on the CPU: nothing to park
    net.idle_device = torch.device("meta")
    net.prepare(two, "cpu")
    devices = net.copy_devices()
    assert {n for n, d in devices.items() if d.type == "cpu"} == {"L1to2|y+x|0|1", "L1to2|y+x|0|2"}
    assert {n for n, d in devices.items() if d.type == "meta"} == {"L1to2|x+y|0|1", "L1to2|x+y|0|2"}
    assert all(p.device.type == "cpu" for n, p in net.named_parameters() if "shared" in n)  # shared stay
    buffers = {name: torch.zeros(1) for name, _ in net.named_parameters()}
    from nasdeploy.search.shared.supernet import follow_params

    follow_params(buffers, dict(net.named_parameters()))
    assert buffers["candidates.L1to2|x+y|0|1.0.weight"].device.type == "meta"
    assert buffers["candidates.L1to2|y+x|0|1.0.weight"].device.type == "cpu"


def test_drop_removed_forgets_partial_models_with_removed_operators():
    net = tiny_supernet([[1, 2]])
    net.prepare(Path(("x", "x", "y")), "cpu")
    net.prepare(Path(("x", "y", "y")), "cpu")
    net.drop_removed([["x", "y"], ["x"], ["x", "y"]])
    assert net.materialised_keys() == [(0, "x+y")]


def test_adding_a_child_space_before_an_existing_one_keeps_its_partial_models():
    net = tiny_supernet([[2, 3]], layers=4)
    path = Path(("x", "y", "y", "x"))
    net.prepare(path, "cpu")
    trained = net.candidates["L2to3|y+x|0|2"]
    net.set_child_spaces([[0, 1], [2, 3]])  # a later stage merges layers 0-1 in front of it
    assert net.op(0, 2, path) is trained
    net.prepare(path, "cpu")
    assert (1, "y+x") in net.materialised_keys() and (0, "x+y") in net.materialised_keys()


def test_snapshot_average_is_mean_of_snapshots():
    net = tiny_supernet([])
    avg = SnapshotAverage()
    p = net.stem.weight
    values = []
    for k in range(3):
        with torch.no_grad():
            p.add_(1.0)
        values.append(p.detach().clone())
        avg.add(net)
    averaged = avg.averaged(net)
    assert torch.allclose(averaged.stem.weight, sum(values) / 3)


def hand_made_costs(paths):
    flops = LayerCosts(3e6, [{"small": 1e6, "mid": 5e6, "big": 10e6} for _ in paths.candidates])
    per_ms = {"small": 0.1, "mid": 0.7, "big": 2.0}
    latency = LayerCosts(0.5, [dict(per_ms) for _ in paths.candidates])
    return PathCosts(paths, flops, latency, lambda path: 0.5 + sum(per_ms[c] for c in path.choices))


def test_constrained_sampling_never_violates_budget():
    paths = LayerwisePaths([["small", "mid", "big"]] * 6)
    costs = hand_made_costs(paths)
    budget = Budget(flops=25e6, latency_ms=4.0)
    rng = random.Random(0)
    sampled = [sample_feasible(paths, paths.candidates, costs, budget, rng, max_tries=5) for _ in range(300)]
    assert all(p is not None and costs.feasible(p, budget) for p in sampled)
    assert any("big" in p.choices for p in sampled)
    forced = [sample_feasible(paths, paths.candidates, costs, budget, rng, forced=(2, "big"), max_tries=2) for _ in range(50)]
    assert all(p.choices[2] == "big" and costs.feasible(p, budget) for p in forced)


def test_evolution_returns_best_feasible_and_never_evaluates_violators():
    paths = LayerwisePaths([["small", "mid", "big"]] * 6)
    costs = hand_made_costs(paths)
    budget = Budget(flops=25e6, latency_ms=4.0)
    rank = {"small": 0, "mid": 1, "big": 2}
    evaluated = []

    def fitness(path):
        evaluated.append(path)
        return sum(rank[c] for c in path.choices) + 0.01 * rank[path.choices[0]]

    class Ops:
        def sample(self, rng):
            return sample_feasible(paths, paths.candidates, costs, budget, rng)

        def mutate(self, path, rng, prob):
            return paths.mutate(path, paths.candidates, rng, prob)

        def crossover(self, a, b, rng):
            return paths.crossover(a, b, rng)

    best, fit, state = evolutionary_search(Ops(), fitness, lambda p: costs.feasible(p, budget),
                                           EvolutionConfig(population=16, generations=8, mutation_prob=0.3), seed=1)
    assert evaluated and all(costs.feasible(p, budget) for p in evaluated)
    assert costs.feasible(best, budget) and fit == max(state.fitness.values())
    assert costs.flops(best) <= 25e6 and costs.latency_ms(best) <= 4.0
    assert len(state.history) == 9


def test_impossible_budget_names_cheapest_value():
    paths = LayerwisePaths([["small", "mid", "big"]] * 6)
    costs = hand_made_costs(paths)
    with pytest.raises(NasDeployError, match=r"smallest has 9\.000M FLOPs"):
        check_budget(costs, paths.candidates, Budget(flops=5e6), "toy")
    with pytest.raises(NasDeployError, match=r"cheapest predicted latency is 1\.1000 ms"):
        check_budget(costs, paths.candidates, Budget(latency_ms=1.0), "toy")
    check_budget(costs, paths.candidates, Budget(flops=9e6, latency_ms=1.1), "toy")  # exactly reachable: fine


def test_edgewise_paths_are_genotypes_with_two_inputs_per_node():
    paths = EdgewisePaths(["sep_conv_3x3", "max_pool_3x3", "skip_connect"], nodes=4)
    assert paths.num_layers == 28
    assert [paths.locate(layer) for layer in (0, 1, 2, 4, 13, 14, 27)] == [
        (0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 2), (0, 3, 4), (1, 0, 0), (1, 3, 4)]
    rng = random.Random(3)
    for _ in range(50):
        path = paths.sample(paths.candidates, rng, forced=(20, "skip_connect"))
        active = paths.active(path)
        assert sum(c is not None for c in active) == 16  # 2 inputs x 4 nodes x 2 cell types
        assert active[20] == "skip_connect"
        for cell_type in range(2):
            for node in range(4):
                a, b = paths.node_inputs(path, cell_type, node)
                assert 0 <= a < b < node + 2


def test_darts_partial_models_are_keyed_by_the_active_sub_architecture():
    """§3.4 on the DARTS space: paths that differ only on edges no node uses run the same partial model."""
    import random

    from nasdeploy.search.shared.space_adapters import make_adapter, search_template_for
    from nasdeploy.spaces.base import get_space

    from types import SimpleNamespace

    template = get_space("darts").default_template("tiny")
    adapter = make_adapter("darts", search_template_for(get_space("darts"), template, 10, 3), template,
                           config=SimpleNamespace(darts_cell="two-inputs"))
    net, paths = adapter.build_supernet(), adapter.paths
    net.set_child_spaces([list(range(paths.num_edges))])  # the whole normal cell is one child space
    path = paths.sample(paths.candidates, random.Random(0))
    active = paths.active(path)
    unused = next(layer for layer in range(paths.num_edges) if active[layer] is None)
    other_op = next(op for op in paths.candidates[unused] if op != path.choices[unused])
    twin = Path(tuple(other_op if layer == unused else c for layer, c in enumerate(path.choices)), path.inputs)
    assert net.partial_key(0, path) == net.partial_key(0, twin)
    net.prepare(path, "cpu")
    assert net.prepare(twin, "cpu") == []  # nothing new: the twin runs the same copy
    assert net.op(0, next(l for l in range(paths.num_edges) if active[l]), twin) is \
        net.op(0, next(l for l in range(paths.num_edges) if active[l]), path)
    assert "-" in net.partial_key(0, path)  # inactive edges are not part of the key
    # a path that changes a used edge is another partial model
    used = next(layer for layer in range(paths.num_edges) if active[layer] is not None)
    changed_op = next(op for op in paths.candidates[used] if op != path.choices[used])
    changed = Path(tuple(changed_op if layer == used else c for layer, c in enumerate(path.choices)), path.inputs)
    assert net.partial_key(0, changed) != net.partial_key(0, path)


def test_paper_darts_cell_has_all_edges_and_none_edges_have_no_weights():
    """§3.5: 14 edges x (op space 3 + none) per cell. A ``none`` edge is off the path: no cost, no weights, "-" in
    its partial model's key (§3.4 keys by the active sub-architecture). In this space ``none`` is the only way an
    edge is inactive, so two paths share a partial model exactly when their child-space edges agree."""
    import random

    from nasdeploy.search.senas.scores import space_size
    from nasdeploy.search.shared.space_adapters import make_adapter, search_template_for
    from nasdeploy.spaces.base import get_space

    template = get_space("darts").default_template("tiny")
    adapter = make_adapter("darts", search_template_for(get_space("darts"), template, 10, 3), template)
    paths = adapter.paths
    assert paths.num_layers == 2 * 14 and all(len(ops) == 8 and ops[-1] == "none" for ops in paths.candidates)
    assert space_size(paths.candidates) == 8 ** 28  # 8^14 per cell type
    assert all(adapter.flops.per_layer[layer]["none"] == 0.0 for layer in range(paths.num_layers))
    net = adapter.build_supernet()
    assert not any(name.endswith("|none") for name in net.candidates)
    net.set_child_spaces([[0, 1, 2]])
    path = paths.sample(paths.candidates, random.Random(0), forced=(1, "none"))
    path = Path(tuple("sep_conv_3x3" if layer in (0, 2) else c for layer, c in enumerate(path.choices)))
    assert net.partial_key(0, path) == "sep_conv_3x3+-+sep_conv_3x3"
    created = net.prepare(path, "cpu")
    assert {name.split("|")[3] for name in created} == {"0", "2"}  # no weights for the none edge
    same_active = Path(path.choices[:3] + tuple(paths.candidates[l][0] for l in range(3, paths.num_layers)))
    assert net.prepare(same_active, "cpu") == []  # other layers are outside the child space: same copy
    assert adapter.flops.of(paths, path) < adapter.flops.of(paths, Path(("sep_conv_3x3",) * 3 + path.choices[3:]))


def test_algorithm_1_stopping_rule():
    from nasdeploy.search.senas.schedule import paper_stop_reason

    wide = [["a", "b", "c"]] * 4  # 81 architectures
    assert paper_stop_reason(wide, 50, [], 2) is None
    assert "81 <= T = 81" in paper_stop_reason(wide, 81, [], 2)
    assert "one operator" in paper_stop_reason([["a"]] * 4, 0, [], 2)
    assert "k = 0" in paper_stop_reason(wide, 50, [], 0)
    assert "could remove no operator" in paper_stop_reason(wide, 50, [{"removed": []}], 2)
    assert paper_stop_reason(wide, 50, [{"removed": [(0, "a")]}], 2) is None


def test_learning_rate_decays_once_over_the_search_or_restarts_per_stage():
    """§4.3 lr·(1 − e/T): with 'run', T is every planned iteration (first stage 4 epochs + 2 stages of 2, 10
    steps each = 80), so stage 1 starts where stage 0 ended; with 'stage' it restarts at lr."""
    from types import SimpleNamespace

    from nasdeploy.search.senas.config import SenasConfig
    from nasdeploy.search.senas.run import SenasRun
    from nasdeploy.search.senas.schedule import linear_lr

    assert linear_lr(0.5, 0, 100) == 0.5 and linear_lr(0.5, 25, 100) == 0.375 and linear_lr(0.5, 120, 100) == 0.0
    run = SenasRun.__new__(SenasRun)
    run.adapter = SimpleNamespace(paths=SimpleNamespace(candidates=[["a", "b", "c"]] * 2), first_stage_epochs=4)
    run.config = SenasConfig(epochs=None, stage_epochs=2, shrink_stages=None, shrink_k=2, lr=0.8)
    assert run.planned_stages() == 2 and run.planned_epochs() == 8  # ⌈(2 + 2) / 2⌉ stages after the first
    assert run.learning_rate(0, 0, 0, 10) == 0.8
    assert run.learning_rate(0, 3, 9, 10) == pytest.approx(0.8 * (1 - 39 / 80))
    assert run.learning_rate(1, 0, 0, 10) == pytest.approx(0.8 * (1 - 40 / 80))
    assert run.learning_rate(2, 1, 9, 10) == pytest.approx(0.8 * (1 - 79 / 80))
    run.config = dataclasses.replace(run.config, lr_schedule="stage")
    assert run.learning_rate(1, 0, 0, 10) == 0.8
    assert run.learning_rate(1, 1, 5, 10) == pytest.approx(0.8 * (1 - 15 / 20))


def test_eq7_reading_x_over_mean_versus_centred_mean_normalisation():
    """Eq. 7 read as x / mean ranks as SI / SC; the centred reading (x - mean) / (max - min) removes the best
    operator of the whole pool on this hand-made example: layer 0 SI 0.3 / 0.5 (SC 0.01), layer 1 SI 0.88 / 0.9
    (SC 0.0001), k = 2."""
    from nasdeploy.search.senas.scores import operator_scores, shrink

    si = {(0, "a"): 0.3, (0, "b"): 0.5, (1, "a"): 0.88, (1, "b"): 0.9}
    alive = [["a", "b"], ["a", "b"]]
    ours = operator_scores(si, alive)
    assert ours.sc[(0, "a")] == pytest.approx(0.01) and ours.sc[(1, "a")] == pytest.approx(0.0001)
    assert sorted(ours.s, key=ours.s.get) == sorted(si, key=lambda o: si[o] / ours.sc[o])  # the SI / SC order
    # centred by hand: SI mean 0.645, range 0.6; SC mean 0.00505, range 0.0099
    centred = {o: ((v - 0.645) / 0.6) / ((ours.sc[o] - 0.00505) / 0.0099) for o, v in si.items()}
    assert centred == pytest.approx({(0, "a"): -1.15, (0, "b"): -0.48333, (1, "a"): -0.78333, (1, "b"): -0.85}, abs=1e-4)
    _, removed_ours = shrink(alive, ours.s, 2)
    _, removed_centred = shrink(alive, centred, 2)
    assert removed_ours == [(0, "a"), (1, "a")]
    assert removed_centred == [(0, "a"), (1, "b")]  # drops SI 0.9, the best operator: not the paper's intent
