"""Tests of the Dagster components: planes, the residency policy and CDC tables declared in YAML."""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from pathlib import Path

import dagster as dg

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DEFS_MODULE = "examples.clinical_ai.defs"


def example_tree() -> dg.ComponentTree:
    """The component tree of examples/clinical_ai/defs (planes + EU clinical CDC)."""
    return dg.ComponentTree.from_module(
        defs_module=importlib.import_module(EXAMPLE_DEFS_MODULE), project_root=REPO_ROOT
    )


def write_yaml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def defs_tree(root: Path, components: dict[str, str]) -> dg.ComponentTree:
    """A fresh defs package under ``root`` with one ``<name>/defs.yaml`` per entry, as a component tree."""
    package = f"hybrid_defs_{uuid.uuid4().hex[:12]}"
    for name, text in components.items():
        write_yaml(root / package / name / "defs.yaml", text)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return dg.ComponentTree.from_module(defs_module=importlib.import_module(package), project_root=root)


def error_chain(error: BaseException) -> str:
    """The messages of an exception and of everything it was raised from, as a user sees them."""
    messages: list[str] = []
    current: BaseException | None = error
    while current is not None:
        messages.append(str(current))
        current = current.__cause__ or current.__context__
    return "\n".join(messages)
