"""Lease stores for the GPU tests: SQLite (the embedded default) and PostgreSQL (production)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.postgres import PgDatabase


@pytest.fixture(params=["sqlite", "postgresql"])
def lease_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty lease store URL on SQLite and on an embedded PostgreSQL 18."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'leases.db'}"
        return
    db: PgDatabase = request.getfixturevalue("pg_db")
    yield "postgresql+psycopg2://" + db.server.uri_for(db.name).removeprefix("postgresql://")
