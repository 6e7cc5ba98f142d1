"""The content hash: layout-independent, value-sensitive, and stable through an Iceberg round trip."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from hybrid_dagster.audit.content_hash import HASH_VERSION, content_sha256

BASE = pa.table(
    {
        "id": pa.array([3, 1, 2], pa.int64()),
        "ward": ["B", None, "A"],
        "score": [0.5, 1.25, None],
        "seen": pa.array([dt.datetime(2024, 1, 1, 8), dt.datetime(2024, 1, 2), None], pa.timestamp("us")),
    }
)


def test_row_order_column_order_chunking_and_physical_types_do_not_matter() -> None:
    reordered = BASE.take([2, 0, 1]).select(["seen", "score", "ward", "id"])
    rechunked = pa.concat_tables([BASE.slice(0, 1), BASE.slice(1)])
    narrower = BASE.cast(
        pa.schema(
            [
                ("id", pa.int32()),
                ("ward", pa.large_string()),
                ("score", pa.float64()),
                ("seen", pa.timestamp("ns")),
            ]
        )
    )
    dictionary = BASE.set_column(1, "ward", BASE.column("ward").dictionary_encode())
    expected = content_sha256(BASE)
    assert {content_sha256(t) for t in (reordered, rechunked, narrower, dictionary)} == {expected}


@pytest.mark.parametrize(
    "changed",
    [
        BASE.set_column(1, "ward", pa.array(["B", "", "A"])),  # null vs empty string
        BASE.set_column(0, "id", pa.array([3, 1, 4])),  # one value
        BASE.slice(1),  # a row dropped
        pa.concat_tables([BASE, BASE.slice(0, 1)]),  # a row duplicated
        BASE.rename_columns(["id", "unit", "score", "seen"]),  # a column renamed
    ],
)
def test_any_change_of_content_changes_the_hash(changed: pa.Table) -> None:
    assert content_sha256(changed) != content_sha256(BASE)


def test_values_cannot_shift_between_cells() -> None:
    a = pa.table({"a": ["xy"], "b": ["z"]})
    b = pa.table({"a": ["x"], "b": ["yz"]})
    c = pa.table({"a": ["1:x"], "b": [""]})
    assert len({content_sha256(a), content_sha256(b), content_sha256(c)}) == 3


def test_binary_nested_and_empty_tables_hash() -> None:
    odd = pa.table({"b": [b"\xff\x00", None], "l": [[1, 2], None], "s": [{"k": 1}, {"k": None}]})
    assert content_sha256(odd) == content_sha256(odd.take([1, 0]))
    assert content_sha256(BASE.slice(0, 0)) != content_sha256(pa.table({"other": pa.array([], pa.int64())}))


def test_hash_survives_an_iceberg_round_trip(tmp_path: Path) -> None:
    catalog = SqlCatalog(
        "t", uri=f"sqlite:///{tmp_path / 'catalog.db'}", warehouse=f"file://{tmp_path / 'warehouse'}"
    )
    catalog.create_namespace("clinic")
    table = catalog.create_table("clinic.visits", schema=BASE.schema)
    table.append(BASE.slice(0, 2))
    table.append(BASE.slice(2))  # two data files
    read_back = catalog.load_table("clinic.visits").scan().to_arrow()
    assert content_sha256(read_back) == content_sha256(BASE)


def test_negative_zero_differs_and_every_nan_is_one_value() -> None:
    zeros = pa.table({"x": pa.array([0.0], pa.float64())})
    negative = pa.table({"x": pa.array([-0.0], pa.float64())})
    assert content_sha256(zeros) != content_sha256(negative)
    quiet = np.array([np.nan], dtype=np.float64)
    other = np.array([0x7FF8_0000_0000_0001], dtype=np.int64).view(np.float64)  # another NaN payload
    signed = -quiet
    hashes = {content_sha256(pa.table({"x": pa.array(v)})) for v in (quiet, other, signed)}
    assert len(hashes) == 1
    assert content_sha256(pa.table({"x": pa.array(quiet.astype(np.float32))})) in hashes
    assert content_sha256(pa.table({"x": pa.array([None], pa.float64())})) not in hashes


def test_null_empty_and_missing_values_are_distinct() -> None:
    variants = [
        pa.table({"s": pa.array([""])}),
        pa.table({"s": pa.array([None], pa.string())}),
        pa.table({"s": pa.array([b"\x00"])}),
        pa.table({"s": pa.array([0], pa.int64())}),
        pa.table({"s": pa.array([False])}),
        pa.table({"s": pa.array([0.0])}),
    ]
    assert len({content_sha256(t) for t in variants}) == len(variants)


def test_duplicates_count_and_chunking_does_not() -> None:
    one = pa.table({"a": [1, 2], "b": ["x", "y"]})
    twice = pa.concat_tables([one, one.slice(0, 1)])
    assert content_sha256(twice) != content_sha256(one)
    assert content_sha256(pa.concat_tables([one, one])) != content_sha256(twice)
    chunks = pa.concat_tables([one.slice(1), one.slice(0, 1), one.slice(0, 0)])
    assert content_sha256(chunks) == content_sha256(one)
    sliced = pa.concat_tables([one, one]).slice(1, 2)  # offsets into shared buffers
    assert content_sha256(sliced) == content_sha256(one.take([1, 0]))


def test_all_null_columns_hash_alike_whatever_their_type() -> None:
    typed = pa.table({"id": [1, 2], "note": pa.array([None, None], pa.string())})
    untyped = pa.table({"id": [1, 2], "note": pa.nulls(2)})
    as_int = pa.table({"id": [1, 2], "note": pa.array([None, None], pa.int32())})
    assert content_sha256(typed) == content_sha256(untyped) == content_sha256(as_int)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (pa.array([1, None], pa.int8()), pa.array([1, None], pa.int64())),
        (pa.array([2**63 - 1], pa.uint64()), pa.array([2**63 - 1], pa.int64())),
        (pa.array([1.5], pa.float32()), pa.array([1.5], pa.float64())),
        (pa.array([dt.date(2024, 2, 29)], pa.date32()), pa.array([dt.date(2024, 2, 29)], pa.date64())),
        (pa.array([dt.time(8, 30, 1)], pa.time32("s")), pa.array([dt.time(8, 30, 1)], pa.time64("us"))),
        (
            pa.array(
                [dt.datetime(2024, 1, 1, 9, tzinfo=dt.timezone(dt.timedelta(hours=1)))],
                pa.timestamp("ms", "+01:00"),
            ),
            pa.array([dt.datetime(2024, 1, 1, 8, tzinfo=dt.UTC)], pa.timestamp("us", "UTC")),
        ),
        (pa.array([b"ab"], pa.binary(2)), pa.array([b"ab"], pa.large_binary())),
    ],
)
def test_one_value_in_two_physical_types_hashes_alike(a: pa.Array, b: pa.Array) -> None:
    assert content_sha256(pa.table({"c": a})) == content_sha256(pa.table({"c": b}))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (pa.array([2**64 - 1], pa.uint64()), pa.array([-1], pa.int64())),  # same 64 bits
        (pa.array([1]), pa.array(["1"])),  # a number is not its text
        (pa.array([True]), pa.array([1])),
        (
            pa.array([dt.datetime(2024, 1, 1)], pa.timestamp("us")),  # naive vs UTC
            pa.array([dt.datetime(2024, 1, 1, tzinfo=dt.UTC)], pa.timestamp("us", "UTC")),
        ),
        (pa.array([[1, 2]]), pa.array(["[1,2]"])),
    ],
)
def test_distinct_kinds_never_hash_alike(a: pa.Array, b: pa.Array) -> None:
    assert content_sha256(pa.table({"c": a})) != content_sha256(pa.table({"c": b}))


def test_decimals_and_the_version_tag() -> None:
    prices = pa.table({"p": pa.array([decimal.Decimal("1.50"), None], pa.decimal128(10, 2))})
    assert content_sha256(prices) == content_sha256(prices.take([1, 0]))
    assert content_sha256(prices) != content_sha256(prices.slice(0, 1))
    assert HASH_VERSION == b"hybrid-content-v3"
    empty = hashlib.sha256(HASH_VERSION + b"\0" + b'["p"]' + b"\0" + (0).to_bytes(8, "little"))
    assert content_sha256(prices.slice(0, 0)) == empty.hexdigest()
