"""The columnar Debezium parser gives exactly what the per-event parser gives: the same tables (types,
column order, rows) and the same dead letters, on random event mixes with every quirk the per-event
parser handles, and on the Debezium project's own samples."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pyarrow as pa
import pytest

from hybrid_dagster.cdc.changes import ChangeBatch, Position
from hybrid_dagster.cdc.sources.debezium import columnar
from hybrid_dagster.cdc.sources.debezium.batch import BatchBuilder
from hybrid_dagster.cdc.sources.debezium.columnar import add_many, parse_many
from hybrid_dagster.cdc.sources.debezium.envelope import UNAVAILABLE_VALUE, parse_event
from tests.cdc.sources.debezium.test_envelope import SAMPLES

PLACEHOLDER = UNAVAILABLE_VALUE


def per_event(
    values: list[bytes | None], keys: list[bytes | None], key_columns: dict[str, list[str]]
) -> ChangeBatch:
    builder = BatchBuilder("kafka://t", key_columns, None, ordinal_positions=True)
    for i, (value, key) in enumerate(zip(values, keys, strict=True)):
        raw = value.decode("utf-8", errors="replace") if value is not None else ""
        assert builder.add(parse_event(value, key, placeholder=PLACEHOLDER), raw, f"t[0]@{i}", 1000 + i)
    return builder.build(ack_position=Position(1, len(values)))


def many(
    values: list[bytes | None],
    keys: list[bytes | None],
    key_columns: dict[str, list[str]],
    topics: list[list[int]] | None = None,
) -> ChangeBatch | None:
    builder = BatchBuilder("kafka://t", key_columns, None, ordinal_positions=True)
    ordinals = [1000 + i for i in range(len(values))]
    topics = topics or [list(range(len(values)))]
    if not add_many(builder, values, keys, ordinals, topics, lambda i: f"t[0]@{i}", PLACEHOLDER):
        return None
    return builder.build(ack_position=Position(1, len(values)))


def assert_same(
    values: list[bytes | None],
    keys: list[bytes | None],
    key_columns: dict[str, list[str]],
    topics: list[list[int]] | None = None,
) -> ChangeBatch:
    expected = per_event(values, keys, key_columns)
    got = many(values, keys, key_columns, topics)
    assert got is not None
    assert sorted(got.tables) == sorted(expected.tables)
    for name, table in expected.tables.items():
        mine = got.tables[name]
        assert mine.key_columns == table.key_columns, name
        assert mine.data_schema == table.data_schema, name
        assert mine.rows.schema == table.rows.schema, name
        assert mine.rows.to_pylist() == table.rows.to_pylist(), name
    assert got.dead_letters == expected.dead_letters
    return got


# --- random events ---------------------------------------------------------------------------------------


def _value(rng: random.Random, kind: str, n: int) -> Any:
    if kind == "int":
        return rng.choice([n, -n, 0, 2**62, None])
    if kind == "float":
        return rng.choice([n + 0.5, float(n), n, None])  # ints mixed with floats: float64
    if kind == "str":
        return rng.choice([f"s{n}", "", f"2020-01-0{n % 9 + 1}", "a\nb", "ünï", PLACEHOLDER, None])
    if kind == "bool":
        return rng.choice([True, False, None])
    if kind == "odd":  # values the columnar path hands back: nested, huge integers, mixed kinds
        return rng.choice([{"x": n}, [n], 2**70, f"s{n}", n, base64.b64encode(PLACEHOLDER.encode()).decode()])
    raise AssertionError(kind)


def _source(rng: random.Random, table: str, n: int, wild: bool) -> dict[str, Any]:
    source: dict[str, Any] = {"table": table, "schema": "public"}
    layouts = ["lsn"] * 8 + ["sequence", "bad-sequence", "ts", "none"]
    layout = rng.choice(layouts + (["mysql", "sqlserver"] if wild else []))
    if layout == "lsn":
        source["lsn"] = 100 + n
    elif layout == "sequence":
        source["sequence"] = rng.choice(
            [f'["{n}","{n + 1}"]', f"[null,{n}]", "[null,null]", "[01,2]", "[0, -0]"]
        )
        source["lsn"] = rng.choice([n, None])
    elif layout == "bad-sequence":
        source["sequence"] = rng.choice(["[1]", "nope", '["1", "x"]'])
    elif layout == "mysql":
        source.pop("schema")
        source["db"] = "inv"
        source.update(file=rng.choice(["mysql-bin.000003", "bin", "mysql-bin.12345678"]), pos=n, row=0)
    elif layout == "ts":
        source["ts_ms"] = rng.choice([1_700_000_000_000 + n, 0, -5])
    elif layout == "sqlserver":
        source.update(commit_lsn="00000025:00000d98:0002", change_lsn="00000025:00000d98:0002")
    if rng.random() < 0.5:
        source["txId"] = rng.choice([n, None, str(n)] if wild else [n, None])
    if rng.random() < 0.3:
        source[rng.choice(["ts_us", "ts_ms", "ts_sec"])] = rng.choice(
            [1_700_000_000_000_000, 1, 0, -1] + ([2**62] if wild else [])
        )
    return source


def random_events(
    rng: random.Random, count: int, kinds: dict[str, str], quirks: float
) -> tuple[list[bytes | None], list[bytes | None], list[list[int]]]:
    """Events of two tables, one topic each (their indexes are the third list): ``public.patients`` gets
    quirks that make dead letters or skips only; ``public.wards`` gets every quirk (events the per-event
    parser accepts but the columnar one does not)."""
    values: list[bytes | None] = []
    keys: list[bytes | None] = []
    topics: list[list[int]] = [[], []]
    for n in range(count):
        table = rng.choice(["patients", "wards"])
        topics[table == "wards"].append(n)
        wild = table == "wards"
        key = rng.randrange(50)
        row = {"id": key, **{c: _value(rng, k, n) for c, k in kinds.items() if wild or k != "odd"}}
        op = rng.choice(["c", "u", "u", "d", "r"])
        before = (
            {**row, "id": rng.choice([key, key, key + 1])}
            if op in ("u", "d") and rng.random() < 0.7
            else None
        )
        body: dict[str, Any] = {
            "op": op,
            "before": before,
            "after": row if op != "d" or (wild and rng.random() < 0.1) else None,
            "source": _source(rng, table, n, wild),
        }
        text = json.dumps(body)
        roll = rng.random() / quirks
        if roll < 0.1:
            text = text[:-3]  # cut short
        elif roll < 0.2:
            text = text.replace(f'"id": {key}', '"id": NaN', 1)
        elif roll < 0.3:
            text = json.dumps({"status": "BEGIN", "id": "571"})
        elif roll < 0.4:
            text = json.dumps({**body, "op": rng.choice(["m", "x", None])})
        elif roll < 0.5:
            text = "[1, 2]"
        elif roll < 0.6 and wild:
            text = json.dumps({"payload": body})
        elif roll < 0.7 and wild:
            text = text.replace('"op"', '"op": "c", "op"', 1)  # a duplicate key: the last one wins
        elif roll < 0.8 and wild:
            text = json.dumps(body, indent=1)  # line breaks inside
        elif roll < 0.9 and wild:
            text = json.dumps({**body, "op": "t"})
        value: bytes | None = text.encode()
        if rng.random() < quirks / 3:
            value = rng.choice([None, b"", b"  ", b"\xff{}"])
        values.append(value)
        key_roll = rng.random() / quirks
        if key_roll < 0.1:
            keys.append(None)
        elif key_roll < 0.2:
            keys.append(b"not json")
        elif key_roll < 0.3:
            keys.append(b"[1]")
        elif key_roll < 0.4 and wild:
            keys.append(json.dumps({"payload": {"id": key}}).encode())
        else:
            keys.append(json.dumps({"id": key}).encode())
    return values, keys, topics


KINDS = [
    {"name": "str", "score": "float", "ward": "int", "active": "bool"},
    {"name": "str", "ward": "int"},
    {"name": "str", "extra": "odd"},
]


@pytest.mark.parametrize("seed", range(8))
def test_random_event_mixes_parse_exactly_as_one_by_one(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    if seed % 3 == 0:  # many blocks: pyarrow infers types per block, then unifies them
        monkeypatch.setattr(columnar, "_BLOCK_BYTES", 2048)
    rng = random.Random(seed)
    quirks = [0.02, 0.1, 0.5, 1.0][seed % 4]
    values, keys, topics = random_events(rng, 400, KINDS[seed % len(KINDS)], quirks)
    key_columns = {"public.patients": ["id"]} if seed % 2 else {}
    batch = assert_same(values, keys, key_columns, topics)
    assert_same(values, keys, key_columns)  # both tables in one topic
    if quirks <= 0.1:  # the table with dead letters only is built many at once
        patients = topics[0]
        parsed = parse_many(
            [values[i] for i in patients],
            [keys[i] for i in patients],
            patients,
            key_columns=key_columns,
            tables=None,
            placeholder=PLACEHOLDER,
        )
        assert parsed is not None and "public.patients" in parsed.tables
        assert batch.dead_letters


@pytest.mark.parametrize("seed", range(4))
def test_clean_events_take_the_columnar_path(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Well-formed schemaless events are not handed back one by one (the point of the parser)."""
    if seed % 2:
        monkeypatch.setattr(columnar, "_BLOCK_BYTES", 4096)
    rng = random.Random(100 + seed)
    values, keys = [], []
    for n in range(300):
        key = rng.randrange(40)
        op = rng.choice(["c", "u", "d"])
        row = {
            "id": key,
            "name": rng.choice([f"n{n}", PLACEHOLDER, None]),
            "score": n / 3,
            "day": "2024-01-02",
        }
        before = {**row, "id": key + (n % 7 == 0)} if op != "c" else None
        source = {
            "schema": "public",
            "table": "patients",
            "lsn": n,
            "txId": n,
            "ts_ms": 1_700_000_000_000 + n,
        }
        if n % 2:
            source["sequence"] = f'["{n}","{n + 1}"]'
        body = {"op": op, "before": before, "after": None if op == "d" else row, "source": source}
        values.append(json.dumps(body).encode())
        keys.append(json.dumps({"id": key}).encode())
    parsed = parse_many(values, keys, list(range(300)), key_columns={}, tables=None, placeholder=PLACEHOLDER)
    assert parsed is not None and parsed.slow == [] and parsed.counts == {"public.patients": 300}
    batch = assert_same(values, keys, {})
    rows = batch.tables["public.patients"].rows
    assert rows.schema.field("day").type == pa.string()  # ISO dates stay text, as one by one
    assert rows.column("__old_key").null_count < 300  # key-changing updates carry their old key


