"""The package's shape: no import circles, no arrow from a lower layer up into a higher one, no class over 150 lines.

Every ``import`` in ``pipeline/nasdeploy`` counts, the ones inside functions too (a lazy import hides a circle
from Python, not from a reader). Layers, low to high: ``hardware``, ``latency``, ``spaces``, ``train`` · ``search`` ·
``export``, ``pipeline.py``, ``cli``. The plain helpers beside them (``errors``, ``io``, ``registry``, ``progress``,
``units``, ``seeds``, ``distributed``, ``folder_lock``) have no layer: any layer may use them, and their own arrows are only checked
for circles. A module importing its own package (``import nasdeploy.search`` in ``get_strategy``) is the registry
idiom, not counted: the package's ``__init__`` imports the built-ins, which register themselves.
Run as a script to print the circles, up-arrows and long classes: ``python tests/test_layout.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline" / "nasdeploy"
LAYERS = {"hardware": 1, "latency": 1, "spaces": 1, "train": 1, "search": 2, "export": 3, "pipeline": 3, "cli": 3,
          "__main__": 3}


def module_files() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("nasdeploy",) + path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (``from a import b`` counts as ``a.b`` when ``b`` is a module)."""
    modules = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = module.split(".") if is_package else module.split(".")[:-1]
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                target = _resolve(name, modules) if name.split(".")[0] == "nasdeploy" else None
                if target and target != module and not module.startswith(target + "."):
                    targets.add(target)
        graph[module] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def up_arrows(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((source, target) for source, targets in graph.items() for target in targets
                  if None not in (layer(source), layer(target)) and layer(target) > layer(source))


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_no_import_from_a_lower_layer_into_a_higher_one():
    assert up_arrows(import_graph()) == []


MAX_CLASS_LINES = 150


def long_classes(limit: int = MAX_CLASS_LINES) -> list[tuple[str, str, int]]:
    """Classes longer than ``limit`` lines (decorators excluded): (module path, class, lines)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > limit:
                found.append((str(path.relative_to(PACKAGE)), node.name, node.end_lineno - node.lineno + 1))
    return found


def test_no_class_over_150_lines():
    assert long_classes() == []


if __name__ == "__main__":
    graph = import_graph()
    for component in circles(graph):
        print("circle:", " <-> ".join(component))
    for source, target in up_arrows(graph):
        print("up-arrow:", source, "->", target)
    for path, name, lines in long_classes():
        print(f"long class: {path} {name} ({lines} lines)")
