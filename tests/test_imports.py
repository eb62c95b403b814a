"""The package's import graph: no circle among radspine modules, and the layering rules.

Only module-level imports count (statements at the top level of a module, including inside top-level
``if``/``try`` blocks): imports inside functions are lazy and cannot form an import-time circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import radspine

SRC = Path(radspine.__file__).resolve().parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _top_level_imports(tree: ast.Module, module: str, is_pkg: bool) -> set[str]:
    """radspine modules imported at module level (relative imports resolved; ``from a import b`` also
    counts ``a.b`` when that is a module)."""
    out: set[str] = set()

    def visit(stmts: list[ast.stmt]) -> None:
        for node in stmts:
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if is_pkg else module.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    mod = node.module or ""
                out.add(mod)
                out.update(f"{mod}.{a.name}" for a in node.names)
            elif isinstance(node, ast.If):
                # `if TYPE_CHECKING:` blocks never run at import time.
                test = node.test
                if not (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") and not (
                    isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
                ):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for h in node.handlers:
                    visit(h.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(tree.body)
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        deps = _top_level_imports(tree, mod, path.name == "__init__.py")
        graph[mod] = {d for d in deps if d in files and d != mod}
    return graph


def _all_imports(mod_prefix: str) -> dict[str, set[str]]:
    """Every radspine import (top level and lazy) of the modules under ``mod_prefix``."""
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    out: dict[str, set[str]] = {}
    for mod, path in files.items():
        if mod != mod_prefix and not mod.startswith(mod_prefix + "."):
            continue
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                deps.add(node.module)
        out[mod] = deps
    return out


def test_graph_parser_sees_known_edges() -> None:
    g = _graph()
    assert len(g) > 30
    assert "radspine.models.calibrate" in g["radspine.models.bundle"]
    assert "radspine.errors" in g["radspine.features.schema"]


def test_no_import_cycle_at_module_level() -> None:
    g = _graph()
    state: dict[str, int] = {}  # 1 = on the DFS stack, 2 = done
    stack: list[str] = []

    def dfs(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g[m]):
            if state.get(d) == 1:
                return [*stack[stack.index(d):], d]
            if d not in state and (cyc := dfs(d)):
                return cyc
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (cyc := dfs(m)):
            raise AssertionError("import cycle: " + " -> ".join(cyc))


def test_layers_never_import_commands() -> None:
    for layer in ("radspine.features", "radspine.models", "radspine.localize"):
        for mod, deps in _all_imports(layer).items():
            bad = sorted(d for d in deps if d == "radspine.commands" or d.startswith("radspine.commands."))
            assert not bad, f"{mod} imports {bad}"


def test_models_do_not_import_io() -> None:
    for mod, deps in _all_imports("radspine.models").items():
        bad = sorted(d for d in deps if d == "radspine.io" or d.startswith("radspine.io."))
        assert not bad, f"{mod} imports {bad}"


def test_src_never_imports_test_helpers() -> None:
    for mod, deps in _all_imports("radspine").items():
        assert not any(d.startswith(("helpers", "tests")) or "fake_table" in d for d in deps), mod
