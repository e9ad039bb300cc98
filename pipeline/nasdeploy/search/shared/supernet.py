"""Single-path one-shot supernet (SPOS) with SE-NAS expanded child spaces (§3.1, §3.4).

Weights live in one ``nn.ModuleDict`` of candidate modules named ``"shared|<unit>|<layer>|<choice>"``;
``unit`` is the repeated cell a layer belongs to (DARTS: the cell index; MobileNet: 0). Each forward
runs exactly one path (Eq. 1 with uniform single-path sampling).

Expanding (§3.4): a merged child space ``g`` (adjacent layers ``L``) gives every *partial model* — a
combination of choices for the layers ``L`` — its own copy of those layers' weights, named
``"L<first>to<last>|<choices joined by +>|<unit>|<layer>"`` (named by the child space's layers, so adding
child spaces at later stages never renames existing copies). Copies are materialised lazily, on the first path
that needs them, as copies of the shared weights at merge time (those shared weights are frozen from
then on, since no path uses them any more), so memory grows only with the partial models sampled.
Only the sampled path lives in device memory (§3.4, "only one architecture is used and stored in memory at
each iteration"): when the training device is not the CPU, ``prepare`` moves the path's partial models to the
device and every idle partial-model copy (and, via ``follow_params``, its momentum buffer) to CPU memory.
The shared candidates stay on the device, as in SPOS.
Partial models share nothing, so an optimiser step on one leaves the others bit-identical.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from nasdeploy.search.shared.paths import Path, PathSpace


INACTIVE = "-"  # a layer of a child space that the path does not run (a DARTS edge that is not a node input)


def _safe(name: str) -> str:
    return name.replace(".", "_")


class Supernet(nn.Module):
    """Candidate storage, child spaces and path resolution; subclasses define the skeleton's forward."""

    def __init__(self, paths: PathSpace, units_of_layer: Sequence[Sequence[int]]):
        super().__init__()
        self.paths = paths
        self.units_of_layer = [list(u) for u in units_of_layer]  # the units each layer has modules in
        self.candidates = nn.ModuleDict()
        self.child_spaces: list[list[int]] = []
        self.group_of: dict[int, int] = {}
        self.idle_device = torch.device("cpu")  # where idle partial-model copies wait

    # ---------------------------------------------------------------- storage
    def add_candidate(self, unit: int, layer: int, choice: str, module: nn.Module) -> None:
        self.candidates[f"shared|{unit}|{layer}|{_safe(choice)}"] = module

    def partial_key(self, group: int, path: Path) -> str:
        """The partial model of child space ``group`` that ``path`` runs: its *active* sub-architecture only, so
        two paths that differ on edges they do not use (DARTS inputs not selected) share one copy (§3.4)."""
        active = self.paths.active(path)
        return "+".join(INACTIVE if active[layer] is None else _safe(active[layer]) for layer in self.child_spaces[group])

    def set_child_spaces(self, groups: Sequence[Sequence[int]]) -> None:
        """Adopt the merged child spaces (earlier ones must be kept, in order, as ``merge_child_spaces`` does)."""
        self.child_spaces = [list(g) for g in groups]
        self.group_of = {layer: g for g, layer_list in enumerate(self.child_spaces) for layer in layer_list}

    def group_label(self, group: int) -> str:
        layers = self.child_spaces[group]
        return f"L{layers[0]}to{layers[-1]}"

    def copy_name(self, group: int, key: str, unit: int, layer: int) -> str:
        return f"{self.group_label(group)}|{key}|{unit}|{layer}"

    def materialise(self, group: int, key: str) -> bool:
        """Create the partial model ``key`` of child space ``group`` if absent; True when created."""
        used = [(layer, choice) for layer, choice in zip(self.child_spaces[group], key.split("+")) if choice != INACTIVE]
        if not used:
            return False
        first = self.copy_name(group, key, self.units_of_layer[used[0][0]][0], used[0][0])
        if first in self.candidates:
            return False
        for layer, choice in used:
            for unit in self.units_of_layer[layer]:
                source = self.candidates[f"shared|{unit}|{layer}|{choice}"]
                self.candidates[self.copy_name(group, key, unit, layer)] = copy.deepcopy(source)
        return True

    def materialised_keys(self) -> list[tuple[int, str]]:
        """Every (child space index, partial model) with weights, in creation order (for checkpoints)."""
        labels = {self.group_label(g): g for g in range(len(self.child_spaces))}
        found: list[tuple[int, str]] = []
        for name in self.candidates:
            if name.startswith("L"):
                label, key, _, _ = name.split("|")
                item = (labels[label], key)
                if item not in found:
                    found.append(item)
        return found

    def drop_removed(self, alive: Sequence[Sequence[str]]) -> None:
        """Forget partial models that contain an operator no longer alive."""
        for name in list(self.candidates):
            if name.startswith("L"):
                label, key, _, _ = name.split("|")
                layers = label_layers(label)
                if any(choice != INACTIVE and choice not in {_safe(op) for op in alive[layer]}
                       for layer, choice in zip(layers, key.split("+"))):
                    del self.candidates[name]

    def op(self, unit: int, layer: int, path: Path) -> nn.Module:
        """The module computing ``layer`` of ``path`` in ``unit``: a partial model's copy or the shared one."""
        group = self.group_of.get(layer)
        if group is None:
            return self.candidates[f"shared|{unit}|{layer}|{_safe(path.choices[layer])}"]
        key = self.partial_key(group, path)
        self.materialise(group, key)
        module = self.candidates[self.copy_name(group, key, unit, layer)]
        return module

    def path_copy_names(self, path: Path) -> set[str]:
        """Names of the partial-model copies ``path`` runs."""
        names = set()
        active = self.paths.active(path)
        for group, layers in enumerate(self.child_spaces):
            key = self.partial_key(group, path)
            names |= {self.copy_name(group, key, unit, layer) for layer in layers if active[layer] is not None
                      for unit in self.units_of_layer[layer]}
        return names

    def prepare(self, path: Path, device: torch.device | str) -> list[str]:
        """Materialise the path's partial models on ``device`` and park idle copies; returns the names created."""
        created = []
        for group in range(len(self.child_spaces)):
            key = self.partial_key(group, path)
            if self.materialise(group, key):
                for layer, choice in zip(self.child_spaces[group], key.split("+")):
                    if choice == INACTIVE:
                        continue
                    for unit in self.units_of_layer[layer]:
                        name = self.copy_name(group, key, unit, layer)
                        self.candidates[name].to(device)
                        created.append(name)
        self.place(path, device)
        return created

    def place(self, path: Path, device: torch.device | str) -> None:
        """§3.4: the path's partial models on ``device``, every other copy on ``idle_device`` (no-op when equal)."""
        device = torch.device(device)
        if device == self.idle_device:
            return
        active = self.path_copy_names(path)
        for name, module in self.candidates.items():
            if name.startswith("L"):
                target = device if name in active else self.idle_device
                first = next(module.parameters(), None)
                if first is not None and first.device != target:
                    module.to(target)

    def copy_devices(self) -> dict[str, torch.device]:
        """Device of every materialised partial-model copy (for tests and memory checks)."""
        return {name: next(m.parameters()).device for name, m in self.candidates.items()
                if name.startswith("L") and next(m.parameters(), None) is not None}

    def fixed_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def path_modules(self, path: Path) -> list[nn.Module]:
        """Every module the path runs (fixed parts included), e.g. for batch-norm recalibration."""
        modules = list(self.fixed_modules())
        for layer, choice in enumerate(self.paths.active(path)):
            if choice is not None:
                modules += [self.op(unit, layer, path) for unit in self.units_of_layer[layer]]
        return modules


