"""The layout holds: no import cycle, the daemon's core apart from the tools and the trainer.

The import graph is read from the source (``ast``), lazy imports inside functions
included: a cycle hidden in a function body is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "trainer")


def project_modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of ``edge`` and ``trainer``."""
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name ``module`` imports (``from a import b`` gives ``a`` and ``a.b``)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + [base]).rstrip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports.

    An edge to one's own parent package is left out: Python imports a package before any
    of its submodules anyway, so it cannot close a cycle that is not already there.
    """
    modules = project_modules()
    graph = {}
    for module, path in modules.items():
        deps = set()
        for name in imported_names(module, path):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                deps.add(name)
        graph[module] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    # trainer.fit imports trainer.export inside a function.
    assert "trainer.export" in graph["trainer.fit"]
    assert "edge.mqtt" in graph["edge.daemon"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_daemon_core_imports_neither_the_tools_nor_the_trainer():
    graph = import_graph()
    # The command line reaches the tools for `sigmoid-edge demo|simulate|record`, lazily
    # (test_daemon_imports_only_the_core checks what `run` loads).
    entry = {"edge.cli", "edge.__main__"}
    core = [m for m in graph
            if m.startswith("edge.") and not m.startswith("edge.tools") and m not in entry]
    bad = {m: sorted(d for d in graph[m] if d.startswith(("edge.tools", "trainer")))
           for m in core}
    assert not {m: d for m, d in bad.items() if d}
