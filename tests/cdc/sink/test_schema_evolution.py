"""Schema evolution while applying: added columns, widening, incompatible changes, dropped columns."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema
from pyiceberg.types import IntegerType, LongType, NestedField, StringType

from hybrid_dagster.cdc.changes import Position
from hybrid_dagster.cdc.sink.apply import IcebergApplier
from hybrid_dagster.cdc.sink.schema_evolution import SchemaEvolutionError, plan_schema_evolution
from tests.cdc.sink.test_apply import batch, change, content, make_catalog

V1 = pa.schema([pa.field("id", pa.int32()), pa.field("name", pa.string()), pa.field("visits", pa.int32())])


@pytest.fixture
def catalog(tmp_path: Path) -> SqlCatalog:
    return make_catalog(tmp_path)


def test_added_column_mid_stream(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    applier.apply("db.t", batch([change("c", 1, 0, id=1, name="a", visits=1)], V1))
    v2 = V1.append(pa.field("email", pa.string()))
    result = applier.apply("db.t", batch([change("c", 2, 0, id=2, name="b", visits=2, email="b@x")], v2))

    assert result.schema_changes == ["added column 'email' (string)"]
    assert result.schema_id == catalog.load_table("db.t").metadata.current_schema_id > 0
    assert content(catalog, "db.t") == [
        {"id": 1, "name": "a", "visits": 1, "email": None},
        {"id": 2, "name": "b", "visits": 2, "email": "b@x"},
    ]


def test_widened_types_are_applied(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    v1 = V1.append(pa.field("ratio", pa.float32()))
    applier.apply("db.t", batch([change("c", 1, 0, id=1, visits=1, ratio=0.5)], v1))
    v2 = pa.schema(
        [
            pa.field("id", pa.int64()),
            pa.field("name", pa.string()),
            pa.field("visits", pa.int64()),
            pa.field("ratio", pa.float64()),
        ]
    )
    result = applier.apply("db.t", batch([change("u", 2, 0, id=1, visits=2**40, ratio=0.1)], v2))

    assert sorted(result.schema_changes) == [
        "widened column 'id' from int to long",
        "widened column 'ratio' from float to double",
        "widened column 'visits' from int to long",
    ]
    schema = catalog.load_table("db.t").schema()
    assert isinstance(schema.find_field("visits").field_type, LongType)
    assert schema.identifier_field_names() == {"id"}
    assert content(catalog, "db.t") == [{"id": 1, "name": None, "visits": 2**40, "ratio": 0.1}]


@pytest.mark.parametrize(
    ("column", "new_type", "old_name", "new_name"),
    [
        ("name", pa.int32(), "string", "int"),
        ("amount", pa.int32(), "long", "int"),
        ("visits", pa.string(), "int", "string"),
    ],
)
def test_incompatible_change_raises_and_leaves_the_table_untouched(
    catalog: SqlCatalog, column: str, new_type: pa.DataType, old_name: str, new_name: str
) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    v0 = pa.schema(
        [
            pa.field("id", pa.int64()),
            pa.field("name", pa.string()),
            pa.field("visits", pa.int32()),
            pa.field("amount", pa.int64()),
        ]
    )
    applier.apply("db.t", batch([change("c", 1, 0, id=1, name="a", visits=1, amount=5)], v0))
    before = catalog.load_table("db.t").metadata

    changed = v0.set(v0.get_field_index(column), pa.field(column, new_type))
    rows = [change("c", 2, 0, id=2)]
    with pytest.raises(SchemaEvolutionError) as error:
        applier.apply("db.t", batch(rows, changed))
    message = str(error.value)
    assert "db.t" in message and repr(column) in message and old_name in message and new_name in message
    after = catalog.load_table("db.t").metadata
    assert after.current_snapshot_id == before.current_snapshot_id
    assert after.current_schema_id == before.current_schema_id
    assert applier.watermark("db.t") == Position(1, 0)


def test_narrowing_long_to_int_is_refused() -> None:
    schema = Schema(NestedField(1, "id", LongType(), required=True), identifier_field_ids=[1])
    with pytest.raises(SchemaEvolutionError, match=r"'id'.*long.*int"):
        plan_schema_evolution("db.t", schema, pa.schema([pa.field("id", pa.int32())]), ["id"])


def test_changed_key_columns_are_refused(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    applier.apply("db.t", batch([change("c", 1, 0, id=1, name="a", visits=1)], V1))
    with pytest.raises(SchemaEvolutionError, match="primary key"):
        applier.apply("db.t", batch([change("c", 2, 0, id=1, name="a", visits=1)], V1, ("id", "name")))


def test_columns_dropped_at_the_source_stay_and_fill_null(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    applier.apply("db.t", batch([change("c", 1, 0, id=1, name="a", visits=1)], V1))
    slim = pa.schema([pa.field("id", pa.int32()), pa.field("name", pa.string())])
    result = applier.apply("db.t", batch([change("c", 2, 0, id=2, name="b")], slim))

    assert result.schema_changes == []
    field = catalog.load_table("db.t").schema().find_field("visits")
    assert not field.required and isinstance(field.field_type, IntegerType)
    assert content(catalog, "db.t") == [
        {"id": 1, "name": "a", "visits": 1},
        {"id": 2, "name": "b", "visits": None},
    ]


def test_plan_describes_additions() -> None:
    schema = Schema(NestedField(1, "id", LongType(), required=True), identifier_field_ids=[1])
    plan = plan_schema_evolution(
        "db.t", schema, pa.schema([pa.field("id", pa.int64()), pa.field("x", pa.string())]), ["id"]
    )
    assert [(f.name, f.field_type) for f in plan.additions] == [("x", StringType())]