class LayerwiseSupernet(Supernet):
    """MobileNet-like: ``stem -> layer_1 -> ... -> layer_n -> head`` with one chosen block per layer."""

    def __init__(self, paths: PathSpace, stem: nn.Module, head: nn.Module,
                 build_candidate: Callable[[int, str], nn.Module]):
        super().__init__(paths, [[0] for _ in paths.candidates])
        self.stem = stem
        self.head = head
        for layer, choices in enumerate(paths.candidates):
            for choice in choices:
                self.add_candidate(0, layer, choice, build_candidate(layer, choice))

    def fixed_modules(self) -> list[nn.Module]:
        return [self.stem, self.head]

    def forward(self, x: torch.Tensor, path: Path) -> torch.Tensor:
        x = self.stem(x)
        for layer in range(self.paths.num_layers):
            x = self.op(0, layer, path)(x)  # the sampled block of layer i (Eq. 1: N(a, W(a)))
        return self.head(x)


def batchnorms(modules: Iterable[nn.Module]) -> list[nn.modules.batchnorm._BatchNorm]:
    found = []
    for module in modules:
        found += [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return found


@torch.no_grad()
def recalibrate_bn(supernet: Supernet, path: Path, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Reset the path's batch-norm statistics and re-estimate them (cumulative average) on ``batches``."""
    modules = supernet.path_modules(path)
    with cumulative_statistics([bn for bn in batchnorms(modules) if bn.track_running_stats]):
        set_path_mode(supernet, modules, True)
        for x, _ in batches:
            supernet(x, path)
    set_path_mode(supernet, modules, False)


@contextmanager
def cumulative_statistics(norms: Sequence[nn.modules.batchnorm._BatchNorm]):
    """Inside the block, ``norms`` start from reset running statistics and average every batch equally
    (momentum None); their momenta are restored on leaving it."""
    saved = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    try:
        yield
    finally:
        for bn, momentum in zip(norms, saved):
            bn.momentum = momentum


def set_path_mode(supernet: Supernet, modules: Sequence[nn.Module], training: bool) -> None:
    """train()/eval() for the modules a path runs only: walking every candidate of a large supernet for each
    evaluated path costs as much as the forward pass itself. Training epochs call ``supernet.train()``."""
    supernet.training = training
    for module in modules:
        module.train(training)


@torch.no_grad()
def path_accuracy(supernet: Supernet, path: Path, val_batches, bn_batches) -> float:
    """Validation accuracy of one path with batch-norm recalibration (fitness; P(a) of Eq. 4)."""
    recalibrate_bn(supernet, path, bn_batches)
    correct = total = 0
    for x, y in val_batches:
        logits = supernet(x, path)
        correct += int((logits.argmax(dim=1) == y).sum())
        total += int(y.numel())
    return correct / max(total, 1)


def sgd_step(named_params: dict[str, nn.Parameter], buffers: dict[str, torch.Tensor], lr: float,
             momentum: float, weight_decay: float) -> None:
    """SGD with momentum and weight decay (PyTorch semantics) on the parameters that have a gradient.

    Buffers are keyed by parameter name, so partial models never share optimiser state.
    """
    with torch.no_grad():
        for name, p in named_params.items():
            if p.grad is None:
                continue
            d_p = p.grad.add(p, alpha=weight_decay) if weight_decay else p.grad
            buf = buffers.get(name)
            if buf is not None and buf.device != p.device:
                buf = buf.to(p.device)
            if buf is None:
                buf = d_p.detach().clone()
            else:
                buf.mul_(momentum).add_(d_p)
            buffers[name] = buf
            p.add_(buf, alpha=-lr)
            p.grad = None


def follow_params(buffers: dict[str, torch.Tensor], named_params: dict[str, nn.Parameter]) -> None:
    """Move each momentum buffer to its parameter's device (idle partial models' buffers leave the device too)."""
    for name, buf in list(buffers.items()):
        p = named_params.get(name)
        if p is not None and buf.device != p.device:
            buffers[name] = buf.to(p.device)


class SnapshotAverage:
    """Eq. 4: running sum of the parameters at K mini-batches of the last epoch, then their mean."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.k = 0

    @torch.no_grad()
    def add(self, supernet: nn.Module) -> None:
        self.k += 1
        for name, p in supernet.named_parameters():
            if name in self.sums:
                self.sums[name] += p.detach().to(self.sums[name].device)
            else:
                self.sums[name] = p.detach().clone()
            self.counts[name] = self.counts.get(name, 0) + 1

    @torch.no_grad()
    def averaged(self, supernet: Supernet) -> Supernet:
        """A copy of ``supernet`` holding the averaged weights (1/K Σ_k W_k).

        A partial model created after some snapshots were taken counts, at those snapshots, with the
        value it was created from: the frozen shared weights it copies.
        """
        averaged = copy.deepcopy(supernet)
        params = dict(averaged.named_parameters())
        for name, p in params.items():
            if name not in self.sums:
                continue
            total = self.sums[name].clone()
            missing = self.k - self.counts[name]
            if missing:
                total += missing * _copy_source(averaged, name).to(total.device)
            p.copy_(total / self.k)
        return averaged


def _copy_source(supernet: Supernet, param_name: str) -> torch.Tensor:
    """The shared parameter a partial-model copy was made from (``candidates.gG|key|unit|layer.rest``)."""
    prefix, module_name, rest = param_name.split(".", 2)
    label, key, unit, layer = module_name.split("|")
    choice = key.split("+")[label_layers(label).index(int(layer))]
    source = dict(supernet.named_parameters())[f"{prefix}.shared|{unit}|{layer}|{choice}.{rest}"]
    return source.detach()


def label_layers(label: str) -> list[int]:
    """The layers of a child space from its label ``"L<first>to<last>"``."""
    first, last = label[1:].split("to")
    return list(range(int(first), int(last) + 1))


# ---------------------------------------------------------------- held-out batches (SE-NAS, CTNAS)
def fixed_batches(dataset, batch_size: int, limit: int | None, seed: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from nasdeploy.train.data import make_loader

    batches, seen = [], 0
    for x, y in make_loader(dataset, batch_size, shuffle=True, seed=seed):
        if limit is not None and seen >= limit:
            break
        if limit is not None:
            x, y = x[: limit - seen], y[: limit - seen]
        batches.append((x.to(device), y.to(device)))
        seen += len(y)
    return batches
