"""The stem-repeat derivation of operation latency weights (Herron 2023, §4.3, Table 4.6).

"A network previously produced by ICDARTS was selected, and its inference latency was averaged across
twenty runs to obtain a baseline. Then, using the same network, the average latencies of networks with
each operation repeated ten times in the stemming layer were obtained the same way. The baseline was
subtracted ... and the differences normalised to get the latency weights."

Here the reference network is the DARTS V2 genotype (or, if the op space lacks its ops, a fixed sample),
each op is inserted ``copies`` times right after the stem convolution at the stem's shape. Each network's
latency is the median of ``method.repeats`` timed runs, taken over ``method.rounds`` interleaved rounds
(best round kept), rather than one mean of twenty runs: see :func:`measure_interleaved`.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from nasdeploy.hardware import Backend, MeasureMethod, fingerprint, fingerprint_id
from nasdeploy.errors import NasDeployError
from nasdeploy.io import atomic_write_json, read_json
from nasdeploy.latency.predictor import ZERO_COST_OPS, OpWeights
from nasdeploy.latency.profiler import network_input_shape
from nasdeploy.latency.table import default_table_path
from nasdeploy.progress import progress_bar
from nasdeploy.spaces.base import get_space

log = logging.getLogger(__name__)

# DARTS V2 (Liu et al., 2019), one list of (op, input) pairs per intermediate node.
DARTS_V2_NORMAL = [[("sep_conv_3x3", 0), ("sep_conv_3x3", 1)], [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],
                   [("sep_conv_3x3", 1), ("skip_connect", 0)], [("skip_connect", 0), ("dil_conv_3x3", 2)]]
DARTS_V2_REDUCE = [[("max_pool_3x3", 0), ("max_pool_3x3", 1)], [("skip_connect", 2), ("max_pool_3x3", 1)],
                   [("max_pool_3x3", 0), ("skip_connect", 2)], [("skip_connect", 2), ("max_pool_3x3", 1)]]


def reference_genotype(template: Any, op_names: Sequence[str]):
    """DARTS V2 when the template has 4 nodes and its ops are available, else a fixed sample (seed 0)."""
    from nasdeploy.spaces import darts

    v2_ops = {op for node in DARTS_V2_NORMAL + DARTS_V2_REDUCE for op, _ in node}
    if template.nodes == 4 and v2_ops <= set(op_names):
        return darts.Genotype(normal=DARTS_V2_NORMAL, normal_concat=[2, 3, 4, 5], reduce=DARTS_V2_REDUCE, reduce_concat=[2, 3, 4, 5])
    return get_space("darts").sample(template, random.Random(0))


def find_stem(network: nn.Module) -> nn.Module:
    stem = getattr(network, "stem", None)
    if isinstance(stem, nn.Module):
        return stem
    for name, module in network.named_modules():
        if name.split(".")[-1].startswith("stem"):
            return module
    raise ValueError(f"{type(network).__name__} has no stem module to repeat ops after")


def stem_output_shape(network: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    seen: list[tuple[int, ...]] = []
    handle = find_stem(network).register_forward_hook(lambda m, i, out: seen.append(tuple(out.shape)))
    with torch.inference_mode():
        network.eval()(torch.zeros(input_shape))
    handle.remove()
    return seen[0]


class StemRepeat(nn.Module):
    """``network`` with ``ops`` applied in sequence to its stem's output."""

    def __init__(self, network: nn.Module, ops: Sequence[nn.Module]):
        super().__init__()
        self.network = network
        self.repeated = nn.Sequential(*ops)
        find_stem(network).register_forward_hook(lambda m, i, out: self.repeated(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


def weights_path(space: str, template: Any, runtime: str, device: str, method: MeasureMethod, out: Path | None = None) -> Path:
    if out is not None:
        return Path(out)
    table = default_table_path(space, template, runtime, device, method.batch, threads=method.threads)
    return table.with_name(table.stem + "-stem-repeat.json")


def latency_weights(deltas_ms: dict[str, float]) -> dict[str, float]:
    """Normalise the latency increases to weights summing to 1 (negative, i.e. noise, counts as 0)."""
    clipped = {op: max(delta, 0.0) for op, delta in deltas_ms.items()}
    total = sum(clipped.values())
    return {op: (value / total if total > 0 else 0.0) for op, value in clipped.items()}


def measure_interleaved(backend: Backend, networks: dict[str, nn.Module], shape: tuple[int, ...]) -> dict[str, dict]:
    """Time every network once per round (``method.rounds``), in turn; keep each one's best round.

    The dissertation averages twenty runs of each network one after the other; a slow spell of the machine
    then lands on one network's difference alone (a negative Δ for a costly op). Interleaving the rounds
    and keeping each network's lowest round median cancels such spells in the differences.
    """
    best: dict[str, dict] = {}
    rounds = max(1, backend.method.rounds)
    with progress_bar() as bar:
        task = bar.add_task("stem-repeat", total=rounds * len(networks), info="")
        for round_index in range(rounds):
            for name, network in networks.items():
                summary = backend.measure_module(network, shape).summary()
                if name not in best or summary["median_ms"] < best[name]["median_ms"]:
                    best[name] = summary
                bar.update(task, advance=1, info=f"round {round_index + 1}/{rounds} {name}")
    return best


def stem_repeat_weights(space_name: str, template: Any, backend: Backend, path: Path | None = None,
                        op_names: Sequence[str] | None = None, copies: int = 10) -> dict[str, Any]:
    """Table 4.6: baseline network latency, then each op ``copies`` times after the stem; weights = normalised increases."""
    from nasdeploy.spaces.ops import OP_SPACES, build_op

    if space_name != "darts":
        raise NasDeployError(f"--method stem-repeat is defined for the darts space (ICDARTS §4.3), not {space_name!r}; use --method isolated")
    space = get_space(space_name)
    op_names = [op for op in (op_names or OP_SPACES[str(template.op_space)]) if op not in ZERO_COST_OPS]
    genotype = reference_genotype(template, op_names)
    shape = network_input_shape(template, backend.method.batch)
    baseline_net = space.build(genotype, template)
    stem_shape = stem_output_shape(baseline_net, shape)
    channels = stem_shape[1]
    networks = {"baseline": baseline_net}
    networks.update({op: StemRepeat(space.build(genotype, template), [build_op(op, channels, channels, 1) for _ in range(copies)])
                     for op in op_names})
    best = measure_interleaved(backend, networks, shape)
    base_ms = best.pop("baseline")["median_ms"]
    ops = {op: dict(row, latency_ms=row["median_ms"]) for op, row in best.items()}
    weights = latency_weights({op: row["latency_ms"] - base_ms for op, row in ops.items()})
    for op, row in ops.items():
        row.update(delta_ms=row["latency_ms"] - base_ms, per_op_ms=(row["latency_ms"] - base_ms) / copies, weight=weights[op])
    result = {
        "method": "stem-repeat", "space": space_name, "template": template.to_dict(),
        "reference": space.arch_to_json(genotype), "stem_shape": list(stem_shape), "copies": copies,
        "runtime": backend.name, "device": backend.device, "measure": backend.method.to_dict(),
        "fingerprint": fingerprint(backend.device, backend.method.threads), "versions": backend.versions(),
        "baseline_ms": base_ms, "ops": ops,
    }
    if path is not None:
        atomic_write_json(path, result)
        result["path"] = str(path)
        log.info("stem-repeat weights for %s written to %s", fingerprint_id(result["fingerprint"]), path)
    return result


# Herron 2023 Table 4.6, the dissertation's own weights (its GPU, op space 3; "Identity" is skip_connect): the name
# ``table-4.6`` in place of a file gives them, so Table 4.7's setting runs without profiling (preset ``paper-mo``).
TABLE_4_6 = "table-4.6"
TABLE_4_6_WEIGHTS = {"avg_pool_3x3": 0.06, "max_pool_3x3": 0.04, "sep_conv_3x3": 0.24, "sep_conv_5x5": 0.36,
                     "dil_conv_3x3": 0.11, "dil_conv_5x5": 0.15, "skip_connect": 0.04}


def load_stem_repeat_weights(path: Path | str) -> OpWeights:
    """The ``weight`` of every op in a file written by ``stem_repeat_weights`` (or Table 4.6's, for ``table-4.6``),
    as an Algorithm 3 source."""
    if str(path) == TABLE_4_6:
        return OpWeights(TABLE_4_6_WEIGHTS, path="Herron 2023 Table 4.6")
    data = read_json(path, "stem-repeat weights")
    if not isinstance(data, dict) or data.get("method") != "stem-repeat" or not isinstance(data.get("ops"), dict):
        raise NasDeployError(f"{path} is not a stem-repeat weights file (no method 'stem-repeat' and 'ops'); "
                             "write one with 'nasdeploy profile --method stem-repeat'")
    try:
        weights = {op: float(row["weight"]) for op, row in data["ops"].items()}
    except (KeyError, TypeError, ValueError):
        raise NasDeployError(f"stem-repeat weights {path}: every op needs a numeric 'weight'; regenerate the file") from None
    return OpWeights(weights, path=str(path))
