"""Debezium envelope parsing: the Debezium project's own published events, quirks included."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hybrid_dagster.cdc.changes import Position
from hybrid_dagster.cdc.sources.debezium.envelope import (
    Malformed,
    ParsedChange,
    Skipped,
    decode_json,
    infer_schema,
    pack_sqlserver_lsn,
    parse_envelope,
    parse_event,
)
from tests.conftest import SHARED_DIR

SAMPLES = SHARED_DIR / "debezium-samples"
UTC = dt.UTC
MYSQL_BIN3 = 3 << 40


def sample(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


def change(result: object) -> ParsedChange:
    assert isinstance(result, ParsedChange), result
    return result


# --- every parseable sample ---------------------------------------------------------------------------------

EXPECTED_CHANGES: dict[str, tuple[str, str, Position]] = {
    "postgres-create.json": ("c", "public.customers", Position(24023119, 24023128)),
    "postgres-create-zonedtimestamp-payload-only.json": (
        "c",
        "public.customers",
        Position(24023119, 24023128),
    ),
    "postgres-update-toast-unavailable-value-payload-only.json": (
        "u",
        "inventory.customers",
        Position(34650016, 34650016),
    ),
    "mysql-create.json": ("c", "inventory.customers", Position(MYSQL_BIN3 | 154, 0)),
    "mysql-engine-wasm-snapshot-read-payload-only.json": (
        "r",
        "inventory.customers",
        Position(MYSQL_BIN3 | 797, 0),
    ),
    "mysql-engine-wasm-update-payload-only.json": (
        "u",
        "inventory.customers",
        Position(MYSQL_BIN3 | 1041, 0),
    ),
    "mysql-tutorial-snapshot-read.json": ("r", "inventory.customers", Position(MYSQL_BIN3 | 154, 0)),
    "serde-update.json": ("u", "inventory.customers", Position(MYSQL_BIN3 | 154, 0)),
    "serde-with-schema.json": ("c", "inventory.customers", Position(MYSQL_BIN3 | 154, 0)),
    "serde-without-schema.json": ("c", "inventory.customers", Position(MYSQL_BIN3 | 154, 0)),
    "sqlserver-create.json": (
        "c",
        "dbo.customers",
        Position(pack_sqlserver_lsn("00000027:00000758:0005"), ((2**50 - 1 - 2) << 12) | 1),
    ),
}
EXPECTED_SKIPS = {
    "postgres-message-payload-only.json": "op 'm'",
    "postgres-transaction-begin.json": "BEGIN",
    "postgres-transaction-end.json": "END",
    "mysql-transaction-end.json": "END",
    "mysql-tutorial-tombstone-value.json": "tombstone",
}


def test_every_json_sample_is_covered() -> None:
    assert {p.name for p in SAMPLES.glob("*.json")} == set(EXPECTED_CHANGES) | set(EXPECTED_SKIPS)


@pytest.mark.parametrize("name", sorted(EXPECTED_CHANGES))
def test_sample_changes(name: str) -> None:
    op, table, position = EXPECTED_CHANGES[name]
    parsed = change(parse_event(sample(name)))
    assert (parsed.op, parsed.table, parsed.position) == (op, table, position)
    assert parsed.row["id"] in (1, 1001, 1004, 1005)


@pytest.mark.parametrize("name", sorted(EXPECTED_SKIPS))
def test_sample_skips(name: str) -> None:
    result = parse_event(sample(name))
    assert isinstance(result, Skipped), result
    assert EXPECTED_SKIPS[name] in result.reason


def test_postgres_create_details() -> None:
    parsed = change(parse_event(sample("postgres-create.json")))
    assert parsed.tx_id == 555
    assert parsed.commit_ts == dt.datetime(2019, 5, 28, 8, 58, 24, 863123, tzinfo=UTC)  # source.ts_us
    assert parsed.data_schema == pa.schema(
        [("id", pa.int32()), ("first_name", pa.string()), ("last_name", pa.string()), ("email", pa.string())]
    )
    assert parsed.row == {
        "id": 1,
        "first_name": "Anne",
        "last_name": "Kretchmar",
        "email": "annek@noanswer.org",
    }


def test_postgres_message_sequence_is_a_string_of_two_lsns() -> None:
    # The op 'm' event is skipped, but its sequence string must parse as the position it carries.
    from hybrid_dagster.cdc.sources.debezium.envelope import event_position

    source = json.loads(sample("postgres-message-payload-only.json"))["source"]
    assert source["sequence"] == '["26997744","26997904"]'
    assert event_position(source) == Position(26997744, 26997904)


def test_toast_placeholder_goes_to_unchanged() -> None:
    parsed = change(parse_event(sample("postgres-update-toast-unavailable-value-payload-only.json")))
    assert parsed.unchanged == ("biography",)
    assert parsed.row["biography"] is None
    assert parsed.row["first_name"] == "Dana"
    assert parsed.tx_id == 627


def test_mysql_update_keeps_before_and_legacy_ts_sec() -> None:
    parsed = change(parse_event(sample("mysql-engine-wasm-update-payload-only.json")))
    assert parsed.before is not None and parsed.before["first_name"] == "Sally"
    assert parsed.row["first_name"] == "Sarah"
    assert parsed.commit_ts == dt.datetime.fromtimestamp(1731327659, tz=UTC)
    assert parsed.old_key(["id"]) is None  # same key before and after
    tutorial = change(parse_event(sample("mysql-tutorial-snapshot-read.json")))
    assert tutorial.commit_ts is None  # ts_sec 0 means unknown


def test_sqlserver_duplicate_keys_last_wins() -> None:
    decoded = decode_json(sample("sqlserver-create.json"))
    assert decoded["payload"]["ts_ms"] == 1559729471739876149
    parsed = change(parse_event(sample("sqlserver-create.json")))
    assert parsed.commit_ts == dt.datetime(2019, 6, 5, 10, 11, 8, 470000, tzinfo=UTC)


def test_zoned_timestamp_stays_text_without_schema() -> None:
    parsed = change(parse_event(sample("postgres-create-zonedtimestamp-payload-only.json")))
    assert parsed.data_schema is None
    assert parsed.row["created_at"] == "2011-01-11T16:40:30.123456789+00:00"


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.snippet.txt")), ids=lambda p: p.name)
def test_snippets_are_malformed(path: Path) -> None:
    result = parse_event(path.read_text(encoding="utf-8"))
    assert isinstance(result, Malformed)
    assert "not valid JSON" in result.reason


# --- ordering ---------------------------------------------------------------------------------------------


def pg_event(op: str, row: dict[str, Any], sequence: list[str | None] | None, lsn: int, tx: int) -> str:
    source: dict[str, Any] = {"connector": "postgresql", "db": "d", "schema": "s", "table": "t", "lsn": lsn}
    source["txId"] = tx
    if sequence is not None:
        source["sequence"] = json.dumps(sequence)
    return json.dumps({"op": op, "before": None, "after": row, "source": source, "ts_ms": 1})


def test_interleaved_postgres_transactions_order_by_commit_then_event() -> None:
    # T1 starts first (LSN 100) but commits after T2 (commit LSN 250); Debezium delivers T2 first.
    # sequence = [last commit LSN, event LSN]: LSN order (100, 200, 300) is not commit order.
    t2 = pg_event("c", {"id": 2}, ["50", "200"], 200, tx=2)
    t1a = pg_event("c", {"id": 1}, ["250", "100"], 100, tx=1)
    t1b = pg_event("u", {"id": 1}, ["250", "300"], 300, tx=1)
    parsed = [change(parse_event(e)) for e in (t1b, t1a, t2)]
    ordered = sorted(parsed, key=lambda p: p.position)
    assert [(p.tx_id, p.op) for p in ordered] == [(2, "c"), (1, "c"), (1, "u")]
    assert sorted(parsed, key=lambda p: p.row["id"] if p.op == "c" else 9)[0].position > ordered[0].position


def test_postgres_sequence_with_null_commit_uses_event_lsn() -> None:
    parsed = change(parse_event(pg_event("r", {"id": 1}, [None, "23760688"], 23760688, tx=1)))
    assert parsed.position == Position(23760688, 23760688)


def test_sqlserver_positions_order_commit_then_change_then_serial() -> None:
    def ev(commit: str, change_lsn: str, serial: str) -> ParsedChange:
        source = {"db": "d", "schema": "dbo", "table": "t", "commit_lsn": commit, "change_lsn": change_lsn}
        source["event_serial_no"] = serial
        return change(parse_envelope({"op": "c", "after": {"id": 1}, "source": source}))

    events = [
        ev("00000027:00000ac0:0007", "00000027:00000ac0:0002", "2"),
        ev("00000027:00000ac0:0007", "00000027:00000ac0:0002", "1"),
        ev("00000027:00000758:0005", "00000027:00000758:0003", "1"),
        ev("00000027:00000ac0:0007", "00000027:00000758:0009", "1"),  # changed earlier, committed later
    ]
    ordered = sorted(events, key=lambda p: p.position)
    assert ordered == [events[2], events[3], events[1], events[0]]


def test_sqlserver_lsn_out_of_range_is_malformed() -> None:
    source = {"db": "d", "schema": "dbo", "table": "t", "commit_lsn": "ffffffff:00000001:0001"}
    result = parse_envelope({"op": "c", "after": {"id": 1}, "source": source})
    assert isinstance(result, Malformed) and "packable range" in result.reason


def test_ts_ms_fallback_position() -> None:
    parsed = change(parse_envelope({"op": "c", "after": {"a": 1}, "source": {"table": "t", "ts_ms": 5}}))
    assert parsed.position == Position(5, 0) and parsed.position_from == "ts_ms"
    no_position = parse_envelope({"op": "c", "after": {"a": 1}, "source": {"table": "t"}})
    assert isinstance(no_position, Malformed) and "no position" in no_position.reason


# --- tombstones, ops, malformed ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [None, "", "  \n", "null", '{"schema": null, "payload": null}', b"", "{}"[:0]]
)
def test_tombstones_are_skipped(value: str | bytes | None) -> None:
    result = parse_event(value, key='{"id": 1}')
    assert isinstance(result, Skipped) and "tombstone" in result.reason


def test_truncate_has_no_row() -> None:
    src = {"db": "postgres", "schema": "public", "table": "customers", "txId": 556, "lsn": 46523128}
    parsed = change(parse_envelope({"payload": {"source": src, "op": "t", "ts_ms": 1}, "schema": None}))
    assert (parsed.op, parsed.row, parsed.table) == ("t", {}, "public.customers")


def test_delete_uses_before_or_key() -> None:
    src = {"db": "d", "table": "t", "file": "bin.000001", "pos": 4, "row": 1}
    parsed = change(parse_envelope({"op": "d", "before": {"id": 7, "x": 1}, "after": None, "source": src}))
    assert parsed.row == {"id": 7, "x": 1} and parsed.position == Position((1 << 40) | 4, 1)
    keyed = change(parse_envelope({"op": "d", "before": None, "source": src}, {"id": 7}))
    assert keyed.row == {"id": 7}
    keyless = parse_envelope({"op": "d", "before": None, "source": src})
    assert isinstance(keyless, Malformed) and "'d'" in keyless.reason


def test_key_change_gives_old_key() -> None:
    src = {"db": "d", "table": "t", "lsn": 9}
    parsed = change(
        parse_envelope({"op": "u", "before": {"id": 1, "v": 0}, "after": {"id": 2, "v": 0}, "source": src})
    )
    assert parsed.old_key(["id"]) == {"id": 1}
    assert parsed.old_key([]) is None


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ('{"op": "c", "source": {"table": "t", "lsn": 1}}', "needs an 'after' object"),
        ('{"op": "u", "after": [1], "source": {"table": "t", "lsn": 1}}', "needs an 'after' object"),
        ('{"op": "x", "after": {}, "source": {"table": "t", "lsn": 1}}', "unknown op 'x'"),
        ('{"after": {"id": 1}, "source": {"table": "t", "lsn": 1}}', "missing 'op'"),
        ('{"op": "c", "after": {"id": 1}}', "missing 'source'"),
        ('{"op": "c", "after": {"id": 1}, "source": {"lsn": 1}}', "source.table"),
        ('{"op": "c", "after": {"id": 1}, "source": {"table": "t", "sequence": "[1]"}}', "two-element"),
        ('{"op": "c", "after": {"id": 1}, "source": {"table": "t", "lsn": "zz"}}', "source.lsn"),
        ('{"op": "c", "after": {"id": 1}, "source": {"table": "t", "file": "x", "pos": 1}}', "binlog file"),
        ("[1, 2]", "not an object"),
        ('{"op": "c", "after": {"id": NaN}, "source": {"table": "t", "lsn": 1}}', "NaN"),
        ("{" * 100_000, "not valid JSON"),
    ],
)
def test_malformed_reasons(value: str, needle: str) -> None:
    result = parse_event(value)
    assert isinstance(result, Malformed), result
    assert needle in result.reason


# --- types ------------------------------------------------------------------------------------------------


def with_schema(fields: list[dict[str, Any]], after: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": {
            "type": "struct",
            "fields": [
                {"type": "struct", "fields": fields, "optional": True, "field": "before"},
                {"type": "struct", "fields": fields, "optional": True, "field": "after"},
            ],
        },
        "payload": {
            "op": "c",
            "before": None,
            "after": after,
            "source": {"schema": "s", "table": "t", "lsn": 1},
        },
    }


def b64_int(value: int, length: int = 8) -> str:
    return base64.b64encode(value.to_bytes(length, "big", signed=True)).decode()


TYPED_FIELDS: list[dict[str, Any]] = [
    {"type": "int8", "field": "i8"},
    {"type": "int16", "field": "i16"},
    {"type": "int32", "field": "i32"},
    {"type": "int64", "field": "i64"},
    {"type": "float32", "field": "f32"},
    {"type": "float64", "field": "f64"},
    {"type": "boolean", "field": "b"},
    {"type": "string", "field": "s"},
    {"type": "bytes", "field": "raw"},
    {"type": "int32", "name": "io.debezium.time.Date", "field": "day"},
    {"type": "int64", "name": "io.debezium.time.Timestamp", "field": "ts_ms"},
    {"type": "int64", "name": "io.debezium.time.MicroTimestamp", "field": "ts_us"},
    {"type": "string", "name": "io.debezium.time.ZonedTimestamp", "field": "zoned"},
    {
        "type": "bytes",
        "name": "org.apache.kafka.connect.data.Decimal",
        "parameters": {"scale": "2", "connect.decimal.precision": "10"},
        "field": "price",
    },
    {"type": "struct", "name": "io.debezium.data.VariableScaleDecimal", "field": "num", "fields": []},
    {"type": "string", "name": "io.debezium.data.Json", "field": "doc"},
    {"type": "string", "name": "io.debezium.data.Uuid", "field": "uid"},
    {"type": "array", "items": {"type": "string"}, "field": "tags"},
    {"type": "string", "field": "bio"},
]
TYPED_AFTER = {
    "i8": -5,
    "i16": 300,
    "i32": 70000,
    "i64": 2**40,
    "f32": 1.5,
    "f64": "NaN",
    "b": True,
    "s": "x",
    "raw": base64.b64encode(b"\x00\xff").decode(),
    "day": 18000,
    "ts_ms": 1_559_033_904_863,
    "ts_us": 1_559_033_904_863_123,
    "zoned": "2011-01-11T16:40:30.123456789+02:00",
    "price": b64_int(-12345),
    "num": {"scale": 3, "value": b64_int(1234567)},
    "doc": '{"a": 1}',
    "uid": "7f1c3e4a-0000-4000-8000-000000000001",
    "tags": ["__debezium_unavailable_value"],
    "bio": "__debezium_unavailable_value",
}


def test_logical_types_map_to_arrow() -> None:
    parsed = change(parse_envelope(with_schema(TYPED_FIELDS, TYPED_AFTER)))
    schema = parsed.data_schema
    assert schema is not None
    expected = {
        "i8": pa.int8(),
        "i16": pa.int16(),
        "i32": pa.int32(),
        "i64": pa.int64(),
        "f32": pa.float32(),
        "f64": pa.float64(),
        "b": pa.bool_(),
        "raw": pa.binary(),
        "day": pa.date32(),
        "ts_ms": pa.timestamp("ms"),
        "ts_us": pa.timestamp("us"),
        "zoned": pa.timestamp("us", tz="UTC"),
        "price": pa.decimal128(10, 2),
        "num": pa.string(),
        "doc": pa.string(),
        "uid": pa.string(),
        "tags": pa.list_(pa.string()),
    }
    assert {name: schema.field(name).type for name in expected} == expected
    row = parsed.row
    assert row["day"] == dt.date(2019, 4, 14)
    assert row["ts_us"] == dt.datetime(2019, 5, 28, 8, 58, 24, 863123)
    assert row["zoned"] == dt.datetime(2011, 1, 11, 14, 40, 30, 123456, tzinfo=UTC)
    assert row["price"] == decimal.Decimal("-123.45")
    assert row["num"] == "1234.567"
    assert row["raw"] == b"\x00\xff"
    assert parsed.unchanged == ("tags", "bio") and row["tags"] is None and row["bio"] is None
    table = pa.Table.from_pylist([row], schema=schema)  # the values fit their declared types
    assert table.column("f64").to_pylist()[0] != table.column("f64").to_pylist()[0]  # NaN


def test_binary_placeholder_is_detected_in_base64() -> None:
    placeholder = base64.b64encode(b"__debezium_unavailable_value").decode()
    parsed = change(parse_envelope(with_schema([{"type": "bytes", "field": "blob"}], {"blob": placeholder})))
    assert parsed.unchanged == ("blob",) and parsed.row["blob"] is None


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ({"type": "int32", "field": "c"}, "abc", "after.c (int32): expected an integer"),
        ({"type": "int8", "field": "c"}, 1000, "does not fit"),
        ({"type": "bytes", "field": "c"}, "***", "invalid base64"),
        (
            {"type": "string", "name": "io.debezium.time.ZonedTimestamp", "field": "c"},
            "yesterday",
            "ISO-8601",
        ),
        ({"type": "geometry", "field": "c"}, 1, "unknown Kafka Connect type"),
        (
            {
                "type": "bytes",
                "name": "org.apache.kafka.connect.data.Decimal",
                "parameters": {"scale": "0", "connect.decimal.precision": "2"},
                "field": "c",
            },
            b64_int(12345),
            "more than 2 digits",
        ),
    ],
)
def test_unparseable_typed_values_are_malformed(field: dict[str, Any], value: Any, needle: str) -> None:
    result = parse_envelope(with_schema([field], {"c": value}))
    assert isinstance(result, Malformed) and needle in result.reason
    assert str(value) not in result.reason  # reasons travel into logs: never the row's values
    assert result.table == "s.t"


def test_schemaless_inference_is_consistent() -> None:
    rows: list[dict[str, Any]] = [
        {"a": 1, "b": 1, "c": None, "d": True, "e": {"x": 1}},
        {"a": 2, "b": 2.5, "c": None, "d": False, "e": "s"},
    ]
    schema, coerced = infer_schema(rows)
    assert schema == pa.schema(
        [("a", pa.int64()), ("b", pa.float64()), ("c", pa.string()), ("d", pa.bool_()), ("e", pa.string())]
    )
    assert coerced[0]["b"] == 1.0 and coerced[0]["e"] == '{"x": 1}'
    assert infer_schema(list(reversed(rows)))[0] == schema


# --- property-based: never raises ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
ENVELOPE_KEYS = ["op", "before", "after", "source", "payload", "schema", "status", "id", "ts_ms"]
SOURCE_KEYS = [
    "table",
    "schema",
    "db",
    "lsn",
    "sequence",
    "file",
    "pos",
    "row",
    "commit_lsn",
    "change_lsn",
    "txId",
]


def assert_result(result: object) -> None:
    assert isinstance(result, ParsedChange | Skipped | Malformed)
    if isinstance(result, Malformed):
        assert result.reason


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_random_bytes_never_raise(value: bytes | str) -> None:
    assert_result(parse_event(value, key=value))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, json_values)
def test_random_json_never_raises(value: Any, key: Any) -> None:
    assert_result(parse_envelope(value, key))
    assert_result(parse_event(json.dumps(value), json.dumps(key)))


BASE_EVENTS = [
    json.loads(sample(n)) for n in ("postgres-create.json", "sqlserver-create.json", "mysql-create.json")
] + [
    json.loads(sample("serde-update.json")),
    json.loads(sample("postgres-update-toast-unavailable-value-payload-only.json")),
]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(range(len(BASE_EVENTS))),
    st.lists(
        st.tuples(st.sampled_from(ENVELOPE_KEYS + SOURCE_KEYS + ["id", "fields", "type"]), json_values),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
)
def test_mutated_envelopes_never_raise(index: int, mutations: list[tuple[str, Any]], drop: bool) -> None:
    event = json.loads(json.dumps(BASE_EVENTS[index]))
    payload = event.get("payload", event)
    for name, value in mutations:
        target = (
            payload["source"] if name in SOURCE_KEYS and isinstance(payload.get("source"), dict) else payload
        )
        if name in ("fields", "type") and isinstance(event.get("schema"), dict):
            target = event["schema"]["fields"][1] if drop else event["schema"]
        if drop and name in target:
            del target[name]
        else:
            target[name] = value
    assert_result(parse_envelope(event))
