"""The OpenLineage sensor on Dagster's PostgreSQL storage (dagster-postgres, embedded PostgreSQL)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import dagster as dg
import pytest

from hybrid_dagster.sensors import openlineage_sensor
from tests.fixtures.postgres import PgDatabase
from tests.planes import make_plane
from tests.sensors.lineage_harness import (
    definitions,
    drain,
    local_instance,
    materialize_clinical,
    read_jsonl,
    tick,
)
from tests.sensors.ol_schema import validate_event

pytest.importorskip("dagster_postgres", reason="install the dev extra: pip install -e '.[dev]'")


def _shape(events: list[dict]) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(e["eventType"], e["job"]["name"]) for e in events]


def test_postgres_storage_gives_the_same_stream_as_sqlite(tmp_path: Path, pg_db: PgDatabase) -> None:
    (tmp_path / "warehouse").mkdir()
    plane = make_plane(tmp_path / "warehouse")
    home = tmp_path / "home"
    home.mkdir()
    # SQLAlchemy 2.1 picks psycopg 3 for postgresql://; dagster-postgres needs psycopg2.
    url = pg_db.server.uri_for(pg_db.name).replace("postgresql://", "postgresql+psycopg2://", 1)
    instance = dg.DagsterInstance.local_temp(
        str(home), overrides={"storage": {"postgres": {"postgres_url": url}}}
    )
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    try:
        materialize_clinical(instance, plane)
        out = tmp_path / "pg.jsonl"
        sensor = openlineage_sensor(
            planes=[plane],
            transport={"type": "file", "log_file_path": str(out), "append": True},
            batch_size=4,
        )
        defs = definitions(plane, sensor)
        cursor, ticks = drain(sensor, instance, defs)
        events = read_jsonl(out)
        for event in events:
            validate_event(event)
        # A restart from the stored cursor finds nothing new and sends nothing again.
        again = tick(
            openlineage_sensor(planes=[plane], transport={"type": "console"}), instance, defs, cursor
        )
        assert again.skip.startswith("No new Dagster events")
        assert len(read_jsonl(out)) == len(events)
    finally:
        instance.dispose()

    # The same runs on the default run-sharded SQLite storage give the same stream.
    sqlite_plane = (
        make_plane(tmp_path / "warehouse-sqlite") if (tmp_path / "warehouse-sqlite").mkdir() is None else None
    )
    assert sqlite_plane is not None
    sqlite = local_instance(tmp_path / "home-sqlite")
    materialize_clinical(sqlite, sqlite_plane)
    out_sqlite = tmp_path / "sqlite.jsonl"
    sensor = openlineage_sensor(
        planes=[sqlite_plane], transport={"type": "file", "log_file_path": str(out_sqlite), "append": True}
    )
    drain(sensor, sqlite, definitions(sqlite_plane, sensor))
    assert _shape(read_jsonl(out_sqlite)) == _shape(events)
    assert Counter(e["eventType"] for e in events)["FAIL"] == 2
    assert len(ticks) > 3  # batch_size=4 spread the log over several ticks