def test_column_types_come_from_the_images_that_become_rows() -> None:
    """A before-image is a row only for deletes: an update's before-image must not type a column, and a
    delete's after-image must not add one."""
    source = {"schema": "public", "table": "t", "lsn": 1}
    events = [
        {"op": "c", "before": None, "after": {"id": 1, "x": None}, "source": source},
        {"op": "u", "before": {"id": 1, "x": 1.5}, "after": {"id": 1, "x": None}, "source": source},
        {"op": "d", "before": {"id": 1, "x": None}, "after": None, "source": source},
    ]
    values: list[bytes | None] = [json.dumps(e).encode() for e in events]
    batch = assert_same(values, [None] * 3, {"public.t": ["id"]})
    assert batch.tables["public.t"].data_schema.field("x").type == pa.string()  # all null: text
    events[2]["after"] = {"id": 1, "x": None, "extra": 5}
    values = [json.dumps(e).encode() for e in events]
    batch = assert_same(values, [None] * 3, {"public.t": ["id"]})
    assert "extra" not in batch.tables["public.t"].data_schema.names


def test_unchanged_columns_keep_each_rows_key_order() -> None:
    source = {"schema": "public", "table": "t", "lsn": 1}
    after = [{"id": 1, "a": PLACEHOLDER, "b": PLACEHOLDER}, {"id": 2, "b": PLACEHOLDER, "a": PLACEHOLDER}]
    values: list[bytes | None] = [
        json.dumps({"op": "u", "after": row, "source": source}).encode() for row in after
    ]
    batch = assert_same(values, [None, None], {"public.t": ["id"]})
    assert batch.tables["public.t"].rows.column("__unchanged").to_pylist() == [["a", "b"], ["b", "a"]]


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_debezium_samples_parse_exactly_as_one_by_one(path: Any) -> None:
    compact = json.dumps(json.loads(path.read_text(encoding="utf-8"))).encode()
    values: list[bytes | None] = [compact, compact]
    keys: list[bytes | None] = [None, None]
    if per_event(values, keys, {}).tables and b'"schema": {' in compact:
        assert many(values, keys, {}) is None  # a Kafka Connect schema: the batch goes one by one
        return
    assert_same(values, keys, {})


