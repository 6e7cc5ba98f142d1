"""DebeziumFileChangeSource on real JSON-lines files; the Kafka source's missing-dependency error."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hybrid_dagster.cdc.changes import OP_INSERT, SYSTEM_COLUMNS, ChangeBatch, Position
from hybrid_dagster.cdc.sink.collapse import after_position, last_position, order_changes
from hybrid_dagster.cdc.sources.base import SourceTable
from hybrid_dagster.cdc.sources.debezium.batch import BatchBuilder, file_ordinal, kafka_ordinal
from hybrid_dagster.cdc.sources.debezium.envelope import ParsedChange, parse_event
from hybrid_dagster.cdc.sources.debezium.files import DebeziumFileChangeSource
from hybrid_dagster.cdc.sources.debezium.kafka import DebeziumKafkaChangeSource
from hybrid_dagster.cdc.sources.debezium.offsets import JsonFileOffsetStore
from tests.conftest import SHARED_DIR

SAMPLES = SHARED_DIR / "debezium-samples"
MYSQL_BIN3 = 3 << 40


def one_line(name: str) -> str:
    """A sample file as one JSON line (JSON strings cannot hold raw newlines, so this keeps duplicates)."""
    return " ".join((SAMPLES / name).read_text(encoding="utf-8").splitlines())


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def pg(
    op: str, row: dict[str, Any] | None, lsn: int, *, before: dict[str, Any] | None = None, tx: int = 1
) -> str:
    source = {"schema": "public", "table": "t", "lsn": lsn, "sequence": json.dumps([str(lsn - 1), str(lsn)])}
    source["txId"] = tx
    return json.dumps({"op": op, "before": before, "after": row, "source": source, "ts_ms": 1})


def rows_of(batch: ChangeBatch, table: str) -> list[dict[str, Any]]:
    return batch.tables[table].rows.to_pylist()


def test_samples_directory_end_to_end(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write(
        inbox / "001.jsonl",
        [
            one_line("postgres-create.json"),
            one_line("postgres-transaction-begin.json"),
            one_line("postgres-update-toast-unavailable-value-payload-only.json"),
            one_line("postgres-delete.snippet.txt"),
            one_line("mysql-tutorial-tombstone-value.json"),
            "",
            one_line("postgres-message-payload-only.json"),
        ],
    )
    watch = (SAMPLES / "mysql-tutorial-watch-topic-key-value.txt").read_text(encoding="utf-8").splitlines()
    write(
        inbox / "002.jsonl", [one_line("sqlserver-create.json"), *watch, one_line("mysql-update.snippet.txt")]
    )
    source = DebeziumFileChangeSource(inbox)
    assert source.kind == "debezium" and source.setup() is None
    batch = source.read(1000)

    # inventory.customers came schemaless (TOAST sample); the watch-topic lines carry a schema, so the
    # batch ends before them.
    assert batch.ack_position == Position(1, 1) and batch.source_position is None
    assert sorted(batch.tables) == ["dbo.customers", "inventory.customers", "public.customers"]
    assert [(d.position, d.table) for d in batch.dead_letters] == [("001.jsonl:4", None)]
    assert "not valid JSON" in batch.dead_letters[0].reason
    assert batch.dead_letters[0].raw == one_line("postgres-delete.snippet.txt")

    public = batch.tables["public.customers"]
    assert public.rows.column_names[: len(SYSTEM_COLUMNS)] == list(SYSTEM_COLUMNS)
    summary = [
        (r["__op"], r["__commit_pos"], r["__event_pos"], r["__tx_id"])
        for r in rows_of(batch, "public.customers")
    ]
    assert summary == [("c", 24023119, 24023128, 555)]
    toast = rows_of(batch, "inventory.customers")
    assert toast[0]["__op"] == "u" and toast[0]["__commit_pos"] == 34650016
    assert toast[0]["__unchanged"] == ["biography"] and toast[0]["biography"] is None
    sqlserver = rows_of(batch, "dbo.customers")
    assert sqlserver[0]["id"] == 1005 and sqlserver[0]["email"] == "john.doe@example.org"

    source.ack(batch.ack_position)  # type: ignore[arg-type]
    rest = source.read(1000)
    assert rest.ack_position == rest.source_position == Position(1, 4)
    watch_rows = rows_of(rest, "inventory.customers")
    assert [r["id"] for r in watch_rows] == [1005, 1006]
    assert [(r["__commit_pos"], r["__event_pos"]) for r in watch_rows] == [
        (MYSQL_BIN3 | 1046, 0),
        (MYSQL_BIN3 | 1356, 0),
    ]
    assert [(d.position, "not valid JSON" in d.reason) for d in rest.dead_letters] == [("002.jsonl:4", True)]


def test_mixed_schemas_of_one_table_end_the_batch(tmp_path: Path) -> None:
    # inventory.customers arrives schemaless (TOAST sample) and with a schema (watch-topic lines).
    lines = [one_line("postgres-update-toast-unavailable-value-payload-only.json")]
    lines += (SAMPLES / "mysql-tutorial-watch-topic-key-value.txt").read_text(encoding="utf-8").splitlines()
    source = DebeziumFileChangeSource([write(tmp_path / "a.jsonl", lines)])
    first = source.read(100)
    assert first.ack_position == Position(0, 1) and first.tables["inventory.customers"].count == 1
    assert first.source_position is None  # stopped early: more to read
    assert source.read(100).ack_position == Position(0, 1)  # read never consumes
    source.ack(first.ack_position)
    second = source.read(100)
    assert second.ack_position == Position(0, 3)
    changes = second.tables["inventory.customers"]
    assert changes.key_columns == ["id"]  # from the event key
    assert changes.data_schema.field("id").type == pa.int32()


def test_key_value_record_layout_and_configured_keys(tmp_path: Path) -> None:
    value = json.loads(pg("c", {"id": 1, "name": "a"}, 10))
    lines = [
        json.dumps({"key": {"id": 1}, "value": value, "topic": "x", "partition": 0, "offset": 5}),
        json.dumps({"key": json.dumps({"id": 1}), "value": json.dumps(value)}),
        json.dumps({"key": {"id": 1}, "value": None}),  # tombstone
        json.dumps({"key": {"id": 1}, "value": "{oops"}),
    ]
    source = DebeziumFileChangeSource(
        [write(tmp_path / "kv.jsonl", lines)], tables=[SourceTable("public.t", ("name",))]
    )
    batch = source.read(100)
    assert batch.tables["public.t"].key_columns == ["name"]
    assert batch.tables["public.t"].count == 2
    assert (
        len(batch.dead_letters) == 1
        and "record value string is not valid JSON" in batch.dead_letters[0].reason
    )


def test_table_filter_skips_other_tables(tmp_path: Path) -> None:
    source = DebeziumFileChangeSource(
        [write(tmp_path / "a.jsonl", [one_line("postgres-create.json"), one_line("sqlserver-create.json")])],
        tables=["dbo.customers"],
    )
    assert list(source.read(100).tables) == ["dbo.customers"]


def test_every_op_and_key_change(tmp_path: Path) -> None:
    truncate = json.loads(pg("t", None, 50))
    del truncate["after"], truncate["before"]
    lines = [
        pg("c", {"id": 1, "v": "a"}, 10),
        pg("u", {"id": 2, "v": "b"}, 20, before={"id": 1, "v": "a"}),
        pg("d", None, 30, before={"id": 2, "v": None}),
        pg("r", {"id": 3, "v": "c"}, 40),
        json.dumps(truncate),
    ]
    source = DebeziumFileChangeSource(
        [write(tmp_path / "ops.jsonl", lines)], tables=[SourceTable("public.t", ("id",))]
    )
    rows = rows_of(source.read(100), "public.t")
    assert [r["__op"] for r in rows] == ["c", "u", "d", "r", "t"]
    assert rows[1]["__old_key"] == {"id": 1}
    assert rows[0]["__old_key"] is None and rows[2]["id"] == 2
    assert rows[4]["id"] is None
    # Snapshot reads get a distinct position just below their log position, ordered by line.
    assert (rows[3]["__commit_pos"], rows[3]["__event_pos"]) == (38, 4)


def test_bad_events_become_dead_letters_with_reasons(tmp_path: Path) -> None:
    lines = [
        "not json",
        '{"after": {"id": 1}, "source": {"table": "t", "lsn": 1}}',
        '{"op": "z", "after": {"id": 1}, "source": {"table": "t", "lsn": 1}}',
        '{"op": "c", "source": {"schema": "public", "table": "t", "lsn": 1}}',
        "\t".join(["{bad", "worse}"]),
    ]
    source = DebeziumFileChangeSource([write(tmp_path / "bad.jsonl", lines)])
    batch = source.read(100)
    reasons = [d.reason for d in batch.dead_letters]
    assert [d.position for d in batch.dead_letters] == [f"bad.jsonl:{i}" for i in range(1, 6)]
    assert "not valid JSON" in reasons[0]
    assert "missing 'op'" in reasons[1]
    assert "unknown op 'z'" in reasons[2]
    assert "needs an 'after' object" in reasons[3] and batch.dead_letters[3].table == "public.t"
    assert batch.ack_position == Position(0, 5) and not batch.tables


def test_invalid_utf8_line_is_a_dead_letter(tmp_path: Path) -> None:
    path = tmp_path / "bin.jsonl"
    path.write_bytes(b'{"op": "c", "after": {"id": "\xff"}}\n')
    batch = DebeziumFileChangeSource([path]).read(10)
    assert batch.dead_letters[0].reason == "line is not valid UTF-8"


def test_key_columns_missing_from_rows_are_dead_letters(tmp_path: Path) -> None:
    source = DebeziumFileChangeSource(
        [write(tmp_path / "a.jsonl", [pg("c", {"v": 1}, 10)])], tables=[SourceTable("public.t", ("id",))]
    )
    batch = source.read(10)
    assert not batch.tables and "key columns ['id']" in batch.dead_letters[0].reason


def test_read_ack_and_replay_give_stable_positions(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    write(inbox / "a.jsonl", [pg("c", {"id": i}, 10 * i) for i in range(1, 6)])
    offsets = tmp_path / "offsets" / "o.json"
    source = DebeziumFileChangeSource(inbox, offset_store=offsets)
    first = source.read(2)
    again = source.read(2)
    assert first.ack_position == Position(0, 2) and first.source_position is None
    assert first.tables["public.t"].rows.equals(again.tables["public.t"].rows)

    # Crash before ack: a new instance reads the same changes at the same positions.
    assert (
        DebeziumFileChangeSource(inbox, offset_store=offsets)
        .read(2)
        .tables["public.t"]
        .rows.equals(first.tables["public.t"].rows)
    )
    source.ack(first.ack_position)
    two_lines = len("".join(line + "\n" for line in [pg("c", {"id": i}, 10 * i) for i in (1, 2)]))
    assert JsonFileOffsetStore(offsets).load() == {
        "file_index": 0,
        "file": "a.jsonl",
        "line": 2,
        "byte": two_lines,
    }
    rest = DebeziumFileChangeSource(inbox, offset_store=offsets).read(100)
    assert [r["id"] for r in rows_of(rest, "public.t")] == [3, 4, 5]
    assert rest.ack_position == rest.source_position == Position(0, 5)
    source.ack(Position(0, 1))  # older than stored: ignored
    assert JsonFileOffsetStore(offsets).load()["line"] == 2  # type: ignore[index]

    # New file appended later (sorts after): reading continues there.
    source.ack(rest.ack_position)
    write(inbox / "b.jsonl", [pg("c", {"id": 6}, 60)])
    nxt = source.read(100)
    assert [r["id"] for r in rows_of(nxt, "public.t")] == [6] and nxt.ack_position == Position(1, 1)
    assert source.read(100).ack_position == Position(1, 1)
    source.ack(nxt.ack_position)
    empty = source.read(100)
    assert empty.empty and empty.ack_position is None and empty.source_position == Position(1, 1)


def test_offset_without_byte_position_counts_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", [pg("c", {"id": i}, 10 * i) for i in range(1, 4)])
    store = JsonFileOffsetStore(tmp_path / "off.json")
    store.save({"file_index": 0, "file": "a.jsonl", "line": 2})
    batch = DebeziumFileChangeSource([path], offset_store=store).read(100)
    assert [r["id"] for r in rows_of(batch, "public.t")] == [3]


def test_offset_naming_another_file_is_an_error(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    write(inbox / "b.jsonl", [pg("c", {"id": 1}, 10)])
    source = DebeziumFileChangeSource(inbox)
    source.ack(source.read(10).ack_position)  # type: ignore[arg-type]
    write(inbox / "a.jsonl", [pg("c", {"id": 0}, 5)])  # sorts before: indices shift
    with pytest.raises(ValueError, match="inserted"):
        source.read(10)


def test_partial_last_line_waits_for_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(pg("c", {"id": 1}, 10) + "\n" + pg("c", {"id": 2}, 20)[:30], encoding="utf-8")
    source = DebeziumFileChangeSource([path])
    batch = source.read(10)
    assert batch.ack_position == Position(0, 1) and not batch.dead_letters
    path.write_text(pg("c", {"id": 1}, 10) + "\n" + pg("c", {"id": 2}, 20), encoding="utf-8")
    assert source.read(10).ack_position == Position(0, 2)  # complete JSON without newline is read


def test_interleaved_transactions_keep_commit_order(tmp_path: Path) -> None:
    def ev(row_id: int, seq: list[str], tx: int) -> str:
        src = {"schema": "public", "table": "t", "lsn": int(seq[1]), "sequence": json.dumps(seq), "txId": tx}
        return json.dumps({"op": "c", "after": {"id": row_id}, "source": src})

    lines = [ev(2, ["50", "200"], 2), ev(1, ["250", "100"], 1), ev(3, ["250", "300"], 1)]
    rows = rows_of(DebeziumFileChangeSource([write(tmp_path / "a.jsonl", lines)]).read(10), "public.t")
    ordered = sorted(rows, key=lambda r: (r["__commit_pos"], r["__event_pos"]))
    assert [r["id"] for r in ordered] == [2, 1, 3]
    assert [r["id"] for r in sorted(rows, key=lambda r: r["__event_pos"])] == [1, 2, 3]  # LSN alone is wrong


def test_snapshot_reads_across_batches_have_increasing_positions(tmp_path: Path) -> None:
    lines = [
        one_line("mysql-engine-wasm-snapshot-read-payload-only.json").replace("1004", str(i))
        for i in range(4)
    ]
    source = DebeziumFileChangeSource([write(tmp_path / "snap.jsonl", lines)])
    first = source.read(2)
    source.ack(first.ack_position)  # type: ignore[arg-type]
    second = source.read(2)
    a, b = rows_of(first, "inventory.customers"), rows_of(second, "inventory.customers")
    last_first = max((r["__commit_pos"], r["__event_pos"]) for r in a)
    assert all((r["__commit_pos"], r["__event_pos"]) > last_first for r in b)
    assert all(r["__commit_pos"] == (MYSQL_BIN3 | 797) - 1 for r in a + b)


@pytest.mark.skipif(
    importlib.util.find_spec("confluent_kafka") is not None,
    reason="confluent_kafka is installed here, so the missing-library error cannot occur",
)
def test_kafka_source_without_confluent_kafka() -> None:
    with pytest.raises(ImportError, match=r"pip install 'hybrid-dagster\[kafka\]'"):
        DebeziumKafkaChangeSource("localhost:9092", ["t"], group_id="g")


line_strategy = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=80),
    st.sampled_from([one_line(p.name) for p in sorted(SAMPLES.glob("*.json*"))]),
    st.sampled_from([one_line(p.name) for p in sorted(SAMPLES.glob("*.snippet.txt"))]).map(lambda s: s[:120]),
    st.builds(
        lambda a, b: a[: len(a) // 2] + b,
        st.just(pg("c", {"id": 1}, 5)),
        st.text(
            alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=10
        ),
    ),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(line_strategy, min_size=1, max_size=12))
def test_random_files_never_raise(tmp_path: Path, lines: list[str]) -> None:
    path = write(tmp_path / "random.jsonl", lines)
    source = DebeziumFileChangeSource([path], offset_store=tmp_path / "o.json")
    batch = source.read(1000)
    assert batch.event_count + len(batch.dead_letters) <= len(lines)
    assert batch.ack_position == Position(0, len(lines)) or len(batch.tables) > 0


def snapshot_read(row_id: int) -> str:
    return json.dumps({"op": "r", "after": {"id": row_id}, "source": {"table": "t", "lsn": 100}})


def test_kafka_snapshot_reads_of_a_later_partition_are_not_below_the_watermark() -> None:
    # Kafka offsets count per partition: partition 1's offsets 0..4 must not fall at or below the
    # watermark left by partition 0's offsets 0..9 of the same snapshot.
    first = BatchBuilder("kafka://b/t#g", {"t": ["id"]})
    for offset in range(10):
        first.add(parse_event(snapshot_read(offset)), "raw", f"t[0]@{offset}", kafka_ordinal(0, offset))
    watermark = last_position(order_changes(first.build(Position(1, 10)).tables["t"].rows))
    second = BatchBuilder("kafka://b/t#g", {"t": ["id"]})
    for offset in range(5):
        second.add(
            parse_event(snapshot_read(100 + offset)), "raw", f"t[1]@{offset}", kafka_ordinal(1, offset)
        )
    rows = order_changes(second.build(Position(2, 5)).tables["t"].rows)
    assert after_position(rows, watermark).num_rows == 5
    positions = {(r["__commit_pos"], r["__event_pos"]) for r in rows.to_pylist()}
    assert len(positions) == 5 and all(p[0] == 99 for p in positions)
    assert kafka_ordinal(0, 5) != kafka_ordinal(1, 5)
    assert kafka_ordinal(1, 0) > kafka_ordinal(0, 2**48 - 1)
    assert kafka_ordinal(2**15 - 1, 2**48 - 1) < 2**63
    with pytest.raises(ValueError, match="offset"):
        kafka_ordinal(0, 2**48)
    with pytest.raises(ValueError, match="partition"):
        kafka_ordinal(2**15, 0)


def test_file_ordinals_keep_working_past_the_kafka_bit_split() -> None:
    # File indexes above 255 put bits above 2**48; file ordinals have their own layout and range.
    assert file_ordinal(300, 7) == (300 << 40) | 7
    assert file_ordinal(300, 7) < file_ordinal(300, 8) < file_ordinal(301, 1)
    with pytest.raises(ValueError, match="line"):
        file_ordinal(0, 2**40)


def test_values_that_do_not_fit_are_dead_letters_without_the_value() -> None:
    builder = BatchBuilder("debezium-file:///x", {"t": ["id"]})
    schema = pa.schema([("id", pa.int64()), ("small", pa.int8())])
    secret = 987654321
    for row_id, small in ((1, 5), (2, secret)):
        change = ParsedChange(
            "t", OP_INSERT, Position(10, row_id), {"id": row_id, "small": small}, data_schema=schema
        )
        builder.add(change, "raw payload", f"x:{row_id}")
    batch = builder.build(Position(0, 2))
    assert batch.tables["t"].count == 1
    [letter] = batch.dead_letters
    assert "'small' (int8)" in letter.reason and str(secret) not in letter.reason


def test_unconvertible_typed_values_do_not_quote_the_value() -> None:
    schema = {
        "type": "struct",
        "fields": [
            {"type": "struct", "field": "after", "fields": [{"type": "int32", "field": "c"}]},
            {"type": "struct", "field": "source", "fields": []},
        ],
    }
    for value in ("secret-ssn-123", 2**40):
        event = {
            "schema": schema,
            "payload": {"op": "c", "after": {"c": value}, "source": {"table": "t", "lsn": 1}},
        }
        result = parse_event(json.dumps(event))
        assert not isinstance(result, ParsedChange)
        assert "after.c (int32)" in result.reason and str(value) not in result.reason
