"""The package's shape, checked from its source: imports form no cycle, modules stay
readable in one sitting, each says what it owns, and nothing above the store writes SQL."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "spoolq"
MAX_LINES = 460  # "about 450": small enough to read in one sitting
MODULES = {
    ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
    for p in sorted(PACKAGE.rglob("*.py"))
}


def imports_of(name: str, path: Path) -> set[str]:
    """The spoolq modules ``name`` imports, at any depth of its code (an import inside a
    function is still a dependency)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parts = name.split(".")[: -node.level + (path.name == "__init__.py")]
                base = ".".join([*parts, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m in MODULES and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def package_graph() -> dict[str, set[str]]:
    graph = {name: imports_of(name, path) for name, path in MODULES.items()}
    # A package's __init__ importing its own submodules is how a package shows its face,
    # not a dependency of those submodules on it.
    for name in graph:
        graph[name] = {m for m in graph[name] if not (m.startswith(name + ".") and name in MODULES)}
    return graph


def test_no_import_cycle_in_the_package() -> None:
    cycle = find_cycle(package_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_module_is_short_and_says_what_it_is_for(name: str) -> None:
    path = MODULES[name]
    text = path.read_text()
    lines = len(text.splitlines())
    assert lines <= MAX_LINES, f"{path.name}: {lines} lines; split it by concept"
    if text.strip():
        doc = ast.get_docstring(ast.parse(text))
        assert doc, f"{path.name}: no opening docstring saying what it owns"


def test_nothing_above_the_store_writes_sql() -> None:
    sql = re.compile(r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b")
    for name, path in MODULES.items():
        # The demo and its example loader query the demo's own warehouse, not the store.
        if name.startswith(("spoolq.store", "spoolq.demo", "spoolq.examples")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not sql.search(node.value), f"{path.name} holds SQL: {node.value[:60]!r}"
