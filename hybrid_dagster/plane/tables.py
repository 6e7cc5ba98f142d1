"""Writing whole tables into a plane's Iceberg catalog, labelled, schema change and data in one commit."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.io import load_file_io
from pyiceberg.table import DataScan, Table, Transaction

from hybrid_dagster.residency.labels import TableLabel, read_label
from hybrid_dagster.residency.model import PlaneRef


def staged_rows(catalog: Catalog, txn: Transaction, columns: list[str]) -> pa.Table:
    """The rows of ``txn``'s staged (not yet committed) current snapshot, read back from its data files."""
    metadata = txn.table_metadata
    io = load_file_io({**catalog.properties, **metadata.properties}, metadata.location)
    return DataScan(table_metadata=metadata, io=io, selected_fields=tuple(columns)).to_arrow()


def replace_table(
    catalog: Catalog,
    identifier: str,
    data: pa.Table,
    label: TableLabel,
    before_commit: Callable[[pa.Table], None] | None = None,
) -> Table:
    """Make ``identifier`` hold exactly ``data`` with ``label`` in its properties: created if missing, else
    schema evolved by name and overwritten, each in a single Iceberg commit (a crash leaves the old table
    or the new one, each with its own label).

    ``before_commit`` sees the rows as staged - read back from the new snapshot's data files - and may
    raise to abandon the commit (the transfer integrity check does).

    Example:
        >>> table = replace_table(catalog, "analytics.ward_occupancy", occupancy, label)
        >>> table.properties["hybrid.classification"]
    """
    catalog.create_namespace_if_not_exists(identifier.rsplit(".", 1)[0])
    if catalog.table_exists(identifier):
        with catalog.load_table(identifier).transaction() as txn:
            txn.set_properties(label.properties())
            with txn.update_schema() as update:
                update.union_by_name(data.schema)
            txn.overwrite(data)
            if before_commit is not None:  # raising here abandons the commit
                before_commit(staged_rows(catalog, txn, data.column_names))
    else:
        with catalog.create_table_transaction(
            identifier, schema=data.schema, properties=label.properties()
        ) as txn:
            txn.append(data)
            if before_commit is not None:
                before_commit(staged_rows(catalog, txn, data.column_names))
    return catalog.load_table(identifier)


def table_label(table: Table, storage_plane: PlaneRef) -> TableLabel:
    """The residency label of ``table`` as stored in ``storage_plane`` (fail-closed when missing)."""
    return read_label(table.properties, storage_plane)
