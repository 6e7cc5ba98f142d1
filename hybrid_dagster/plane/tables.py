"""Writing whole tables into a plane's Iceberg catalog, labelled, schema change and data in one commit."""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from hybrid_dagster.residency.labels import TableLabel, read_label
from hybrid_dagster.residency.model import PlaneRef


def replace_table(catalog: Catalog, identifier: str, data: pa.Table, label: TableLabel) -> Table:
    """Make ``identifier`` hold exactly ``data`` with ``label`` in its properties: created if missing, else
    schema evolved by name and overwritten, each in a single Iceberg commit (a crash leaves the old table
    or the new one, each with its own label).

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
    else:
        with catalog.create_table_transaction(
            identifier, schema=data.schema, properties=label.properties()
        ) as txn:
            txn.append(data)
    return catalog.load_table(identifier)


def table_label(table: Table, storage_plane: PlaneRef) -> TableLabel:
    """The residency label of ``table`` as stored in ``storage_plane`` (fail-closed when missing)."""
    return read_label(table.properties, storage_plane)