def test_schema_events_leave_the_batch_to_the_per_event_parser() -> None:
    body = {
        "schema": {"type": "struct", "fields": [{"field": "after", "type": "struct", "fields": []}]},
        "payload": {"op": "c", "after": {}, "source": {"table": "t", "lsn": 1}},
    }
    assert many([json.dumps(body).encode()], [None], {}) is None


TOKENS = [
    "null", "true", "false", "0", "-0", "1.0", "1e5", "1E2", "0.1", "12345678901234567890",
    "-9223372036854775808", "9007199254740993", '"x"', '""', '"\\u00e9"', '"\\ud83d\\ude00"', "{}", "[]",
    "[1]", '{"a":1}', '"2020-01-01"', '"2020-01-01T00:00:00Z"', f'"{PLACEHOLDER}"', '"123"', '"-5"', '"  7"',
]  # fmt: skip


def _mutated(rng: random.Random, body: dict[str, Any]) -> str:
    """``body`` as JSON with one field, anywhere, replaced by a JSON token of another kind."""
    paths: list[list[str]] = []

    def walk(node: Any, path: list[str]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                paths.append([*path, key])
                walk(value, [*path, key])

    walk(body, [])
    path = rng.choice(paths)
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "\x00TOKEN\x00"
    return json.dumps(body).replace('"\\u0000TOKEN\\u0000"', rng.choice(TOKENS))


def test_events_with_one_field_of_another_kind_parse_exactly_as_one_by_one() -> None:
    rng = random.Random(200)
    for _ in range(60):
        values: list[bytes | None] = []
        keys: list[bytes | None] = []
        for n in range(rng.randrange(5, 40)):
            key, op = rng.randrange(20), rng.choice("cudr")
            row = {"id": key, "name": f"n{n}", "score": n / 3, "flag": n % 2 == 0, "day": "x"}
            source = {"schema": "public", "table": "t", "lsn": n, "txId": n, "ts_ms": 1_700_000_000_000 + n}
            if rng.random() < 0.3:
                source["sequence"] = f'["{n}","{n + 1}"]'
            body = {
                "op": op,
                "before": dict(row) if op in "ud" else None,
                "after": None if op == "d" else row,
                "source": source,
            }
            text = _mutated(rng, body) if rng.random() < 0.05 else json.dumps(body)
            values.append(text.encode())
            keys.append(json.dumps({"id": key}).encode() if rng.random() < 0.9 else None)
        assert_same(values, keys, {"public.t": ["id"]} if rng.random() < 0.5 else {})
