"""wal2json format-version 2 parsing: exact numbers, omitted TOAST columns, identity, malformed rows."""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from hybrid_dagster.cdc.sources.postgres.types import (
    INT4,
    NUMERIC,
    TEXT,
    PgColumn,
    build_table_changes,
    numeric_typmod,
)
from hybrid_dagster.cdc.sources.postgres.wal2json import Wal2JsonDecoder, parse_lsn
from hybrid_dagster.errors import DecoderError

SOURCE = "postgres://test:5432/db#slot"
TS = "2024-01-02 03:04:05.5+00"


def col(name: str, type_name: str, oid: int, value: object) -> dict[str, object]:
    return {"name": name, "type": type_name, "typeoid": oid, "value": value}


def change(action: str, lsn: str, **fields: object) -> str:
    return json.dumps(
        {"action": action, "xid": 9, "lsn": lsn, "timestamp": TS, "schema": "public", "table": "t", **fields}
    )


def decode(rows: list[tuple[int, str]]) -> tuple[pa.Table | None, list[str]]:
    catalog = {
        "t": [PgColumn("id", INT4), PgColumn("n", NUMERIC, numeric_typmod(10, 2)), PgColumn("big", TEXT)]
    }
    decoder = Wal2JsonDecoder(
        SOURCE, {("public", "t"): "t"}, {"t": ["id"]}, catalog, on_malformed="dead_letter"
    )
    out = decoder.decode([r[0] for r in rows], [r[1] for r in rows])
    reasons = [d.reason for d in out.dead_letters]
    if "t" not in out.segments:
        return None, reasons
    return build_table_changes("t", ["id"], out.segments["t"])[1], reasons


def test_parse_lsn() -> None:
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848


def test_changes_with_identity_and_omitted_toast() -> None:
    n = "numeric(10,2)"
    rows, reasons = decode(
        [
            (90, '{"action":"B","xid":9,"lsn":"0/200","nextlsn":"0/220","timestamp":"' + TS + '"}'),
            (100, '{"action":"I","xid":9,"lsn":"0/64","schema":"public","table":"t","columns":['
             '{"name":"id","type":"integer","typeoid":23,"value":1},'
             '{"name":"n","type":"numeric(10,2)","typeoid":1700,"value":12345678.10},'
             '{"name":"big","type":"text","typeoid":25,"value":"x"}]}'),
            (110, change("U", "0/6E", columns=[col("id", "integer", 23, 2), col("n", n, 1700, 1)],
                         identity=[col("id", "integer", 23, 1)])),
            (120, change("D", "0/78", identity=[col("id", "integer", 23, 2)])),
            (130, change("M", "0/82")),
            (140, '{"action":"C","xid":9,"lsn":"0/200","nextlsn":"0/220"}'),
        ]
    )  # fmt: skip
    assert reasons == []
    assert rows is not None
    got = rows.select(
        ["__op", "__commit_pos", "__event_pos", "__old_key", "__unchanged", "id", "n", "big"]
    ).to_pylist()
    assert got == [
        {
            "__op": "c",
            "__commit_pos": 512,
            "__event_pos": 100,
            "__old_key": None,
            "__unchanged": None,
            "id": 1,
            "n": Decimal("12345678.10"),
            "big": "x",
        },
        {
            "__op": "u",
            "__commit_pos": 512,
            "__event_pos": 110,
            "__old_key": {"id": 1},
            "__unchanged": ["big"],
            "id": 2,
            "n": Decimal("1.00"),
            "big": None,
        },
        {
            "__op": "d",
            "__commit_pos": 512,
            "__event_pos": 120,
            "__old_key": None,
            "__unchanged": None,
            "id": 2,
            "n": None,
            "big": None,
        },
    ]
    assert rows.column("__commit_ts")[0].as_py().microsecond == 500_000


def test_malformed_rows_become_dead_letters() -> None:
    rows, reasons = decode(
        [
            (90, '{"action":"B","xid":9,"lsn":"0/200","timestamp":"' + TS + '"}'),
            (100, change("I", "0/64", columns=[col("id", "integer", 23, 1)])),
            (110, '{"action":"I", "broken'),
            (120, change("X", "0/78")),
            (130, '{"action":"C","xid":9,"lsn":"0/200","nextlsn":"0/220"}'),
        ]
    )
    assert rows is not None and rows.column("id").to_pylist() == [1]
    assert len(reasons) == 2 and any("unknown wal2json action" in r for r in reasons)


