"""The pyiceberg internals behind cdc/_pyiceberg_compat.py still have the signatures the wrappers use,
and no other CDC module reaches into pyiceberg internals."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.types import StringType

from hybrid_dagster.cdc import _pyiceberg_compat as compat

CDC_DIR = Path(compat.__file__).parent


@pytest.mark.parametrize("name", sorted(compat.CHECKED_SIGNATURES))
def test_internal_signature_is_unchanged(name: str) -> None:
    target, expected = compat.CHECKED_SIGNATURES[name]
    actual = tuple(inspect.signature(target).parameters)
    assert actual[: len(expected)] == expected, (
        f"{name} now takes {actual}; update hybrid_dagster/cdc/_pyiceberg_compat.py for this pyiceberg"
    )


def test_only_the_compat_module_imports_pyiceberg_internals() -> None:
    internal = re.compile(
        r"pyiceberg\.io\.pyarrow|\b_[a-z_]+_if_needed\b|\bArrowScan\b|\bWriteTask\b|\bwrite_file\b"
    )
    offenders = [
        str(path.relative_to(CDC_DIR))
        for path in CDC_DIR.rglob("*.py")
        if path.name != "_pyiceberg_compat.py" and internal.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_iceberg_schema_of_maps_arrow_types() -> None:
    schema = compat.iceberg_schema_of(pa.schema([pa.field("id", pa.int64()), pa.field("name", pa.string())]))
    assert [(f.name, str(f.field_type)) for f in schema.fields] == [("id", "long"), ("name", "string")]


def test_the_caching_transaction_builds_the_metadata_once_per_staged_state(tmp_path: Path) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/w")
    catalog.create_namespace("db")
    table = catalog.create_table("db.t", pa.schema([pa.field("id", pa.int64())]))
    txn = compat.MetadataCachingTransaction(table)
    first = txn.table_metadata
    assert txn.table_metadata is first
    txn.set_properties({"a": "1"})  # a staged update: built again, with it
    second = txn.table_metadata
    assert second is not first and second.properties["a"] == "1"
    with txn.update_schema() as update:
        update.add_column("name", StringType())
    assert txn.table_metadata.schema().find_field("name") is not None
    with txn.update_snapshot().fast_append():
        pass  # an empty append: a snapshot over the staged schema
    committed = txn.commit_transaction()
    assert committed.properties["a"] == "1" and committed.schema().find_field("name") is not None
    assert committed.current_snapshot() is not None
