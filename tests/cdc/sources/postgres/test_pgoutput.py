"""pgoutput decoding: messages built by the documented byte layout, and a real server's output."""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from hybrid_dagster.cdc.sources.postgres.pgoutput import (
    PgOutputDecoder,
    _walk_guarded,
    _walk_well_formed,
    parse_relation,
)
from hybrid_dagster.cdc.sources.postgres.types import INT4, TEXT, WINDOW, PgColumn, build_table_changes
from hybrid_dagster.errors import DecoderError

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
    decoder = PgOutputDecoder(SOURCE, {("public", "t"): "t"}, {"t": ["id"]}, on_malformed="dead_letter")
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


# --- bounds: issue 8, defect 1 ----------------------------------------------------------------------------

ISSUE_DELETE = bytes.fromhex("44000040074b000a74000000084b6c696e696b2041740000000234306e6e6e6e6e6e6e6e")
ISSUE_COMMIT = bytes.fromhex("430000000000017b62f800000000017b63300003049ae59bc15f")
WIDE = [("site", TEXT), ("id", INT4)] + [(f"c{i}", TEXT) for i in range(1, 9)]


def wide_relation() -> bytes:
    return relation(0x4007, WIDE)


def decode_wide(messages: list[bytes], on_malformed: str = "stop") -> pa.Table:
    decoder = PgOutputDecoder(
        SOURCE,
        {("public", "t"): "t"},
        {"t": ["site", "id"]},
        on_malformed=on_malformed,  # type: ignore[arg-type]
    )
    out = decoder.decode(list(range(100, 100 + len(messages))), messages)
    _, rows, rejected = build_table_changes("t", ["site", "id"], out.segments["t"])
    assert rejected == [] and out.dead_letters == []
    return rows


def test_the_issues_delete_then_commit_bytes_decode() -> None:
    # The Commit after this Delete holds 0x62 ('b') then 0xf8: the old decoder walked a "new tuple" of
    # the Delete into it, read a negative length and indexed the buffer at a negative position.
    rows = decode_wide([begin(0x17B62F8, 9), wide_relation(), ISSUE_DELETE, ISSUE_COMMIT])
    assert rows.column("__op").to_pylist() == ["d"]
    assert (rows.column("site").to_pylist(), rows.column("id").to_pylist()) == (["Klinik A"], [40])


def test_undecodable_message_stops_with_its_lsn_and_type() -> None:
    truncated = ISSUE_DELETE[:-3]
    decoder = PgOutputDecoder(SOURCE, {("public", "t"): "t"}, {"t": ["site", "id"]})
    with pytest.raises(DecoderError, match=r"Delete \(0x44\) at LSN 0/66 .*on_malformed='dead_letter'"):
        decoder.decode([100, 101, 102, 103], [begin(500, 9), wide_relation(), truncated, commit(500, 520)])


def test_negative_and_oversized_lengths_are_errors_not_reads() -> None:
    oid = 16384
    for length in (-1, -(2**31), 2**31 - 1, 3):
        bad = (
            b"I"
            + struct.pack(">i", oid)
            + b"N"
            + struct.pack(">h", 2)
            + b"t"
            + struct.pack(">i", length)
            + b"12"
        )
        bad += b"n"
        rows, reasons = decode(
            [(100, begin(500, 7)), (100, relation(oid, [("id", INT4), ("v", TEXT)])), (110, bad)]
        )
        assert rows is None and reasons == ["malformed tuple data"], length


def change_messages(draw: st.DrawFn) -> list[bytes]:
    oid = 0x4007
    out = []
    for _ in range(draw(st.integers(1, 6))):
        values = [draw(st.sampled_from(["Klinik A", "b\x80", "t\xff", ""])), str(draw(st.integers(0, 99)))]
        values += [draw(st.one_of(st.none(), st.text(max_size=5))) for _ in range(8)]
        key = tuple_data(values[0], values[1], *([None] * 8))
        kind = draw(st.sampled_from("IUD"))
        if kind == "I":
            out.append(b"I" + struct.pack(">i", oid) + b"N" + tuple_data(*values))
        elif kind == "U":
            out.append(b"U" + struct.pack(">i", oid) + b"K" + key + b"N" + tuple_data(*values))
        else:
            out.append(b"D" + struct.pack(">i", oid) + b"K" + key)
    return out