def test_undecodable_change_stops_with_its_lsn_by_default() -> None:
    decoder = Wal2JsonDecoder(SOURCE, {("public", "t"): "t"}, {"t": ["id"]}, {})
    with pytest.raises(DecoderError, match=r"LSN 110 .*on_malformed='dead_letter'"):
        decoder.decode(
            [90, 110], ['{"action":"B","xid":9,"lsn":"0/200","timestamp":"' + TS + '"}', '{"action":"I"']
        )


def test_a_change_failing_half_way_leaves_no_partial_row() -> None:
    # "value" is missing in the second column: nothing of that change may stay in the accumulator.
    half = change(
        "I", "0/6E", columns=[col("id", "integer", 23, 2), {"name": "n", "type": "text", "typeoid": 25}]
    )
    rows, reasons = decode(
        [
            (90, '{"action":"B","xid":9,"lsn":"0/200","timestamp":"' + TS + '"}'),
            (100, change("I", "0/64", columns=[col("id", "integer", 23, 1)])),
            (110, half),
            (120, change("I", "0/78", columns=[col("id", "integer", 23, 3)])),
            (130, '{"action":"C","xid":9,"lsn":"0/200","nextlsn":"0/220"}'),
        ]
    )
    assert rows is not None and rows.column("id").to_pylist() == [1, 3] and len(reasons) == 1


VALID = [
    '{"action":"B","xid":9,"lsn":"0/200","timestamp":"' + TS + '"}',
    change("I", "0/64", columns=[col("id", "integer", 23, 1)]),
    change("U", "0/65", columns=[col("id", "integer", 23, 2)], identity=[col("id", "integer", 23, 1)]),
    change("D", "0/66", identity=[col("id", "integer", 23, 2)]),
    '{"action":"C","xid":9,"lsn":"0/200","nextlsn":"0/220"}',
]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.text(max_size=60), st.sampled_from(VALID).map(lambda s: s[: len(s) // 2])), max_size=8
    )
)
def test_random_or_truncated_rows_decode_or_raise_decoder_error(payloads: list[str]) -> None:
    lsns = list(range(100, 100 + len(payloads)))
    with contextlib.suppress(DecoderError):
        Wal2JsonDecoder(SOURCE, {("public", "t"): "t"}, {"t": ["id"]}, {}).decode(lsns, payloads)
    Wal2JsonDecoder(SOURCE, {("public", "t"): "t"}, {"t": ["id"]}, {}, on_malformed="dead_letter").decode(
        lsns, payloads
    )


def test_numbers_as_strings_keep_nan_and_infinity_and_old_wal2json_nulls_are_flagged() -> None:
    catalog = {"t": [PgColumn("id", INT4), PgColumn("f", 701)]}
    rows = [
        (90, '{"action":"B","xid":9,"lsn":"0/200","timestamp":"' + TS + '"}'),
        (
            100,
            change(
                "I", "0/64", columns=[col("id", "integer", 23, "1"), col("f", "double precision", 701, "NaN")]
            ),
        ),
        (
            110,
            change(
                "I",
                "0/6E",
                columns=[col("id", "integer", 23, "2"), col("f", "double precision", 701, "-Infinity")],
            ),
        ),
        (
            120,
            change(
                "I", "0/78", columns=[col("id", "integer", 23, "3"), col("f", "double precision", 701, None)]
            ),
        ),
        (130, '{"action":"C","xid":9,"lsn":"0/200","nextlsn":"0/220"}'),
    ]
    out = Wal2JsonDecoder(SOURCE, {("public", "t"): "t"}, {"t": ["id"]}, catalog).decode(
        *zip(*rows, strict=True)
    )  # type: ignore[arg-type]
    _, table, _ = build_table_changes("t", ["id"], out.segments["t"])
    values = table.column("f").to_pylist()
    assert values[0] != values[0] and values[1:] == [float("-inf"), None] and out.ambiguous_nulls == {}

    old = Wal2JsonDecoder(SOURCE, {("public", "t"): "t"}, {"t": ["id"]}, catalog, numbers_as_strings=False)
    assert old.decode(*zip(*rows, strict=True)).ambiguous_nulls == {"t.f": 1}  # type: ignore[arg-type]
    strict = Wal2JsonDecoder(
        SOURCE,
        {("public", "t"): "t"},
        {"t": ["id"]},
        catalog,
        numbers_as_strings=False,
        ambiguous_nulls="dead_letter",
    )
    assert ["'f'" in d.reason for d in strict.decode(*zip(*rows, strict=True)).dead_letters] == [True]  # type: ignore[arg-type]
