"""Create the Iceberg table a CDC stream lands in, with the source's key columns as identifier fields.

Rules: the key columns are required (not null) identifier fields; a table that exists with other
identifier fields is an error, never silently re-keyed; the table's own commit retries are off (the
applier retries itself, re-reading the watermark, which a rebased commit would skip); creating a table
that another writer created meanwhile loads theirs.
"""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import TableAlreadyExistsError
from pyiceberg.schema import Schema, assign_fresh_schema_ids
from pyiceberg.table import Table, TableProperties

from hybrid_dagster.cdc._pyiceberg_compat import ensure_namespace
from hybrid_dagster.cdc.sink.schema_evolution import SchemaEvolutionError, iceberg_schema_of


def check_identifier_fields(table: Table, identifier: str, key_columns: list[str]) -> None:
    """Raise :class:`SchemaEvolutionError` if ``table`` is keyed on other columns than ``key_columns``."""
    identifier_names = sorted(table.schema().identifier_field_names())
    if identifier_names and identifier_names != sorted(key_columns):
        raise SchemaEvolutionError(
            f"{identifier}: primary key is {identifier_names} in Iceberg, not {sorted(key_columns)}"
        )


def create_table(
    catalog: Catalog,
    identifier: str,
    data_schema: pa.Schema,
    key_columns: list[str],
    *,
    target_file_size_bytes: int,
    properties: dict[str, str] | None = None,
) -> Table:
    """Create ``identifier`` (and its namespace) for rows of ``data_schema`` keyed on ``key_columns``.

    Example:
        >>> size = 64 * 2**20
        >>> table = create_table(catalog, "crm.p", schema, ["id"], target_file_size_bytes=size)
    """
    missing = [k for k in key_columns if k not in data_schema.names]
    if missing:
        raise SchemaEvolutionError(f"{identifier}: key columns {missing} are not in the source schema")
    required = pa.schema(
        [f.with_nullable(False) if f.name in key_columns else f for f in data_schema], metadata=None
    )
    fresh = assign_fresh_schema_ids(iceberg_schema_of(required))
    try:
        schema = Schema(
            *fresh.fields, identifier_field_ids=[fresh.find_field(k).field_id for k in key_columns]
        )
    except ValueError as error:
        raise SchemaEvolutionError(
            f"{identifier}: {key_columns} cannot be Iceberg identifier fields: {error}"
        ) from error
    namespace = identifier.rsplit(".", 1)[0]
    ensure_namespace(catalog, namespace)
    table_properties = {
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES: str(target_file_size_bytes),
        TableProperties.COMMIT_NUM_RETRIES: "0",
        **(properties or {}),
    }
    try:
        return catalog.create_table(identifier, schema=schema, properties=table_properties)
    except TableAlreadyExistsError:
        return catalog.load_table(identifier)
