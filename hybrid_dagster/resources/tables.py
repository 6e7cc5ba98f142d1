"""Writing whole tables into a plane's Iceberg catalog, schema change and data in one commit."""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table


def replace_table(catalog: Catalog, identifier: str, data: pa.Table) -> Table:
    """Make ``identifier`` hold exactly ``data``: created if missing, else schema evolved by name and
    overwritten, each in a single Iceberg commit (a crash leaves the old table or the new one).

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
    else:
        with catalog.create_table_transaction(identifier, schema=data.schema) as txn:
            txn.append(data)
    return catalog.load_table(identifier)
