"""pgoutput binary transfer: the same rows as text mode (real server), malformed values, the fallback."""

from __future__ import annotations

import io
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pyarrow as pa
import pytest

from hybrid_dagster.cdc.changes import ChangeBatch
from hybrid_dagster.cdc.sources.base import SourceTable
from hybrid_dagster.cdc.sources.postgres import pgoutput
from hybrid_dagster.cdc.sources.postgres.binary import (
    BINARY_TYPES,
    MIN_SERVER_VERSION,
    decode_binary,
    use_binary,
)
from hybrid_dagster.cdc.sources.postgres.pgoutput import PgOutputDecoder
from hybrid_dagster.cdc.sources.postgres.source import PostgresChangeSource
from hybrid_dagster.cdc.sources.postgres.types import (
    BOOL,
    DATE,
    FLOAT8,
    INT4,
    INT8,
    JSONB,
    NUMERIC,
    TEXT,
    TIMESTAMPTZ,
    UUID,
    PgColumn,
    build_table_changes,
    pg_float_text,
)
from hybrid_dagster.errors import BinaryFormatUnsupported, DecoderError
from tests.cdc.sources.postgres.test_pgoutput import SOURCE, begin, commit, relation
from tests.fixtures.postgres import PgDatabase, execute

COLUMNS = (
    "id bigint PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, o oid, f4 real, f8 double precision, "
    "d date, ts timestamp, tstz timestamptz, t text, vc varchar(20), bp char(5), nm name, by bytea, "
    "js json, jb jsonb, u uuid"
)
BIG = "(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 3000) i)"  # 96 kB, out of line
ROWS = [
    "(1, true, 1, 2, 3, 4, 1.5, 2.5, '2024-02-29', '2024-02-29 12:34:56.789', '2024-02-29 12:34:56+02', "
    "'héllo ✓', 'vc', 'ab', 'nm', '\\x00ff0000', '{\"a\": [1, 2.50]}', "
    '\'{"k": "caf\\u00e9", "n": {"x": [1, 2.50, null, true], "y": {}}, "e": "\\\\\\" \\n"}\', '
    "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11')",
    "(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL)",
    "(3, false, -32768, -2147483648, -9223372036854775808, 4294967295, 'NaN', 'Infinity', '0001-01-01', "
    "'0001-01-01 00:00:00', '9999-12-31 23:59:59.999999+00', '', '', '', '', '\\x', '\"\"', '[]', "
    "'00000000-0000-0000-0000-000000000000')",
    "(4, true, 32767, 2147483647, 9223372036854775807, 0, '-Infinity', '-0', '9999-12-31', "
    "'9999-12-31 23:59:59.999999', '0001-01-01 00:00:00+00', 'x', 'é', 'é', 'é', '\\x000000', 'null', "
    "'{\"\\u00e9\": \"\\ud83d\\ude00\"}', 'ffffffff-ffff-ffff-ffff-ffffffffffff')",
    f"(5, true, 0, 0, 0, 0, '-0', 'NaN', '2000-01-01', '2000-01-01', '2000-01-01', {BIG}, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL)",
    # rejected in text mode (infinity, BC, year > 9999), so in binary mode too; their raw text must match
    "(6, false, 7, 8, 9, 10, 1.1, 0.1, 'infinity', '2020-01-01 00:00:00.5', '2020-01-01', 'r', 'r', 'r', "
    "'r', '\\xdeadbeef', '{}', '{\"a\": 1}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')",
    "(7, true, 1, 1, 1, 1, 123456, 1e15, '-infinity', '-infinity', 'infinity', 'r', NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL)",
    "(8, NULL, NULL, NULL, NULL, NULL, 1234567, 1e14, '0044-03-15 BC', '0044-03-15 12:00:00 BC', "
    "'10000-01-01 00:00:00+00', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    "(9, NULL, NULL, NULL, NULL, NULL, 3.4028235e38, 5e-324, '10000-01-01', '0001-01-01 00:00:00 BC', "
    "'2020-06-01 10:00:00.000001+00', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    "(10, NULL, NULL, NULL, NULL, NULL, 1e-45, 1.7976931348623157e308, NULL, NULL, '-infinity', NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    "(11, NULL, NULL, NULL, NULL, NULL, 0.0001, 0.00001, NULL, '294276-12-31 23:59:59', NULL, NULL, NULL,"
    " NULL, NULL, NULL, NULL, NULL, NULL)",
    # floats that text mode parses from their shortest digits: binary must give the same bits
    "(12, NULL, NULL, NULL, NULL, NULL, 1.1, 0.1, '0500-06-30', '1999-12-31 23:59:59.999999', "
    "'1970-01-01 00:00:00.000001+00', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    "(13, NULL, NULL, NULL, NULL, NULL, 3.4028235e38, 1e-300, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL)",
    "(14, NULL, NULL, NULL, NULL, NULL, 1e-45, 5e-324, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL)",
    "(15, NULL, NULL, NULL, NULL, NULL, 16777217, 0.30000000000000004, NULL, NULL, NULL, NULL, NULL, NULL,"
    " NULL, NULL, NULL, NULL, NULL)",
]


@pytest.fixture
def sources(pg_db: PgDatabase) -> Iterator[list[PostgresChangeSource]]:
    opened: list[PostgresChangeSource] = []
    yield opened
    for src in opened:
        src.close()


def open_source(
    db: PgDatabase, opened: list[PostgresChangeSource], *, binary: bool, reader: str = "stream"
) -> PostgresChangeSource:
    src = PostgresChangeSource(
        db.dsn,
        [SourceTable("public.allt"), SourceTable("public.rif")],
        slot_name=f"b_{uuid.uuid4().hex[:8]}",
        reader=reader,  # type: ignore[arg-type]
        on_malformed="dead_letter",
        binary=binary,
    )
    src.setup()
    opened.append(src)
    return src


def read_all(src: PostgresChangeSource) -> ChangeBatch:
    batch = src.read(1_000_000)
    assert src.reader != "stream" or src.stream is not None
    return batch


def comparable(batch: ChangeBatch) -> dict[str, Any]:
    """Everything of a batch but the source id (slot name): schemas, rows (repr keeps NaN and -0.0
    apart), dead letters, positions."""
    return {
        "tables": {
            name: (str(t.data_schema), str(t.rows.schema), repr(t.rows.to_pylist()), t.column_defaults)
            for name, t in sorted(batch.tables.items())
        },
        "dead": [(d.raw, d.reason, d.table, d.position) for d in batch.dead_letters],
        "ack": batch.ack_position,
    }


def test_binary_and_text_mode_read_the_same_changes(
    pg_db: PgDatabase, sources: list[PostgresChangeSource], monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded_types: set[int] = set()

    def spy(buf: Any, starts: Any, lengths: Any, valid: Any, type_oid: int) -> Any:
        decoded_types.add(type_oid)
        return decode_binary(buf, starts, lengths, valid, type_oid)

    monkeypatch.setattr(pgoutput, "decode_binary", spy)
    execute(
        pg_db.dsn,
        f"CREATE TABLE allt ({COLUMNS})",
        "CREATE TABLE rif (id int4 PRIMARY KEY, v text, ts timestamptz, f double precision)",
        "ALTER TABLE rif REPLICA IDENTITY FULL",
    )
    binary = open_source(pg_db, sources, binary=True)
    text = open_source(pg_db, sources, binary=False)
    peek_binary = open_source(pg_db, sources, binary=True, reader="peek")
    execute(
        pg_db.dsn,
        f"INSERT INTO allt VALUES {', '.join(ROWS)}",
        "UPDATE allt SET i4 = i4 + 1 WHERE id = 5",  # the TOASTed text arrives unchanged ('u')
        "UPDATE allt SET id = 105, f8 = -0.0 WHERE id = 1",  # key change: old key
        "UPDATE allt SET id = 106 WHERE id = 6",  # a rejected row's key change
        "DELETE FROM allt WHERE id IN (2, 7)",
        "INSERT INTO rif VALUES (1, 'a', 'infinity', 1.5), (2, 'b', '2020-01-01', -0.0)",
        "UPDATE rif SET v = 'c', id = 3 WHERE id = 1",
        "UPDATE rif SET f = 0.0 WHERE id = 2",
        "DELETE FROM rif WHERE id = 2",
    )
    conn = psycopg2.connect(pg_db.dsn)  # COPY writes multi-insert records: changes sharing one LSN
    with conn, conn.cursor() as cur:
        cur.copy_expert(
            "COPY allt (id, f8, tstz, jb, by) FROM STDIN",
            io.StringIO(
                "".join(f"{200 + i}\t{i / 3}\t2021-03-0{i % 9 + 1}\t{{}}\t\\\\x0{i}\n" for i in range(9))
            ),
        )
    conn.close()
    assert binary.binary_active() and peek_binary.binary_active() and not text.binary_active()
    got_text = comparable(read_all(text))
    assert got_text["dead"] and len(got_text["tables"]) == 2  # rejected rows are part of the comparison
    assert not decoded_types
    assert comparable(read_all(binary)) == got_text
    assert decoded_types == BINARY_TYPES  # the stream was read in binary mode, every type
    decoded_types.clear()
    assert comparable(read_all(peek_binary)) == got_text
    assert decoded_types == BINARY_TYPES


def test_float_text_matches_the_server(pg_db: PgDatabase) -> None:
    """pg_float_text (dead letters of binary rows) prints floats as float4out/float8out do."""
    values = [0.1, 1.1, 123456.0, 1234567.0, 1e15, 1e14, 1e-4, 1e-5, -0.0, 3.4028235e38, 1 / 3, 1e-45]
    values += [5e-324, 1.7976931348623157e308, 123456789012345.6, -2.5e-7]  # float8 only
    conn = psycopg2.connect(pg_db.dsn)
    with conn.cursor() as cur:
        for i, value in enumerate(values):
            cur.execute("SELECT %s::float8::text", (repr(value),))
            assert pg_float_text(value) == cur.fetchone()[0], value  # type: ignore[index]
            if i < 12:
                cur.execute("SELECT %s::float8::float4::text, %s::float8::float4::float8", (repr(value),) * 2)
                text, as_float = cur.fetchone()  # type: ignore[misc]
                assert pg_float_text(as_float, float4=True) == text, value
    conn.close()


@pytest.mark.parametrize("reader", ["stream", "peek"])
def test_a_column_without_binary_decoder_switches_the_stream_to_text(
    pg_db: PgDatabase, sources: list[PostgresChangeSource], reader: str
) -> None:
    execute(pg_db.dsn, f"CREATE TABLE allt ({COLUMNS})", "CREATE TABLE rif (id int4 PRIMARY KEY)")
    src = open_source(pg_db, sources, binary=True, reader=reader)
    execute(pg_db.dsn, "INSERT INTO allt (id, f8, u) VALUES (1, 0.5, gen_random_uuid())")
    first = src.read(10_000)
    assert src.binary_active() and first.tables["public.allt"].rows.column("f8").to_pylist() == [0.5]
    src.ack(first.ack_position)
    execute(
        pg_db.dsn,
        "INSERT INTO allt (id, f8) VALUES (2, 1.5)",
        "ALTER TABLE allt ADD COLUMN price numeric(10, 2), ADD COLUMN tags text[]",
        "INSERT INTO allt (id, f8, price, tags) VALUES (3, 2.5, 12.34, '{a,b}'), (4, NULL, -0.5, NULL)",
    )
    batch = src.read(10_000)
    assert not src.binary_active() and (src.stream is not None) == (reader == "stream")
    rows = batch.tables["public.allt"].rows
    assert rows.column("id").to_pylist() == [2, 3, 4]
    assert rows.column("f8").to_pylist() == [1.5, 2.5, None]
    assert [str(p) if p is not None else None for p in rows.column("price").to_pylist()] == [
        None,
        "12.34",
        "-0.50",
    ]
    assert rows.column("tags").to_pylist() == [None, "{a,b}", None]
    assert batch.dead_letters == []


def test_the_version_gate() -> None:
    supported = {"t": [PgColumn("id", INT8), PgColumn("at", TIMESTAMPTZ), PgColumn("u", UUID)]}
    assert use_binary(MIN_SERVER_VERSION, supported) and use_binary(180_001, supported)
    assert not use_binary(130_016, supported)  # pgoutput has no binary option before 14
    assert not use_binary(180_001, {**supported, "n": [PgColumn("id", INT8), PgColumn("p", NUMERIC)]})


# --- hand-built messages ----------------------------------------------------------------------------------

OID_ = 16384
TYPES = [("id", INT8), ("ok", BOOL), ("at", TIMESTAMPTZ), ("doc", JSONB), ("u", UUID), ("d", DATE)]


def binary_tuple(*values: bytes | None) -> bytes:
    out = struct.pack(">h", len(values))
    for value in values:
        out += b"n" if value is None else b"b" + struct.pack(">i", len(value)) + value
    return out


def good(i: int) -> list[bytes | None]:
    return [
        struct.pack(">q", i),
        b"\x01",
        struct.pack(">q", 0),
        b"\x01{}",
        bytes(range(16)),
        struct.pack(">i", 0),
    ]


def decode(values: list[list[bytes | None]], on_malformed: str = "dead_letter") -> tuple[pa.Table, list[str]]:
    decoder = PgOutputDecoder(
        SOURCE,
        {("public", "t"): "t"},
        {"t": ["id"]},
        on_malformed=on_malformed,  # type: ignore[arg-type]
        binary=True,
    )
    inserts = [b"I" + struct.pack(">i", OID_) + b"N" + binary_tuple(*v) for v in values]
    messages = [begin(500, 7), relation(OID_, TYPES), *inserts, commit(500, 520)]
    out = decoder.decode(list(range(100, 100 + len(messages))), messages)
    _, rows, rejected = build_table_changes("t", ["id"], out.segments["t"])
    assert rejected == []
    return rows, [d.reason for d in out.dead_letters]


def test_binary_values_decode() -> None:
    rows, reasons = decode([good(1), [struct.pack(">q", 2), b"\x00", None, b"\x01[1]", None, None]])
    assert reasons == []
    assert rows.column("id").to_pylist() == [1, 2] and rows.column("ok").to_pylist() == [True, False]
    assert rows.column("doc").to_pylist() == ["{}", "[1]"]
    assert rows.column("u").to_pylist() == ["00010203-0405-0607-0809-0a0b0c0d0e0f", None]
    assert str(rows.column("at")[0].as_py()) == "2000-01-01 00:00:00+00:00"


@pytest.mark.parametrize(
    ("column", "value"),
    [
        (0, struct.pack(">i", 1)),  # int8 of 4 bytes
        (0, struct.pack(">q", 1) + b"\x00"),  # int8 of 9 bytes
        (1, b"\x02"),  # bool other than 0/1
        (1, b""),
        (2, struct.pack(">i", 1)),  # timestamptz of 4 bytes
        (3, b"\x02{}"),  # jsonb version 2
        (3, b""),
        (3, b"\x01\xff"),  # not UTF-8
        (4, bytes(15)),  # uuid of 15 bytes
        (5, struct.pack(">q", 1)),  # date of 8 bytes
    ],
)
def test_wrong_lengths_and_bad_values_are_malformed(column: int, value: bytes) -> None:
    bad = good(2)
    bad[column] = value
    rows, reasons = decode([good(1), bad, good(3)])
    assert rows.column("id").to_pylist() == [1, 3] and reasons == ["malformed tuple data"]
    with pytest.raises(DecoderError, match=r"Insert \(0x49\) at LSN 0/67"):
        decode([good(1), bad], on_malformed="stop")


def test_a_text_value_in_a_binary_column_is_malformed() -> None:
    mixed = b"I" + struct.pack(">i", OID_) + b"N" + binary_tuple(*good(1))
    mixed = mixed.replace(b"b" + struct.pack(">i", 8), b"t" + struct.pack(">i", 8), 1)
    decoder = PgOutputDecoder(SOURCE, {("public", "t"): "t"}, {"t": ["id"]}, on_malformed="dead_letter")
    first = b"I" + struct.pack(">i", OID_) + b"N" + binary_tuple(*good(2))
    out = decoder.decode(
        [1, 2, 3, 4, 5], [begin(500, 7), relation(OID_, TYPES), first, mixed, commit(500, 520)]
    )
    assert [d.reason for d in out.dead_letters] == ["malformed tuple data"]


def test_a_relation_with_an_unsupported_type_raises_before_decoding() -> None:
    decoder = PgOutputDecoder(SOURCE, {("public", "t"): "t"}, {"t": ["id"]}, binary=True)
    insert = b"I" + struct.pack(">i", OID_) + b"N" + binary_tuple(struct.pack(">q", 1), b"\x00\x00")
    messages = [begin(500, 7), relation(OID_, [("id", INT8), ("p", NUMERIC)]), insert, commit(500, 520)]
    with pytest.raises(BinaryFormatUnsupported, match=r"p \(type OID 1700\)"):
        decoder.decode([1, 2, 3, 4], messages)
    text_decoder = PgOutputDecoder(SOURCE, {("public", "t"): "t"}, {"t": ["id"]}, on_malformed="dead_letter")
    assert [d.reason for d in text_decoder.decode([1, 2, 3, 4], messages).dead_letters] == [
        "malformed tuple data"
    ]
    # a text column and an int column decode in binary mode when all their types are supported
    ok = b"I" + struct.pack(">i", OID_) + b"N" + binary_tuple(struct.pack(">i", 5), "é".encode())
    out = decoder.decode(
        [1, 2, 3, 4], [begin(500, 7), relation(OID_, [("id", INT4), ("v", TEXT)]), ok, commit(500, 520)]
    )
    assert out.segments["t"][0].values["v"].to_pylist() == ["é"]


def test_a_widened_float_reads_as_its_text() -> None:
    """float4 values decoded before ALTER ... TYPE float8 read as text mode reads them (1.1, not the
    float32 nearest to 1.1)."""
    decoder = PgOutputDecoder(SOURCE, {("public", "t"): "t"}, {"t": ["id"]}, binary=True)
    before = (
        b"I" + struct.pack(">i", OID_) + b"N" + binary_tuple(struct.pack(">i", 1), struct.pack(">f", 1.1))
    )
    after = b"I" + struct.pack(">i", OID_) + b"N" + binary_tuple(struct.pack(">q", 2), struct.pack(">d", 2.2))
    messages = [
        begin(500, 7),
        relation(OID_, [("id", INT4), ("f", 700)]),
        before,
        relation(OID_, [("id", INT8), ("f", FLOAT8)]),
        after,
        commit(500, 520),
    ]
    out = decoder.decode(list(range(1, 7)), messages)
    _, rows, _ = build_table_changes("t", ["id"], out.segments["t"])
    assert rows.column("id").type == pa.int64() and rows.column("f").to_pylist() == [1.1, 2.2]
