"""The import graph of codesign/, compiler/ and hw/: imports point downwards only, and no module imports itself
back through others.

Every ``import`` and ``from ... import`` counts, at module level or inside a function (a lazy import is still a
dependency). ``from pkg import name`` is an edge to the submodule ``pkg.name`` when there is one, else to ``pkg``
(its ``__init__``); importing ``a.b.c`` is an edge to ``a.b.c`` alone, not to the packages Python runs on the way.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("codesign", "compiler", "hw")
# package -> the packages of ours it must not import (docs/ARCHITECTURE.md, "Layers").
FORBIDDEN = {"hw": ("compiler", "codesign"), "compiler": ("codesign",), "codesign": ()}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The deepest module of ours that ``name`` (a dotted path) names or lies in; None for other packages."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ours that ``module`` imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(t for alias in node.names if (t := _resolve(alias.name, modules)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, up level - 1 more
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                target = f"{source}.{alias.name}"
                if target in modules:  # a submodule
                    found.add(target)
                elif t := _resolve(source, modules):  # a name the module (or package __init__) defines
                    found.add(t)
    found.discard(module)
    return found


def import_graph() -> nx.DiGraph:
    """module -> module it imports, over every module of codesign/, compiler/ and hw/."""
    modules = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in modules.items():
        graph.add_edges_from((module, target) for target in _imports(module, path, modules))
    return graph


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    return import_graph()


def test_graph_sees_lazy_and_package_imports(graph: nx.DiGraph) -> None:
    # A function-local import (the pass registry loads each pass on demand) and ``from package import submodule``.
    assert graph.has_edge("compiler.passes", "compiler.passes.canonicalize")
    assert graph.has_edge("hw.rtl", "hw.rtl.emit")
    assert graph.number_of_nodes() > 100


def test_no_upward_imports(graph: nx.DiGraph) -> None:
    upward = sorted((a, b) for a, b in graph.edges
                    if any(b.split(".")[0] == top for top in FORBIDDEN[a.split(".")[0]]))
    assert not upward, "imports against the layering (hw -> nothing of ours, compiler -> hw): " + ", ".join(
        f"{a} -> {b}" for a, b in upward)


def _cycles(graph: nx.DiGraph) -> list[str]:
    """One cycle of every strongly connected component of more than one node, as ``a -> b -> a``."""
    cycles = []
    for component in nx.strongly_connected_components(graph):
        if len(component) > 1:
            cycle = nx.find_cycle(graph.subgraph(component))
            cycles.append(" -> ".join([a for a, _ in cycle] + [cycle[0][0]]))
    return sorted(cycles)


def test_no_import_cycles(graph: nx.DiGraph) -> None:
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_cycles_between_subpackages(graph: nx.DiGraph) -> None:
    # compiler.simulate and compiler.schedule (say) may not lean on each other through different modules either.
    def area(module: str) -> str:
        return ".".join(module.split(".")[:2])

    between = [(a, b) for a, b in graph.edges if area(a) != area(b)]
    areas = nx.DiGraph((area(a), area(b)) for a, b in between)
    tied = [c for c in nx.strongly_connected_components(areas) if len(c) > 1]
    edges = sorted(f"{a} -> {b}" for a, b in between if any(area(a) in c and area(b) in c for c in tied))
    assert not tied, f"cycles between subpackages {_cycles(areas)} through: " + ", ".join(edges)


def test_cycle_check_catches_a_cycle() -> None:
    assert _cycles(nx.DiGraph([("b", "c"), ("c", "a"), ("a", "b"), ("c", "d")])) in (
        ["a -> b -> c -> a"], ["b -> c -> a -> b"], ["c -> a -> b -> c"])
    assert _cycles(nx.DiGraph([("a", "b"), ("b", "c")])) == []
