"""SqlTriggerChangeSource on real SQLite files."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from hybrid_dagster.cdc.changes import Position
from hybrid_dagster.cdc.sources.base import SourceTable
from hybrid_dagster.cdc.sources.sql_triggers.source import SqlTriggerChangeSource, TriggerColumnsDrift

DDL = (
    "CREATE TABLE patients (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score NUMERIC(10, 2), weight REAL, "
    "active BOOLEAN, born DATE, seen DATETIME, photo BLOB, notes TEXT)"
)


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql(DDL)
        conn.exec_driver_sql(
            "INSERT INTO patients VALUES (1, 'Ann', 1.5, 60.5, 1, '1980-02-03', "
            "'2024-01-01 10:00:00.123456', x'00ff', NULL)"
        )
    return engine


def execute(engine: sa.Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def rows(source: SqlTriggerChangeSource, max_events: int = 1000) -> list[dict[str, Any]]:
    batch = source.read(max_events)
    return batch.tables["patients"].rows.to_pylist() if "patients" in batch.tables else []


def test_setup_is_idempotent_and_returns_the_hand_off(engine: sa.Engine) -> None:
    source = SqlTriggerChangeSource(engine, ["patients"])
    assert source.kind == "sqlite"
    assert source.setup() == Position(0, 0)
    assert source.setup() is None
    execute(engine, "INSERT INTO patients (id, name) VALUES (2, 'Bo')")
    assert len(rows(source)) == 1  # one trigger, not two
    assert source.source_id.endswith("app.db#_hybrid_cdc_log:default")


def test_every_op_with_types(engine: sa.Engine) -> None:
    source = SqlTriggerChangeSource(engine, ["patients"])
    source.setup()
    execute(
        engine,
        "INSERT INTO patients VALUES (2, 'Bo', 3.25, NULL, 0, NULL, '2024-05-06 07:08:09', x'01', 'x')",
        "UPDATE patients SET name = 'Bob' WHERE id = 2",
        "UPDATE patients SET id = 3 WHERE id = 2",
        "DELETE FROM patients WHERE id = 1",
    )
    batch = source.read(100)
    changes = batch.tables["patients"]
    assert changes.key_columns == ["id"]
    assert changes.data_schema == pa.schema(
        [
            ("id", pa.int64()),
            ("name", pa.string()),
            ("score", pa.decimal128(10, 2)),
            ("weight", pa.float64()),
            ("active", pa.bool_()),
            ("born", pa.date32()),
            ("seen", pa.timestamp("us")),
            ("photo", pa.binary()),
            ("notes", pa.string()),
        ]
    )
    got = changes.rows.to_pylist()
    assert [(r["__op"], r["__commit_pos"], r["__event_pos"], r["id"]) for r in got] == [
        ("c", 1, 1, 2),
        ("u", 2, 2, 2),
        ("u", 3, 3, 3),
        ("d", 4, 4, 1),
    ]
    assert [r["__old_key"] for r in got] == [None, None, {"id": 2}, None]
    assert got[0]["score"] == decimal.Decimal("3.25") and got[0]["active"] is False
    assert got[0]["seen"] == dt.datetime(2024, 5, 6, 7, 8, 9) and got[0]["photo"] == b"\x01"
    deleted = got[3]  # the whole old row
    assert (
        deleted["name"] == "Ann"
        and deleted["born"] == dt.date(1980, 2, 3)
        and deleted["photo"] == b"\x00\xff"
    )
    assert deleted["seen"] == dt.datetime(2024, 1, 1, 10, 0, 0, 123456)
    assert all(isinstance(r["__commit_ts"], dt.datetime) for r in got)
    assert batch.ack_position == batch.source_position == Position(4, 4)


def test_read_without_ack_returns_the_same_and_ack_moves_on(engine: sa.Engine) -> None:
    source = SqlTriggerChangeSource(engine, ["patients"])
    source.setup()
    execute(engine, *(f"INSERT INTO patients (id, name) VALUES ({i}, 'p{i}')" for i in range(10, 15)))
    first = source.read(3)
    assert first.ack_position == Position(3, 3)
    assert source.read(3).tables["patients"].rows.equals(first.tables["patients"].rows)

    # Crash before ack: a new instance (new engine, same file) sees the same changes.
    fresh = SqlTriggerChangeSource(sa.create_engine(engine.url), ["patients"])
    assert fresh.read(3).tables["patients"].rows.equals(first.tables["patients"].rows)

    source.ack(first.ack_position)  # type: ignore[arg-type]
    assert [r["id"] for r in rows(fresh)] == [13, 14]
    source.ack(Position(1, 1))  # never moves backwards
    assert source.acknowledged() == Position(3, 3)


def test_consumers_are_independent_and_purge_keeps_unacked_rows(engine: sa.Engine) -> None:
    lake = SqlTriggerChangeSource(engine, ["patients"], consumer="lake")
    audit = SqlTriggerChangeSource(engine, ["patients"], consumer="audit")
    lake.setup()
    execute(
        engine,
        "INSERT INTO patients (id, name) VALUES (5, 'e')",
        "INSERT INTO patients (id, name) VALUES (6, 'f')",
    )
    lake.ack(Position(2, 2))
    audit.ack(Position(1, 1))
    assert [r["id"] for r in rows(audit)] == [6]
    assert lake.purge() == 1  # seq 1 is acknowledged by both
    assert [r["id"] for r in rows(audit)] == [6]
    assert rows(lake) == []


def test_schema_change_then_setup_captures_the_new_column(engine: sa.Engine) -> None:
    source = SqlTriggerChangeSource(engine, [SourceTable("patients")])
    source.setup()
    execute(
        engine, "INSERT INTO patients (id, name) VALUES (7, 'g')", "ALTER TABLE patients ADD COLUMN ward TEXT"
    )
    assert source.setup() is None
    execute(engine, "INSERT INTO patients (id, name, ward) VALUES (8, 'h', 'W1')")
    got = rows(source)
    assert [(r["id"], r["ward"]) for r in got] == [(7, None), (8, "W1")]


def test_column_added_without_setup_is_an_error_not_silent_nulls(engine: sa.Engine) -> None:
    # SQLite triggers list the columns when built: a change to a column added later is not captured.
    # Neither NULL nor carrying the previous value forward is right, so read refuses with what to do.
    source = SqlTriggerChangeSource(engine, ["patients"])
    source.setup()
    execute(
        engine,
        "ALTER TABLE patients ADD COLUMN ward TEXT",
        "INSERT INTO patients (id, name, ward) VALUES (8, 'h', 'W-secret')",
    )
    with pytest.raises(TriggerColumnsDrift, match=r"table 'patients'.*\['ward'\] are not captured") as raised:
        source.read(100)
    assert "setup()" in str(raised.value) and "W-secret" not in str(raised.value)
    assert source.setup() is None  # recreates the triggers with the new column list
    execute(engine, "UPDATE patients SET ward = 'W2' WHERE id = 8")
    assert [(r["id"], r["ward"]) for r in rows(source)] == [(8, None), (8, "W2")]


def test_renamed_column_is_drift_too(engine: sa.Engine) -> None:
    source = SqlTriggerChangeSource(engine, ["patients"])
    source.setup()
    execute(engine, "ALTER TABLE patients RENAME COLUMN notes TO remarks")
    with pytest.raises(TriggerColumnsDrift, match=r"\['remarks'\] are not captured.*\['notes'\] no longer"):
        source.read(100)
    source.setup()
    execute(engine, "UPDATE patients SET remarks = 'r' WHERE id = 1")
    assert rows(source)[0]["remarks"] == "r"


def test_close_releases_the_pooled_connections(engine: sa.Engine) -> None:
    source = SqlTriggerChangeSource(engine, ["patients"])
    source.setup()
    source.read(10)
    assert engine.pool.checkedin() > 0
    source.close()
    assert engine.pool.checkedin() == 0


def test_blob_in_a_text_column_does_not_break_the_application(engine: sa.Engine) -> None:
    source = SqlTriggerChangeSource(engine, ["patients"])
    source.setup()
    execute(engine, "INSERT INTO patients (id, name, notes) VALUES (9, 'i', x'41')")
    assert rows(source)[0]["notes"] == "41"  # hex text


def test_bad_log_rows_are_dead_letters(engine: sa.Engine) -> None:
    source = SqlTriggerChangeSource(engine, ["patients"])
    source.setup()
    execute(
        engine,
        "INSERT INTO _hybrid_cdc_log (table_name, op, row) VALUES ('patients', 'c', '{not json')",
        "INSERT INTO _hybrid_cdc_log (table_name, op, row) VALUES ('patients', 'c', '{\"id\": \"abc\"}')",
        "INSERT INTO _hybrid_cdc_log (table_name, op, row) VALUES ('patients', 'x', '{}')",
        "INSERT INTO _hybrid_cdc_log (table_name, op, row) VALUES ('other', 'c', '{}')",
        "INSERT INTO patients (id, name) VALUES (20, 'ok')",
    )
    batch = source.read(100)
    assert [(d.position, d.table) for d in batch.dead_letters] == [
        ("seq 1", "patients"),
        ("seq 2", "patients"),
        ("seq 3", "patients"),
    ]
    reasons = [d.reason for d in batch.dead_letters]
    assert "not valid JSON" in reasons[0] and "column 'id'" in reasons[1] and "unknown op 'x'" in reasons[2]
    # Reasons travel into exceptions and logs: column, position and type, never the value.
    assert "seq 2" in reasons[1] and "int64" in reasons[1] and "abc" not in reasons[1]
    assert batch.tables["patients"].rows.column("id").to_pylist() == [20]
    assert batch.ack_position == Position(5, 5)


def test_snapshot_reads_current_rows_in_chunks(engine: sa.Engine) -> None:
    execute(engine, *(f"INSERT INTO patients (id, name) VALUES ({i}, 'p{i}')" for i in range(2, 6)))
    source = SqlTriggerChangeSource(engine, ["patients"])
    hand_off = source.setup()
    assert hand_off == Position(0, 0)
    with source.open_copy() as copy:
        chunks = list(copy.rows(SourceTable("patients"), chunk_rows=2))
    assert copy.position == Position(0, 0)
    assert [c.count for c in chunks] == [2, 2, 1]
    first = chunks[0].rows.to_pylist()[0]
    assert first["__op"] == "r" and first["id"] == 1 and first["score"] == decimal.Decimal("1.50")
    assert first["seen"] == dt.datetime(2024, 1, 1, 10, 0, 0, 123456) and first["photo"] == b"\x00\xff"


def test_configured_keys_and_composite_key_change(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'k.db'}")
    execute(engine, "CREATE TABLE visits (site TEXT, n INTEGER, what TEXT)")
    source = SqlTriggerChangeSource(engine, [SourceTable("visits", ("site", "n"))])
    source.setup()
    execute(engine, "INSERT INTO visits VALUES ('a', 1, 'x')", "UPDATE visits SET n = 2 WHERE site = 'a'")
    batch = source.read(10)
    got = batch.tables["visits"].rows.to_pylist()
    assert batch.tables["visits"].key_columns == ["site", "n"]
    assert got[1]["__old_key"] == {"site": "a", "n": 1}


def test_rejects_unsupported_databases() -> None:
    with pytest.raises(ValueError, match="sqlite and postgresql"):
        SqlTriggerChangeSource(sa.create_mock_engine("mssql://", executor=print), ["t"])  # type: ignore[arg-type]


# --- PostgreSQL (embedded server from tests/fixtures/postgres.py) -------------------------------------------


@pytest.fixture
def pg_engine(pg_db: Any) -> Any:
    uri = pg_db.server.uri_for(pg_db.name).replace("postgresql://", "postgresql+psycopg2://", 1)
    engine = sa.create_engine(uri)
    execute(
        engine,
        "CREATE TABLE public.items (id INTEGER PRIMARY KEY, name TEXT, price NUMERIC(8, 2), at TIMESTAMPTZ)",
    )
    yield engine
    engine.dispose()


def test_postgres_interleaved_transactions_are_read_in_commit_order(pg_engine: sa.Engine) -> None:
    source = SqlTriggerChangeSource(pg_engine, ["public.items"])
    assert source.kind == "postgres"
    assert source.setup() == Position(0, 0)
    assert source.setup() is None
    early, late = pg_engine.raw_connection(), pg_engine.raw_connection()
    try:
        early.cursor().execute(  # starts first, gets seq 1, commits last
            "INSERT INTO public.items VALUES (1, 'early', 1.50, '2024-01-01T00:00:00+02:00')"
        )
        late.cursor().execute("INSERT INTO public.items VALUES (2, 'late', 2, NULL)")
        late.commit()
        first = source.read(100)
        got = first.tables["public.items"].rows.to_pylist()
        assert [(r["id"], r["__commit_pos"], r["__event_pos"]) for r in got] == [(2, 1, 2)]
        source.ack(first.ack_position)  # type: ignore[arg-type]
        early.commit()
    finally:
        early.close()
        late.close()
    second = source.read(100).tables["public.items"].rows.to_pylist()
    assert [(r["id"], r["__commit_pos"], r["__event_pos"]) for r in second] == [(1, 2, 1)]  # not lost
    assert second[0]["price"] == decimal.Decimal("1.50")
    assert second[0]["at"] == dt.datetime(2023, 12, 31, 22, 0, tzinfo=dt.UTC)
    assert isinstance(second[0]["__tx_id"], int)


def test_postgres_update_delete_and_key_change(pg_engine: sa.Engine) -> None:
    source = SqlTriggerChangeSource(pg_engine, ["public.items"])
    source.setup()
    execute(
        pg_engine,
        "INSERT INTO public.items (id, name) VALUES (1, 'a'), (2, 'b')",
        "UPDATE public.items SET id = 3 WHERE id = 2",
    )
    execute(
        pg_engine, "UPDATE public.items SET name = 'z' WHERE id = 1", "DELETE FROM public.items WHERE id = 3"
    )
    batch = source.read(100)
    got = batch.tables["public.items"].rows.to_pylist()
    assert [(r["__op"], r["id"], r["__old_key"]) for r in got] == [
        ("c", 1, None),
        ("c", 2, None),
        ("u", 3, {"id": 2}),
        ("u", 1, None),
        ("d", 3, None),
    ]
    assert [r["__commit_pos"] for r in got] == [1, 1, 1, 2, 2]
    with source.open_copy() as copy:  # REPEATABLE READ: the log position and the rows of one snapshot
        snap = list(copy.rows(SourceTable("public.items"), 10))
    assert snap[0].rows.column("name").to_pylist() == ["z"]
    assert copy.position == batch.ack_position


def test_copy_position_is_the_log_position_its_rows_include(engine: sa.Engine) -> None:
    source = SqlTriggerChangeSource(engine, ["patients"])
    source.setup()
    execute(
        engine,
        "INSERT INTO patients (id, name) VALUES (7, 'p7')",
        "UPDATE patients SET name = 'q' WHERE id = 7",
    )
    with source.open_copy() as copy:
        ids = [r["id"] for c in copy.rows(SourceTable("patients"), chunk_rows=10) for r in c.rows.to_pylist()]
    assert 7 in ids and copy.position == source.read(10).ack_position  # every logged change is in the copy
