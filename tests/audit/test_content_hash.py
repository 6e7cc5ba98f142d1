"""The content hash: layout-independent, value-sensitive, and stable through an Iceberg round trip."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from hybrid_dagster.audit.content_hash import content_sha256

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
