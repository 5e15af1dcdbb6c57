"""The folder tree is the architecture: imports go one way, and the core imports no edge."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "streamscore"
EDGES = ("streamscore.engines", "streamscore.destinations", "streamscore.runners", "streamscore.delivery",
         "streamscore.pipeline", "streamscore.service", "streamscore.cli", "streamscore.plugins")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each streamscore module -> the streamscore modules it imports (anywhere in the file)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                candidates = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            found.update(c for c in candidates if c in modules and c != name)
        graph[name] = found
    return graph


def test_the_core_imports_no_edge() -> None:
    graph = imports()
    core = {m: deps for m, deps in graph.items() if m.startswith("streamscore.core")}
    assert core, "the core package exists"
    offending = {m: sorted(d for d in deps if d.startswith(EDGES)) for m, deps in core.items()}
    assert not {m: d for m, d in offending.items() if d}


def test_the_package_has_no_import_cycles() -> None:
    graph = imports()
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, f"import cycle: {' -> '.join([*visiting[visiting.index(module):], module])}"
        visiting.append(module)
        for dep in sorted(graph[module]):
            visit(dep)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
