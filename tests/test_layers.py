"""The package's layers: dependencies point one way, there are no import cycles, and only the compat
module touches private Dagster names. Read from the source with ``ast`` - no imports are executed."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hybrid_dagster"

# Lower layers first; a module may import its own layer and the layers before it, never later ones.
LAYERS: list[set[str]] = [
    {"errors", "keys", "_dagster_compat"},
    {"residency"},
    {"audit"},
    {"secrets", "gpu"},
    {"plane"},
    {"resources", "guard", "pinning"},
    {"validation", "cdc", "documents", "access", "dr"},
    {"assets", "sensors"},
    {"components"},
    {"cli", "testing", "__init__"},
]


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(unit: str) -> int:
    for index, layer in enumerate(LAYERS):
        if unit in layer:
            return index
    raise AssertionError(f"hybrid_dagster.{unit} is in no layer: add it to LAYERS in {__file__}")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(path: Path, module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every hybrid_dagster / dagster import."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                package = module.split(".")[: -node.level or None]
                base = ".".join([*package, node.module])
            names = [f"{base}.{a.name}" for a in node.names]
            for name in [base, *names]:
                found.append((name, node.lineno, id(node) in top_level or _in_type_checking(tree, node)))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, node.lineno, id(node) in top_level))
    return found


def _in_type_checking(tree: ast.Module, target: ast.AST) -> bool:
    for node in tree.body:
        in_block = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        if in_block and any(child is target for child in ast.walk(node)):
            return True
    return False


def test_layers_point_one_way() -> None:
    problems = []
    for module, path in _modules().items():
        own = _layer(_unit(module))
        for name, line, _ in _imports(path, module):
            if not name.startswith("hybrid_dagster.") and name != "hybrid_dagster":
                continue
            target = _unit(name)
            if target == "__init__" or target not in {u for layer in LAYERS for u in layer}:
                continue
            if _layer(target) > own:
                problems.append(f"{module}:{line} imports {name} (a higher layer)")
    assert not problems, "\n".join(problems)


def test_no_import_cycles_between_modules() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for name, _, top in _imports(path, module):
            if not top:
                continue
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module and name != "hybrid_dagster":
                graph[module].add(name)
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        seen[node] = 1
        stack.append(node)
        for child in sorted(graph[node]):
            if seen.get(child) == 1:
                return [*stack[stack.index(child) :], child]
            if child not in seen and (cycle := visit(child)):
                return cycle
        stack.pop()
        seen[node] = 2
        return None

    for module in sorted(modules):
        if module not in seen and (cycle := visit(module)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_only_the_compat_module_imports_private_dagster_names() -> None:
    offenders = []
    for module, path in _modules().items():
        if module == "hybrid_dagster._dagster_compat":
            continue
        for name, line, _ in _imports(path, module):
            if name.startswith(("dagster._", "dagster_shared")) or ".dagster._" in name:
                offenders.append(f"{module}:{line} imports {name}")
    assert not offenders, "\n".join(offenders)
