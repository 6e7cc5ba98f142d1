"""Writing whole tables into a plane's Iceberg catalog, schema change and data in one commit."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.io import load_file_io
from pyiceberg.table import DataScan, Table, Transaction


def staged_rows(catalog: Catalog, txn: Transaction, columns: list[str]) -> pa.Table:
    """The rows of ``txn``'s staged (not yet committed) current snapshot, read back from its data files."""
    metadata = txn.table_metadata
    io = load_file_io({**catalog.properties, **metadata.properties}, metadata.location)
    return DataScan(table_metadata=metadata, io=io, selected_fields=tuple(columns)).to_arrow()


def replace_table(
    catalog: Catalog,
    identifier: str,
    data: pa.Table,
    before_commit: Callable[[pa.Table], None] | None = None,
) -> Table:
    """Make ``identifier`` hold exactly ``data``: created if missing, else schema evolved by name and
    overwritten, each in a single Iceberg commit (a crash leaves the old table or the new one).

    ``before_commit`` sees the rows as staged - read back from the new snapshot's data files - and may raise
    to abandon the commit (the transfer integrity check does).

    Example:
        >>> table = replace_table(plane.load_catalog(), "analytics.ward_occupancy", occupancy)
        >>> table.current_snapshot().summary["added-records"]
    """
    catalog.create_namespace_if_not_exists(identifier.rsplit(".", 1)[0])
    if catalog.table_exists(identifier):
        with catalog.load_table(identifier).transaction() as txn:
            with txn.update_schema() as update:
                update.union_by_name(data.schema)
            txn.overwrite(data)
            if before_commit is not None:  # raising here abandons the commit
                before_commit(staged_rows(catalog, txn, data.column_names))
    else:
        with catalog.create_table_transaction(identifier, schema=data.schema) as txn:
            txn.append(data)
            if before_commit is not None:
                before_commit(staged_rows(catalog, txn, data.column_names))
    return catalog.load_table(identifier)
