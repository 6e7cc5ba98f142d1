"""Shared fixtures. Service fixtures (PostgreSQL, moto) live in their own plugin modules."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.moto",
    "tests.fixtures.openbao",
    "tests.fixtures.moto_iam",
    "tests.fixtures.tokenreview",
]


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    path = tmp_path / "warehouse"
    path.mkdir()
    return path


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test`` runs two workers), the tests of the one shared demo run share a
    worker: the session-scoped ``demo`` fixture then runs once, not once per worker. The first of them
    runs the whole demo in its setup, hence the longer timeout."""
    for item in items:
        if "demo" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("demo"))
            item.add_marker(pytest.mark.timeout(1500))
