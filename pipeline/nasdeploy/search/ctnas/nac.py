"""The Neural Architecture Comparator (CTNAS §4.1, Eqs. 6-7) and its training (binary cross-entropy).

* ``GCN``: two graph convolutions, Eq. 7: ``Z = Â φ(Â X W0) W1`` with φ = ReLU and Â = A + I (a node keeps its
  own operation, as in the authors' code), then the mean over the graph's real nodes (padding masked out) gives
  one vector per graph part; the parts (DARTS: normal, reduction cell) are embedded by the same GCN and
  concatenated.
* ``NAC``: ``p = σ([Z_α; Z_α'] W_FC)`` (Eq. 6), the probability that α is at least as good as α'.
* ``GraphBank``: the encoded architectures (``SearchSpace.arch_graph``), padded to one node count, indexed by key.
* ``train_step``: one Adam step on BCE(p, y) over a batch of pairs (y = 1{R_α ≥ R_α'}, §4.1).
* ``pairwise_accuracy`` / ``kendall_tau`` (appendix F, Eq. 12): how well the NAC orders held-out architectures.
"""

from __future__ import annotations

from typing import Any, Hashable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nasdeploy.spaces.graph import ArchGraph


class GraphConvolution(nn.Module):
    """``Â H W`` (one layer of Eq. 7; bias-free, as Eq. 7 is written)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, features: torch.Tensor, adjacency_hat: torch.Tensor) -> torch.Tensor:
        return adjacency_hat @ (features @ self.weight)


class GCN(nn.Module):
    """Eq. 7, ``Z = Â φ(Â X W0) W1``, read out as the mean over real nodes: [..., n, F] -> [..., hidden]."""

    def __init__(self, in_features: int, hidden: int):
        super().__init__()
        self.layer0 = GraphConvolution(in_features, hidden)
        self.layer1 = GraphConvolution(hidden, hidden)

    def forward(self, features: torch.Tensor, adjacency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        eye = torch.diag_embed(mask)  # self-loops on real nodes only
        adjacency_hat = adjacency + eye
        z = self.layer1(F.relu(self.layer0(features, adjacency_hat)), adjacency_hat)
        return (z * mask.unsqueeze(-1)).sum(-2) / mask.sum(-1, keepdim=True).clamp(min=1)


class NAC(nn.Module):
    """Eq. 6: ``σ([Z_α; Z_α'] W_FC)``; ``feature_dims`` per graph part (parts share the GCN when equal)."""

    def __init__(self, feature_dims: Sequence[int], hidden: int = 128):
        super().__init__()
        width = max(feature_dims)
        self.feature_dims = tuple(feature_dims)
        self.gcn = GCN(width, hidden)
        self.fc = nn.Linear(2 * hidden * len(feature_dims), 1)

    def embed(self, graphs: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, parts * hidden]: each part's Z (Eq. 7), concatenated."""
        z = self.gcn(graphs["features"], graphs["adjacency"], graphs["mask"])  # [B, parts, hidden]
        return z.flatten(1)

    def logits(self, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fc(torch.cat([self.embed(a), self.embed(b)], dim=1)).squeeze(1)

    def forward(self, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(self.logits(a, b))  # Eq. 6


class GraphBank:
    """Encoded architectures, one tensor row per key; ``batch(indices)`` gathers them for the NAC.

    Rows are stacked incrementally (new graphs are padded to the bank's size and appended; a larger graph
    re-pads the bank once), so a growing bank costs one encoding per architecture."""

    def __init__(self, graphs: Sequence[ArchGraph] = (), keys: Sequence[Hashable] = ()):
        self.keys: list[Hashable] = []
        self.index: dict[Hashable, int] = {}
        self.graphs: list[ArchGraph] = []
        self._stacked: dict[str, torch.Tensor] | None = None
        for key, graph in zip(keys, graphs):
            self.add(key, graph)

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: Hashable, graph: ArchGraph) -> int:
        if key not in self.index:
            self.index[key] = len(self.keys)
            self.keys.append(key)
            self.graphs.append(graph)
        return self.index[key]

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every graph padded to the bank's largest node count and widest vocabulary."""
        done = 0 if self._stacked is None else len(self._stacked["mask"])
        if done < len(self.graphs):
            new = stack_graphs(self.graphs[done:])
            if self._stacked is None or not same_size(self._stacked, new):
                self._stacked = stack_graphs(self.graphs)
            else:
                self._stacked = {name: torch.cat([self._stacked[name], new[name]]) for name in new}
        return self._stacked

    def batch(self, indices: Sequence[int] | torch.Tensor) -> dict[str, torch.Tensor]:
        at = torch.as_tensor(indices, dtype=torch.long)
        return {name: t[at] for name, t in self.tensors().items()}


def same_size(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a["features"].shape[1:] == b["features"].shape[1:]


def stack_graphs(graphs: Sequence[ArchGraph]) -> dict[str, torch.Tensor]:
    """``features`` [B, parts, n, F], ``adjacency`` [B, parts, n, n], ``mask`` [B, parts, n] (1 = real node)."""
    parts = len(graphs[0].parts)
    n = max(p.size for g in graphs for p in g.parts)
    width = max(max(g.feature_dims) for g in graphs)
    features = torch.zeros(len(graphs), parts, n, width)
    adjacency = torch.zeros(len(graphs), parts, n, n)
    mask = torch.zeros(len(graphs), parts, n)
    for b, graph in enumerate(graphs):
        for k, part in enumerate(graph.parts):
            x = part.features()
            features[b, k, : part.size, : x.shape[1]] = x
            adjacency[b, k, : part.size, : part.size] = part.adjacency_tensor()
            mask[b, k, : part.size] = 1.0
    return {"features": features, "adjacency": adjacency, "mask": mask}


def make_optimizer(nac: NAC, lr: float = 2e-4, weight_decay: float = 5e-4) -> torch.optim.Optimizer:
    """Appendix C: Adam, learning rate 2e-4, weight decay 5e-4."""
    return torch.optim.Adam(nac.parameters(), lr=lr, weight_decay=weight_decay)


def train_step(nac: NAC, optimizer: torch.optim.Optimizer, bank: GraphBank, pairs: torch.Tensor, labels: torch.Tensor) -> float:
    """One step of BCE(NAC(α, α'), y) over ``pairs`` [B, 2] (bank indices) with labels y ∈ {0, 1} (§4.1)."""
    nac.train()
    logits = nac.logits(bank.batch(pairs[:, 0]), bank.batch(pairs[:, 1]))
    loss = F.binary_cross_entropy_with_logits(logits, labels.float())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def compare(nac: NAC, bank: GraphBank, pairs: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """NAC(α, α') for every row of ``pairs`` [P, 2]."""
    nac.eval()
    out = [nac(bank.batch(part[:, 0]), bank.batch(part[:, 1])) for part in torch.split(pairs, chunk)]
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def score_matrix(nac: NAC, bank: GraphBank, indices: Sequence[int]) -> torch.Tensor:
    """P[i, j] = NAC(α_i, α_j) over ``indices`` (diagonal included; Algorithm 2 leaves it out)."""
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    grid = torch.stack(torch.meshgrid(idx, idx, indexing="ij"), dim=-1).reshape(-1, 2)
    return compare(nac, bank, grid).reshape(len(idx), len(idx))


def all_pairs(items: Sequence[int], values: Sequence[float] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every ordered pair (i, j), i ≠ j, of ``items`` (Algorithm 1 step 2) with y = 1{R_i ≥ R_j} when ``values``
    are given. Both orders are kept, so the NAC sees every comparison from both sides."""
    pairs = [(a, b) for a in range(len(items)) for b in range(len(items)) if a != b]
    tensor = torch.tensor([(items[a], items[b]) for a, b in pairs], dtype=torch.long).reshape(-1, 2)
    if values is None:
        return tensor, None
    return tensor, torch.tensor([1 if values[a] >= values[b] else 0 for a, b in pairs], dtype=torch.long)


def pairwise_accuracy(nac: NAC, bank: GraphBank, items: Sequence[int], values: Sequence[float]) -> dict[str, Any]:
    """Share of pairs (i < j) with different values whose order the NAC gets right (p ≥ 0.5 iff R_i ≥ R_j)."""
    pairs = [(i, j) for i in range(len(items)) for j in range(i + 1, len(items)) if values[i] != values[j]]
    if not pairs:
        return {"pairs": 0, "accuracy": None}
    tensor = torch.tensor([(items[i], items[j]) for i, j in pairs], dtype=torch.long)
    p = compare(nac, bank, tensor)
    right = sum(int((float(pk) >= 0.5) == (values[i] > values[j])) for pk, (i, j) in zip(p, pairs))
    return {"pairs": len(pairs), "accuracy": right / len(pairs)}


def nac_ranking_scores(nac: NAC, bank: GraphBank, items: Sequence[int]) -> list[float]:
    """Each architecture's mean NAC(α_i, α_j) against the others (Eq. 5): the NAC's ranking of ``items``."""
    matrix = score_matrix(nac, bank, items)
    n = len(items)
    return ((matrix.sum(1) - matrix.diagonal()) / max(n - 1, 1)).tolist()


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Eq. 12: the mean of sgn(x_i - x_j)·sgn(y_i - y_j) over the n(n-1)/2 pairs (ties count 0)."""
    n = len(x)
    if n < 2:
        return None
    sgn = lambda v: (v > 0) - (v < 0)  # noqa: E731
    total = sum(sgn(x[i] - x[j]) * sgn(y[i] - y[j]) for i in range(n) for j in range(i + 1, n))
    return total / (n * (n - 1) / 2)
