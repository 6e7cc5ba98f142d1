"""The only module that uses pyiceberg internals: names pyiceberg does not document as public API.

Rules:

* Everything else in :mod:`hybrid_dagster.cdc` imports these wrappers, never ``pyiceberg.io.pyarrow``
  write/scan helpers or an underscore name of pyiceberg directly.
* :data:`CHECKED_SIGNATURES` lists the parameters each internal had when this module was last checked
  (pyiceberg 0.12); ``tests/cdc/test_pyiceberg_compat.py`` compares them with the installed pyiceberg, so
  an upgrade that changes one fails there, by name, instead of deep inside an apply.
* The wrappers pass arguments by keyword where the internal allows it, so a reordering cannot swap them.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import (
    ArrowScan,
    _dataframe_to_data_files,
    bin_pack_arrow_table,
    pyarrow_to_schema,
    schema_to_pyarrow,
    write_file,
)
from pyiceberg.manifest import DataFile
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, Table, TableProperties, Transaction, WriteTask
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update.snapshot import UpdateSnapshot, _MergeAppendFiles, _OverwriteFiles

CHECKED_SIGNATURES: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
    "pyiceberg.io.pyarrow.ArrowScan": (
        ArrowScan.__init__,
        ("self", "table_metadata", "io", "projected_schema", "row_filter", "case_sensitive", "limit"),
    ),
    "pyiceberg.io.pyarrow.ArrowScan.to_table": (ArrowScan.to_table, ("self", "tasks")),
    "pyiceberg.io.pyarrow._dataframe_to_data_files": (
        _dataframe_to_data_files,
        ("table_metadata", "df", "io", "write_uuid", "counter"),
    ),
    "pyiceberg.io.pyarrow.bin_pack_arrow_table": (bin_pack_arrow_table, ("tbl", "target_file_size")),
    "pyiceberg.io.pyarrow.write_file": (write_file, ("io", "table_metadata", "tasks")),
    "pyiceberg.io.pyarrow.pyarrow_to_schema": (
        pyarrow_to_schema,
        ("schema", "name_mapping", "downcast_ns_timestamp_to_us", "format_version"),
    ),
    "pyiceberg.io.pyarrow.schema_to_pyarrow": (
        schema_to_pyarrow,
        ("schema", "metadata", "include_field_ids", "file_format"),
    ),
    "pyiceberg.table.FileScanTask": (
        FileScanTask.__init__,
        ("self", "data_file", "delete_files", "residual"),
    ),
    "pyiceberg.table.WriteTask": (
        WriteTask,
        ("write_uuid", "task_id", "schema", "record_batches", "sort_order_id", "partition_key"),
    ),
    "pyiceberg.catalog.Catalog._convert_schema_if_needed": (
        Catalog._convert_schema_if_needed,
        ("schema", "format_version"),
    ),
    "pyiceberg.table.Transaction": (Transaction.__init__, ("self", "table", "autocommit")),
    "pyiceberg.table.update.snapshot.UpdateSnapshot": (
        UpdateSnapshot.__init__,
        ("self", "transaction", "io", "branch", "snapshot_properties"),
    ),
    "pyiceberg.table.update.snapshot._OverwriteFiles": (
        _OverwriteFiles.__init__,
        ("self", "operation", "transaction", "io", "commit_uuid", "snapshot_properties", "branch"),
    ),
    "pyiceberg.table.update.snapshot._MergeAppendFiles._process_manifests": (
        _MergeAppendFiles._process_manifests,
        ("self", "manifests"),
    ),
    "pyiceberg.table.update.snapshot._MergeAppendFiles": (
        _MergeAppendFiles.__init__,
        ("self", "operation", "transaction", "io", "branch", "commit_uuid", "snapshot_properties"),
    ),
}
"""Internal name -> (the object, its parameter names in order, as checked)."""


class MetadataCachingTransaction(Transaction):
    """A pyiceberg :class:`~pyiceberg.table.Transaction` that builds its ``table_metadata`` once per state.

    pyiceberg rebuilds it (the table's metadata with every staged update applied, deep copies included)
    at each access, and a snapshot commit reads it about 17 times: a cost that grows with the table's
    history, paid on every CDC batch. The result is kept until the staged updates or the table's metadata
    change (pyiceberg replaces both objects, never mutates them, so their identity marks the state).

    Example:
        >>> txn = MetadataCachingTransaction(table)  # doctest: +SKIP
        >>> txn.table_metadata is txn.table_metadata  # doctest: +SKIP
        True
    """

    def __init__(self, table: Table, autocommit: bool = False) -> None:
        super().__init__(table, autocommit=autocommit)
        self._built: tuple[TableMetadata, tuple[Any, ...], TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        built, base, updates = self._built, self._table.metadata, self._updates
        if built is not None and built[0] is base and built[1] is updates:
            return built[2]
        metadata = super().table_metadata
        self._built = (base, updates, metadata)
        return metadata


MANIFEST_MERGE_ENABLED = "commit.manifest-merge.enabled"


def merging_append(update: UpdateSnapshot, properties: dict[str, str]) -> _MergeAppendFiles:
    """``update.merge_append()``, merging manifests as Iceberg's Java appends do by default.

    Java's ``commit.manifest-merge.enabled`` defaults to true, pyiceberg's to false: without merging
    every append adds a manifest that stays in every later snapshot, and reading the table reads them
    all. Merging is on here unless the table's ``properties`` set it to false; it happens, as in Java,
    once a bin holds ``commit.manifest.min-count-to-merge`` manifests (default 100).

    Example:
        >>> with merging_append(txn.update_snapshot(), table.properties) as append:  # doctest: +SKIP
        ...     append.append_data_file(data_file)
    """
    append = update.merge_append()
    if not hasattr(append, "_merge_enabled"):
        raise RuntimeError(
            "pyiceberg's _MergeAppendFiles no longer has _merge_enabled: update "
            "hybrid_dagster/cdc/_pyiceberg_compat.py for this pyiceberg"
        )
    append._merge_enabled = merge_enabled(properties)
    return append


class _MergingOverwriteFiles(_OverwriteFiles):
    """pyiceberg's overwrite with its merge-append's manifest merging (Java's overwrite merges too): the
    new manifest, the rewritten ones and the untouched ones are bin-packed and merged the same way."""

    _process_manifests = _MergeAppendFiles._process_manifests

    def __init__(self, update: UpdateSnapshot, properties: dict[str, str], **kwargs: Any) -> None:
        super().__init__(
            transaction=update._transaction,
            io=update._io,
            branch=update._branch,
            snapshot_properties=update._snapshot_properties,
            **kwargs,
        )
        self._target_size_bytes = int(
            properties.get(
                TableProperties.MANIFEST_TARGET_SIZE_BYTES, TableProperties.MANIFEST_TARGET_SIZE_BYTES_DEFAULT
            )
        )
        self._min_count_to_merge = min_count_to_merge(properties)
        self._merge_enabled = merge_enabled(properties)


def merging_overwrite(update: UpdateSnapshot, properties: dict[str, str]) -> _OverwriteFiles:
    """``update.overwrite()`` that merges manifests like :func:`merging_append` (pyiceberg's overwrite
    never does): without it, every overwrite opens every manifest of the table to find the deleted
    files, and their number grows by at least one per commit.

    Example:
        >>> with merging_overwrite(txn.update_snapshot(), table.properties) as overwrite:  # doctest: +SKIP
        ...     overwrite.delete_data_file(old)
        ...     overwrite.append_data_file(new)
    """
    plain = update.overwrite()  # pyiceberg's choice of operation (an append on a table without snapshots)
    return _MergingOverwriteFiles(update, properties, operation=plain._operation)


def merge_enabled(properties: dict[str, str]) -> bool:
    """Whether a table with these ``properties`` merges manifests: Java's default (true) unless it says
    ``commit.manifest-merge.enabled=false``."""
    return properties.get(MANIFEST_MERGE_ENABLED, "true").strip().lower() == "true"


def min_count_to_merge(properties: dict[str, str]) -> int:
    """``commit.manifest.min-count-to-merge`` of a table with these ``properties`` (default 100)."""
    return int(
        properties.get(
            TableProperties.MANIFEST_MIN_MERGE_COUNT, TableProperties.MANIFEST_MIN_MERGE_COUNT_DEFAULT
        )
    )


def iceberg_schema_of(data_schema: pa.Schema) -> Schema:
    """The Iceberg schema (field ids not yet assigned) of an Arrow schema, as ``create_table`` builds it.

    Example:
        >>> iceberg_schema_of(pa.schema([pa.field("id", pa.int64())])).find_field("id").field_type
        LongType()
    """
    return Catalog._convert_schema_if_needed(data_schema)


def arrow_schema_of(schema: Schema) -> pa.Schema:
    """The Arrow schema of a table's rows, with the regular string and binary types that scans return.

    Example:
        >>> arrow_schema_of(table.schema()).names  # doctest: +SKIP
        ['id', 'name']
    """
    smaller = {pa.large_string(): pa.string(), pa.large_binary(): pa.binary()}
    arrow = schema_to_pyarrow(schema, include_field_ids=False)
    return pa.schema([f.with_type(smaller.get(f.type, f.type)) for f in arrow], metadata=arrow.metadata)


def read_data_files(metadata: TableMetadata, io: FileIO, files: list[DataFile]) -> pa.Table:
    """All rows of ``files`` (data files of the table ``metadata`` describes), in its current schema.

    Example:
        >>> rows = read_data_files(table.metadata, table.io, files)  # doctest: +SKIP
    """
    scan = ArrowScan(metadata, io, metadata.schema(), AlwaysTrue())
    return scan.to_table([FileScanTask(data_file) for data_file in files])


def write_data_files(
    metadata: TableMetadata, io: FileIO, parts: list[pa.Table], target_file_size: int
) -> list[DataFile]:
    """Write each part into data files of its own (never mixing two parts in one file), uncommitted.

    A partitioned table goes through pyiceberg's own partitioned writer per part; an unpartitioned one is
    bin-packed to ``target_file_size`` bytes per file.

    Example:
        >>> files = write_data_files(table.metadata, table.io, [rows], 64 * 2**20)  # doctest: +SKIP
    """
    write_uuid = uuid.uuid4()
    counter = itertools.count(0)
    if not metadata.spec().is_unpartitioned():
        return [
            data_file for part in parts for data_file in _partitioned(metadata, part, io, write_uuid, counter)
        ]
    task_schema = pyarrow_to_schema(
        parts[0].schema, name_mapping=metadata.schema().name_mapping, format_version=metadata.format_version
    )
    tasks = [
        WriteTask(write_uuid=write_uuid, task_id=next(counter), record_batches=batches, schema=task_schema)
        for part in parts
        for batches in bin_pack_arrow_table(part, target_file_size)
    ]
    return list(write_file(io, metadata, iter(tasks)))


def _partitioned(
    metadata: TableMetadata, part: pa.Table, io: FileIO, write_uuid: uuid.UUID, counter: itertools.count[int]
) -> Iterable[DataFile]:
    return _dataframe_to_data_files(
        table_metadata=metadata, df=part, io=io, write_uuid=write_uuid, counter=counter
    )


def ensure_namespace(catalog: Catalog, namespace: str) -> None:
    """Create ``namespace`` unless it exists, also when another writer creates it at the same moment.

    pyiceberg's SQL catalog checks, then inserts: two writers racing (two consumers of one group, two
    runs) can both pass the check, and the second insert fails with the database's unique-constraint
    error rather than ``NamespaceAlreadyExistsError``. Whatever the error, a namespace that exists
    afterwards is what was asked for.

    Example:
        >>> ensure_namespace(catalog, "clinical")  # doctest: +SKIP
    """
    try:
        catalog.create_namespace_if_not_exists(namespace)
    except Exception:
        if not catalog.namespace_exists(namespace):
            raise
