"""The import structure shows the architecture: packages import only downward (LAYERS), no module
imports the local runtime unless it is part of it, and no two modules import each other, however
indirectly (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = [ROOT / "segment_elt", ROOT / "receiver", ROOT / "dags", ROOT / "plugins"]
# The packages, bottom first: each imports only from its own package and the layers below it.
# The root modules (settings, errors, dag_ids, db) are the shared vocabulary everything uses.
LAYERS = [
    {"segment_elt"},
    {"segment_elt.control"},
    {"segment_elt.ingest"},
    {"segment_elt.pipeline", "segment_elt.outbound"},
    {"segment_elt.cli", "receiver", "dags", "plugins"},
    {"segment_elt.local"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its body."""
    graph: dict[str, set[str]] = {}
    for folder in PRODUCTION:
        for path in folder.rglob("*.py"):
            found = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module)
                    found.update(f"{node.module}.{alias.name}" for alias in node.names)
                elif isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
            graph[module_name(path)] = found
    return {name: {m for m in found if m in graph and m != name} for name, found in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def package(module: str) -> str:
    """The LAYERS entry a module belongs to."""
    parts = module.split(".")
    if parts[0] != "segment_elt":
        return parts[0]
    if (len(parts) > 1 and (ROOT / "segment_elt" / parts[1] / "__init__.py").exists()) or module == "segment_elt.cli":
        return ".".join(parts[:2])
    return "segment_elt"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """`importer -> imported` for every import of a package in the same or a higher layer."""
    layer = {name: i for i, names in enumerate(LAYERS) for name in names}
    return sorted(
        f"{importer} -> {imported}"
        for importer, found in graph.items()
        for imported in found
        if package(importer) != package(imported) and layer[package(imported)] >= layer[package(importer)]
    )


def test_packages_import_only_downward():
    graph = imports()
    assert {package(name) for name in graph} == set().union(*LAYERS)
    assert upward_imports(graph) == []


def test_nothing_outside_the_local_runtime_imports_it():
    offenders = {
        name: sorted(m for m in found if m.startswith("segment_elt.local"))
        for name, found in imports().items()
        if not name.startswith("segment_elt.local")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_imports_have_no_cycle():
    graph = imports()
    # a package's __init__ and its modules are one unit only through real imports, which are counted
    assert cycles(graph) == []


def test_the_architecture_is_in_the_layout():
    packages = {p.name for p in (ROOT / "segment_elt").iterdir() if (p / "__init__.py").exists()}
    assert {"ingest", "control", "pipeline", "outbound", "local"} <= packages
    flat = {p.stem for p in (ROOT / "segment_elt").glob("*.py")} - {"__init__"}
    assert flat == {"cli", "dag_ids", "db", "errors", "settings"}
