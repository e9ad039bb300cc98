"""Architectures as graphs (CTNAS §4.1, Fig. 3): a DAG whose nodes are operations and whose edges carry data.

``SearchSpace.arch_graph(arch, template)`` returns an ``ArchGraph``: one or more ``GraphPart``s (DARTS: the
normal and the reduction cell; MobileNet: the chain of layers), each an adjacency matrix ``A`` and a node
attribute matrix ``X`` whose rows are one-hot over the part's vocabulary (its ``node_ops``). ``A[i, j] = 1``
when node ``i`` reads node ``j``'s output, so the row of ``A X`` for a node sums its inputs' attributes.
A graph comparator (``search.ctnas.nac``) embeds every part with the same GCN and concatenates the parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class GraphPart:
    adjacency: tuple[tuple[int, ...], ...]  # [n, n], A[i][j] = 1: node i reads node j
    node_ops: tuple[str, ...]  # the operation (vocabulary entry) of each node
    vocabulary: tuple[str, ...]  # the one-hot columns of X, the same for every architecture of a template
    extra: tuple[tuple[float, ...], ...] = ()  # optional further node attributes appended to X (e.g. position)

    @property
    def size(self) -> int:
        return len(self.node_ops)

    def features(self) -> torch.Tensor:
        """X: [n, |vocabulary| (+ extra)], one-hot op per node."""
        x = torch.zeros(self.size, len(self.vocabulary))
        for row, op in enumerate(self.node_ops):
            x[row, self.vocabulary.index(op)] = 1.0
        if self.extra:
            x = torch.cat([x, torch.tensor(self.extra, dtype=x.dtype)], dim=1)
        return x

    def adjacency_tensor(self) -> torch.Tensor:
        return torch.tensor(self.adjacency, dtype=torch.float32).reshape(self.size, self.size)


@dataclass(frozen=True)
class ArchGraph:
    parts: tuple[GraphPart, ...]

    @property
    def feature_dims(self) -> tuple[int, ...]:
        return tuple(len(p.vocabulary) + (len(p.extra[0]) if p.extra else 0) for p in self.parts)


def dag(size: int, edges: Sequence[tuple[int, int]]) -> tuple[tuple[int, ...], ...]:
    """The adjacency of ``edges`` given as ``(source, destination)``: ``A[destination][source] = 1``."""
    rows = [[0] * size for _ in range(size)]
    for source, destination in edges:
        rows[destination][source] = 1
    return tuple(tuple(r) for r in rows)


def one_hot_rows(indices: Sequence[int], width: int) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(1.0 if k == i else 0.0 for k in range(width)) for i in indices)


__all__ = ["ArchGraph", "GraphPart", "dag", "one_hot_rows"]
