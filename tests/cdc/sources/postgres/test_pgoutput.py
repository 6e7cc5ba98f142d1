"""pgoutput decoding: messages built by the documented byte layout, and a real server's output."""

from __future__ import annotations

import struct

import pyarrow as pa

from hybrid_dagster.cdc.sources.postgres.pgoutput import PgOutputDecoder, parse_relation
from hybrid_dagster.cdc.sources.postgres.types import INT4, TEXT, PgColumn, build_table_changes

SOURCE = "postgres://test:5432/db#slot"


def begin(final_lsn: int, xid: int) -> bytes:
    return b"B" + struct.pack(">qqi", final_lsn, 757_000_000_000_000, xid)


def commit(commit_lsn: int, end_lsn: int) -> bytes:
    return b"C\x00" + struct.pack(">qqq", commit_lsn, end_lsn, 757_000_000_000_000)


def relation(oid: int, columns: list[tuple[str, int]]) -> bytes:
    body = struct.pack(">i", oid) + b"public\x00t\x00d" + struct.pack(">h", len(columns))
    for i, (name, type_oid) in enumerate(columns):
        body += bytes([1 if i == 0 else 0]) + name.encode() + b"\x00" + struct.pack(">ii", type_oid, -1)
    return b"R" + body


def tuple_data(*values: str | None) -> bytes:
    out = struct.pack(">h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value == "<u>":
            out += b"u"
        else:
            raw = value.encode()
            out += b"t" + struct.pack(">i", len(raw)) + raw
    return out


def decode(messages: list[tuple[int, bytes]]) -> tuple[pa.Table | None, list[str]]:
    decoder = PgOutputDecoder(SOURCE, {("public", "t"): "t"}, {"t": ["id"]})
    out = decoder.decode([m[0] for m in messages], [m[1] for m in messages])
    reasons = [d.reason for d in out.dead_letters]
    if "t" not in out.segments:
        return None, reasons
    _, rows, _ = build_table_changes("t", ["id"], out.segments["t"])
    return rows, reasons


def test_relation_message_round_trip() -> None:
    rel = parse_relation(relation(16384, [("id", INT4), ("v", TEXT)]))
    assert (rel.oid, rel.namespace, rel.name) == (16384, "public", "t")
    assert rel.columns == [PgColumn("id", INT4), PgColumn("v", TEXT)] and rel.key_flags == [True, False]


def test_insert_update_with_key_delete_and_unchanged_toast() -> None:
    oid = 16384
    rows, reasons = decode(
        [
            (100, begin(500, 7)),
            (100, relation(oid, [("id", INT4), ("v", TEXT)])),
            (100, b"I" + struct.pack(">i", oid) + b"N" + tuple_data("1", "é")),
            (
                200,
                b"U" + struct.pack(">i", oid) + b"K" + tuple_data("1", None) + b"N" + tuple_data("2", "<u>"),
            ),
            (300, b"D" + struct.pack(">i", oid) + b"K" + tuple_data("2", None)),
            (520, commit(500, 520)),
        ]
    )
    assert reasons == []
    assert rows is not None
    got = rows.select(
        ["__op", "__commit_pos", "__event_pos", "__tx_id", "__old_key", "__unchanged", "id", "v"]
    )
    assert got.to_pylist() == [
        {
            "__op": "c",
            "__commit_pos": 500,
            "__event_pos": 100,
            "__tx_id": 7,
            "__old_key": None,
            "__unchanged": None,
            "id": 1,
            "v": "é",
        },
        {
            "__op": "u",
            "__commit_pos": 500,
            "__event_pos": 200,
            "__tx_id": 7,
            "__old_key": {"id": 1},
            "__unchanged": ["v"],
            "id": 2,
            "v": None,
        },
        {
            "__op": "d",
            "__commit_pos": 500,
            "__event_pos": 300,
            "__tx_id": 7,
            "__old_key": None,
            "__unchanged": None,
            "id": 2,
            "v": None,
        },
    ]


def test_shared_lsns_get_increasing_event_positions() -> None:
    oid = 1
    insert = [(100, b"I" + struct.pack(">i", oid) + b"N" + tuple_data(str(i), "x")) for i in range(3)]
    rows, _ = decode(
        [
            (100, begin(500, 7)),
            (100, relation(oid, [("id", INT4), ("v", TEXT)])),
            *insert,
            (520, commit(500, 520)),
        ]
    )
    assert rows is not None and rows.column("__event_pos").to_pylist() == [100, 101, 102]


def test_malformed_messages_become_dead_letters() -> None:
    oid = 16384
    rows, reasons = decode(
        [
            (100, begin(500, 7)),
            (100, relation(oid, [("id", INT4), ("v", TEXT)])),
            (110, b"I" + struct.pack(">i", oid) + b"N" + tuple_data("1", "a")),
            (
                120,
                b"I" + struct.pack(">i", oid) + b"N" + tuple_data("2", "b")[:-1] + b"\xff\xff",
            ),  # bad length
            (130, b"I" + struct.pack(">i", oid) + b"N" + tuple_data("3")),  # wrong column count
            (140, b"Z-unknown"),
            (150, b"I" + struct.pack(">i", 999) + b"N" + tuple_data("4", "d")),  # no Relation message
            (160, b"I" + struct.pack(">i", oid) + b"N" + tuple_data("x", "e")),  # not an int4
            (520, commit(500, 520)),
        ]
    )
    assert rows is not None and rows.column("id").to_pylist() == [1]
    assert len(reasons) == 4  # the unconvertible value is rejected by the table builder, not the decoder
    assert any("unknown" in r for r in reasons) and any("Relation" in r for r in reasons)
