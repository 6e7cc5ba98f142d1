"""The CDC engine is Dagster-free: only ``cdc/worker.py`` and ``cdc/sources/config.py`` import Dagster,
and no engine module imports them (or anything above ``cdc`` in the layer order)."""

from __future__ import annotations

import ast
from pathlib import Path

import hybrid_dagster.cdc

CDC_DIR = Path(hybrid_dagster.cdc.__file__).parent
DAGSTER_SIDE = {"worker.py", "sources/config.py"}
FORBIDDEN = (
    "dagster",
    "hybrid_dagster.cdc.worker",
    "hybrid_dagster.cdc.sources.config",
    "hybrid_dagster.assets",
    "hybrid_dagster.sensors",
    "hybrid_dagster.components",
    "hybrid_dagster.cli",
)


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_engine_modules_import_no_dagster() -> None:
    offenders = {}
    for path in sorted(CDC_DIR.rglob("*.py")):
        relative = path.relative_to(CDC_DIR).as_posix()
        if relative in DAGSTER_SIDE:
            continue
        bad = sorted(
            name
            for name in imported_modules(path)
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
        )
        if bad:
            offenders[relative] = bad
    assert offenders == {}


def test_every_engine_package_has_a_module_docstring() -> None:
    missing = [
        path.relative_to(CDC_DIR).as_posix()
        for path in sorted(CDC_DIR.rglob("*.py"))
        if ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) is None
    ]
    assert missing == []