@st.composite
def streams_with_noise(draw: st.DrawFn) -> tuple[list[bytes], list[bytes]]:
    """A valid stream, and the same stream with a logical-decoding Message of random bytes after each change
    (pgoutput skips Messages, so a decoder that stays inside each message decodes both alike)."""
    changes = change_messages(draw)
    clean = [begin(0x17B62F8, 9), wide_relation(), *changes, ISSUE_COMMIT]
    noisy = [begin(0x17B62F8, 9), wide_relation()]
    for change in changes:
        noisy += [change, b"M" + draw(st.binary(max_size=40))]
    return clean, [*noisy, ISSUE_COMMIT]


@settings(max_examples=150, deadline=None)
@given(streams_with_noise())
def test_bytes_after_a_message_never_change_its_decoding(streams: tuple[list[bytes], list[bytes]]) -> None:
    clean, noisy = streams
    # LSNs are numbered by place in the list, so only the event positions may differ.
    assert (
        decode_wide(noisy)
        .drop_columns(["__event_pos"])
        .equals(decode_wide(clean).drop_columns(["__event_pos"]))
    )


@st.composite
def corrupted(draw: st.DrawFn) -> list[bytes]:
    messages = [begin(0x17B62F8, 9), wide_relation(), *change_messages(draw), ISSUE_COMMIT]
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(messages) - 1))
        message = bytearray(messages[i])
        how = draw(st.sampled_from(["truncate", "flip", "insert", "random"]))
        if how == "truncate":
            del message[draw(st.integers(0, max(len(message) - 1, 0))) :]
        elif how == "flip" and message:
            message[draw(st.integers(0, len(message) - 1))] = draw(st.integers(0, 255))
        elif how == "insert":
            at = draw(st.integers(0, len(message)))
            message[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            message = bytearray(draw(st.binary(max_size=60)))
        messages[i] = bytes(message)
    return messages


@settings(max_examples=300, deadline=None)
@given(corrupted())
def test_corrupted_messages_decode_or_raise_decoder_error(messages: list[bytes]) -> None:
    lsns = list(range(100, 100 + len(messages)))
    keys = {"t": ["site", "id"]}
    try:
        PgOutputDecoder(SOURCE, {("public", "t"): "t"}, keys).decode(lsns, messages)
    except DecoderError as error:
        assert "LSN 0/" in str(error)
    out = PgOutputDecoder(SOURCE, {("public", "t"): "t"}, keys, on_malformed="dead_letter").decode(
        lsns, messages
    )
    for segments in out.segments.values():
        for segment in segments:
            assert len(segment.ops) == len(segment.commit_pos)


@settings(max_examples=300, deadline=None)
@given(corrupted(), st.data())
def test_the_unchecked_walk_equals_the_guarded_walk_wherever_it_answers(
    messages: list[bytes], data: st.DataObject
) -> None:
    """The walk without per-field checks answers only where every row is well formed, and then exactly as
    the walk that checks every field (corrupted tuples, random active rows)."""
    changes = [m for m in messages if m[:1] in (b"I", b"U") and len(m) > 6]
    if not changes:
        return
    joined = b"".join([*changes, bytes(WINDOW)])
    buf = np.frombuffer(joined, np.uint8)
    sizes = np.array([len(m) for m in changes])
    starts = np.cumsum(sizes) - sizes
    pos, limit = starts + 6, starts + sizes  # the first tuple of an Insert ('N') or an Update (any)
    active = np.array(data.draw(st.lists(st.booleans(), min_size=len(changes), max_size=len(changes))))
    fast = _walk_well_formed(buf, pos, limit, 10, active)
    guarded = _walk_guarded(buf, pos, limit, 10, active)
    if fast is None:
        assert guarded.bad.any()
        return
    assert not guarded.bad.any()
    assert (fast.end == guarded.end).all()
    for a, b in zip(
        [*fast.kinds, *fast.starts, *fast.lengths],
        [*guarded.kinds, *guarded.starts, *guarded.lengths],
        strict=True,
    ):
        assert a.dtype == b.dtype and (a == b).all()
