"""Schema changes at the PostgreSQL source, followed (or refused) by the Iceberg table."""

from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from hybrid_dagster.cdc.pipeline import CdcPipeline, TableMapping
from hybrid_dagster.cdc.sink.apply import IcebergApplier
from hybrid_dagster.cdc.sink.schema_evolution import SchemaEvolutionError
from hybrid_dagster.cdc.sources.base import SourceTable
from hybrid_dagster.cdc.sources.postgres.source import PostgresChangeSource
from tests.cdc.cdc_harness import plane_at


def execute(dsn: str, *statements: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.close()


_OPENED: list[PostgresChangeSource] = []


@pytest.fixture(autouse=True)
def _close_sources(pg_decoder_db: tuple[str, str]) -> Iterator[None]:
    """Close the stream readers before the database is dropped (a streamed slot is active until then)."""
    yield
    while _OPENED:
        _OPENED.pop().close()


def pipeline(dsn: str, decoder: str, warehouse: Path) -> tuple[CdcPipeline, IcebergApplier]:
    plane = plane_at(warehouse)
    source = PostgresChangeSource(
        dsn, [SourceTable("public.visits")], slot_name=f"evo_{decoder}", decoder=decoder
    )  # type: ignore[arg-type]
    _OPENED.append(source)
    applier = IcebergApplier(plane.load_catalog(), source_id=source.source_id)
    return CdcPipeline(source, applier, [TableMapping("public.visits", "clinic.visits")]), applier


def test_added_column_and_widened_type_follow_the_source(pg_decoder_db, tmp_path: Path) -> None:
    dsn, decoder = pg_decoder_db
    execute(dsn, "CREATE TABLE visits (id integer PRIMARY KEY, ward text, score real)")
    execute(dsn, "INSERT INTO visits VALUES (1, 'icu', 1.5), (2, 'er', 2.5)")
    cdc, applier = pipeline(dsn, decoder, tmp_path / "w")
    cdc.run()
    table = applier.catalog.load_table("clinic.visits")
    first_schema_id = table.schema().schema_id

    execute(
        dsn,
        "INSERT INTO visits VALUES (3, 'icu', 3.5)",
        "ALTER TABLE visits ADD COLUMN triage text",  # mid-stream: changes before and after it
        "INSERT INTO visits VALUES (4, 'er', 4.5, 'red')",
        "ALTER TABLE visits ALTER COLUMN id TYPE bigint, ALTER COLUMN score TYPE double precision",
        "INSERT INTO visits VALUES (5000000000, 'icu', 5.25, 'green')",
    )
    report = cdc.run()
    progress = report.tables["clinic.visits"]
    assert any("triage" in c for c in progress.schema_changes), progress.schema_changes
    assert any("'id'" in c and "long" in c for c in progress.schema_changes), progress.schema_changes
    assert any("'score'" in c and "double" in c for c in progress.schema_changes), progress.schema_changes

    table = applier.catalog.load_table("clinic.visits")
    assert table.schema().schema_id > first_schema_id
    assert str(table.schema().find_field("id").field_type) == "long"
    rows = {r["id"]: r for r in table.scan().to_arrow().to_pylist()}
    assert rows[4]["triage"] == "red" and rows[1]["triage"] is None
    assert rows[5000000000]["score"] == 5.25


def test_incompatible_change_stops_with_a_clear_error(pg_decoder_db, tmp_path: Path) -> None:
    dsn, decoder = pg_decoder_db
    execute(dsn, "CREATE TABLE visits (id integer PRIMARY KEY, ward text, score real)")
    execute(dsn, "INSERT INTO visits VALUES (1, 'icu', 1.5)")
    cdc, applier = pipeline(dsn, decoder, tmp_path / "w")
    cdc.run()
    before = applier.catalog.load_table("clinic.visits").current_snapshot()

    execute(
        dsn, "ALTER TABLE visits ALTER COLUMN score TYPE text", "INSERT INTO visits VALUES (2, 'er', 'high')"
    )
    with pytest.raises(SchemaEvolutionError, match=r"clinic\.visits.*score"):
        cdc.run()
    after = applier.catalog.load_table("clinic.visits").current_snapshot()
    assert before is not None and after is not None and after.snapshot_id == before.snapshot_id


def test_add_column_not_null_default_backfills_the_existing_rows(pg_decoder_db, tmp_path: Path) -> None:
    dsn, decoder = pg_decoder_db
    execute(dsn, "CREATE TABLE visits (id integer PRIMARY KEY, ward text)")
    execute(dsn, "INSERT INTO visits VALUES (1, 'icu'), (2, 'er')")
    cdc, applier = pipeline(dsn, decoder, tmp_path / "w")
    cdc.run()

    execute(
        dsn,
        "ALTER TABLE visits ADD COLUMN status text NOT NULL DEFAULT 'active', ADD COLUMN beds int DEFAULT 4",
        "INSERT INTO visits VALUES (3, 'icu', 'closed', 9)",
        "UPDATE visits SET ward = 'ward b' WHERE id = 2",
    )
    report = cdc.run()
    assert any("'status'" in c and "default" in c for c in report.tables["clinic.visits"].schema_changes)
    rows = sorted(
        applier.catalog.load_table("clinic.visits").scan().to_arrow().to_pylist(), key=lambda r: r["id"]
    )
    assert [(r["id"], r["status"], r["beds"]) for r in rows] == [
        (1, "active", 4),  # never changed since the ALTER: the Iceberg initial default, as in PostgreSQL
        (2, "active", 4),
        (3, "closed", 9),
    ]
