"""The layer rule, read from source: core's stage packages import only leftward, and no modules import each
other in a cycle. Used by test_architecture.py on core itself and on small fixture trees that break it."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ORDER = ("workspace", "data", "model", "drivetrain", "production", "cli")
BASE = ("errors", "progress", "bounds")  # modules directly in core/ that every stage may use


@dataclass(frozen=True)
class Edge:
    source: str  # dotted module name
    target: str
    file: Path
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    """Position in ORDER; -1 for the base modules and the package itself; __main__ runs the CLI."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in BASE:
        return -1
    if parts[1] == "__main__":
        return ORDER.index("cli")
    if parts[1] not in ORDER:
        raise ValueError(f"{module} is in no stage package: put it in one of {', '.join(ORDER)} (or add it to BASE)")
    return ORDER.index(parts[1])


def _targets(node: ast.AST, current: str, is_package: bool) -> list[tuple[str, str]]:
    """(module, name) pairs: `from m import n` may import the module m.n or the name n from m."""
    if isinstance(node, ast.Import):
        return [(a.name, "") for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = current.split(".") if is_package else current.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        return [(base, a.name) for a in node.names]
    return []


def edges(root: Path) -> list[Edge]:
    """Every import between modules under root (a package folder), in functions too."""
    names = {module_name(f, root): f for f in sorted(root.rglob("*.py"))}
    found: list[Edge] = []
    for module, file in names.items():
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            for base, name in _targets(node, module, file.name == "__init__.py"):
                target = f"{base}.{name}" if f"{base}.{name}" in names else base
                if target in names and target != module:
                    found.append(Edge(module, target, file, node.lineno))
    return found


def upward(found: list[Edge]) -> list[str]:
    """Imports against the stage order, each as 'file:line: message'."""
    problems = []
    for e in found:
        if layer(e.target) > layer(e.source):
            problems.append(
                f"{e.file}:{e.line}: {e.source} imports {e.target}, a later stage; stages import only leftward: "
                + " <- ".join(ORDER)
            )
    return problems


def cycles(found: list[Edge]) -> list[str]:
    """Modules that import each other, directly or through others (Tarjan's strongly connected components)."""
    graph: dict[str, list[Edge]] = {}
    for e in found:
        graph.setdefault(e.source, []).append(e)
        graph.setdefault(e.target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for e in graph[v]:
            if e.target not in index:
                visit(e.target)
                low[v] = min(low[v], low[e.target])
            elif e.target in on_stack:
                low[v] = min(low[v], index[e.target])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    problems = []
    for group in groups:
        inside = [e for e in found if e.source in group and e.target in group]
        where = "; ".join(f"{e.file}:{e.line} {e.source} -> {e.target}" for e in inside)
        problems.append(f"import cycle between {', '.join(group)}: {where}")
    return problems


def check(root: Path) -> list[str]:
    """Every breach of the layer rule under the package folder root."""
    found = edges(root)
    return upward(found) + cycles(found)
