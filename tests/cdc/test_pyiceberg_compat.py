"""The pyiceberg internals behind cdc/_pyiceberg_compat.py still have the signatures the wrappers use,
and no other CDC module reaches into pyiceberg internals."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pyarrow as pa
import pytest

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
