"""Apply normalized CDC change batches to Apache Iceberg tables, exactly once, copy-on-write.

One :meth:`IcebergApplier.apply` call:

1. orders the changes and drops those at or below the table's watermark (a replay is a no-op);
2. evolves the schema (new columns, safe widening) in the same transaction as the data;
3. writes the raw changes to the changelog (if configured);
4. collapses the batch to the last change per key (truncates, key changes, TOAST values);
5. rewrites only the data files whose key range holds a touched key, sorted by key, and adds the new
   keys in new files: the deletes of old files and the adds of new ones land in ONE snapshot, whose
   summary records the source position;
6. on a concurrent commit, refreshes, re-reads the watermark and redoes the work.

Files written for an attempt (data files, changelog files) are deleted when its commit certainly did
not happen: an error before the commit, or a commit the catalog rejected (``CommitFailedException``,
``ValidationException``). When the outcome is unknown (``CommitStateUnknownException``, or any other
error from the catalog call) they are kept, since the snapshot may point at them.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    TableAlreadyExistsError,
    ValidationException,
)
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import (
    ArrowScan,
    _dataframe_to_data_files,
    bin_pack_arrow_table,
    pyarrow_to_schema,
    schema_to_pyarrow,
    write_file,
)
from pyiceberg.manifest import DataFile
from pyiceberg.schema import Schema, assign_fresh_schema_ids
from pyiceberg.table import FileScanTask, Table, TableProperties, WriteTask
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.types import PrimitiveType

from hybrid_dagster.cdc.changelog import ChangelogWriter
from hybrid_dagster.cdc.changes import Position, TableChanges
from hybrid_dagster.cdc.collapse import (
    ROW_COL,
    UNCHANGED_COL,
    CollapsedChanges,
    Key,
    after_position,
    apply_carried_values,
    carry_forward_in_batch,
    collapse,
    last_position,
    needs_carry_forward,
    order_changes,
)
from hybrid_dagster.cdc.pruning import FilePlan, comparable, live_data_files, plan_files
from hybrid_dagster.cdc.schema_evolution import SchemaEvolutionError, iceberg_schema_of, plan_schema_evolution
from hybrid_dagster.cdc.watermark import (
    DELETED_PROPERTY,
    EVENTS_PROPERTY,
    INSERTED_PROPERTY,
    TRUNCATED_PROPERTY,
    UPDATED_PROPERTY,
    position_properties,
    read_watermark,
)

__all__ = ["ApplyResult", "IcebergApplier", "SchemaEvolutionError"]

logger = logging.getLogger(__name__)


@dataclass
class ApplyResult:
    """What one apply did: counts, files, the new watermark and schema changes.

    Metadata only (no row values), so it can be reported to the control plane.
    """

    identifier: str
    snapshot_id: int | None
    events_received: int
    events_skipped: int
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    truncated: bool = False
    files_rewritten: int = 0
    files_added: int = 0
    watermark: Position | None = None
    schema_changes: list[str] = field(default_factory=list)
    schema_id: int = 0
    row_count: int = 0
    duration_s: float = 0.0


_OUTCOME_UNKNOWN = "_hybrid_commit_outcome_unknown"
"""Set on an error from the catalog commit call whose outcome is unknown: its files are kept."""


@dataclass
class _Rewrite:
    """The outcome of planning and writing one batch, before the commit."""

    deleted_files: list[DataFile]
    added_files: list[DataFile]
    inserted: int
    updated: int
    deleted: int


class IcebergApplier:
    """Applies change batches of one CDC source to Iceberg tables of one catalog.

    Example:
        >>> applier = IcebergApplier(catalog, source_id="postgres://db:5432/crm#slot")  # doctest: +SKIP
        >>> applier.ensure_table("crm.patients", data_schema, ["id"])  # doctest: +SKIP
        >>> result = applier.apply("crm.patients", changes)  # doctest: +SKIP
        >>> result.watermark, result.inserted, result.updated, result.deleted  # doctest: +SKIP
        (Position(commit=24023128, event=24023200), 20000, 70000, 10000)
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        source_id: str,
        changelog: ChangelogWriter | None = None,
        before_write: Callable[[str], None] | None = None,
        target_file_size_bytes: int = 64 * 1024 * 1024,
        max_commit_retries: int = 5,
    ) -> None:
        self.catalog = catalog
        self.source_id = source_id
        self.changelog = changelog
        self.before_write = before_write
        self.target_file_size_bytes = target_file_size_bytes
        self.max_commit_retries = max_commit_retries

    # -- tables -------------------------------------------------------------------------------------

    def ensure_table(
        self,
        identifier: str,
        data_schema: pa.Schema,
        key_columns: list[str],
        properties: dict[str, str] | None = None,
    ) -> Table:
        """Load the table, or create it (and its namespace) with the key columns as identifier fields.

        Raises:
            SchemaEvolutionError: the existing table has other identifier fields.
        """
        table = self._load(identifier)
        if table is None:
            self._guard(identifier)
            return self._create(identifier, data_schema, key_columns, properties)
        identifier_names = sorted(table.schema().identifier_field_names())
        if identifier_names and identifier_names != sorted(key_columns):
            raise SchemaEvolutionError(
                f"{identifier}: primary key is {identifier_names} in Iceberg, not {sorted(key_columns)}"
            )
        return table

    def record_position(self, identifier: str, position: Position) -> None:
        """Commit an empty snapshot recording ``position`` (e.g. after copying a table with no rows).

        Example:
            >>> applier.record_position("crm.patients", Position(24023127, 0))  # doctest: +SKIP
        """
        table = self._load(identifier)
        if table is None:
            raise NoSuchTableError(
                f"{identifier}: create the table (ensure_table) before recording a position"
            )
        current = read_watermark(table, self.source_id)
        if current is not None and current >= position:
            return
        self._guard(identifier)
        with (
            table.transaction() as txn,
            txn.update_snapshot(
                snapshot_properties=position_properties(self.source_id, position)
            ).fast_append(),
        ):
            pass

    def watermark(self, identifier: str) -> Position | None:
        """The last position of this source applied to the table (None if none, or no table)."""
        table = self._load(identifier)
        return None if table is None else read_watermark(table, self.source_id)

    def _load(self, identifier: str) -> Table | None:
        try:
            return self.catalog.load_table(identifier)
        except NoSuchTableError:
            return None

    def _create(
        self,
        identifier: str,
        data_schema: pa.Schema,
        key_columns: list[str],
        properties: dict[str, str] | None,
    ) -> Table:
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
        with contextlib.suppress(NamespaceAlreadyExistsError):
            self.catalog.create_namespace(namespace)
        table_properties = {
            TableProperties.WRITE_TARGET_FILE_SIZE_BYTES: str(self.target_file_size_bytes),
            # The applier retries itself: it must re-read the watermark, which a rebased commit would skip.
            TableProperties.COMMIT_NUM_RETRIES: "0",
            **(properties or {}),
        }
        try:
            return self.catalog.create_table(identifier, schema=schema, properties=table_properties)
        except TableAlreadyExistsError:
            return self.catalog.load_table(identifier)

    def _guard(self, identifier: str) -> None:
        if self.before_write is not None:
            self.before_write(identifier)

    # -- apply --------------------------------------------------------------------------------------

    def apply(self, identifier: str, changes: TableChanges) -> ApplyResult:
        """Apply ``changes`` to the table ``identifier`` (created if missing); idempotent on replay.

        Raises:
            SchemaEvolutionError: the source schema changed incompatibly; nothing was written.
            CommitFailedException: concurrent commits kept winning after ``max_commit_retries`` retries.
        """
        started = time.perf_counter()
        ordered = order_changes(changes.rows)
        guarded = False
        # The changes and changelog files of an attempt whose commit was rejected.
        failed_log: tuple[pa.Table, list[str]] | None = None
        for attempt in range(self.max_commit_retries + 1):
            table = self._load(identifier)
            if table is None:
                self._guard(identifier)
                guarded = True
                table = self._create(identifier, changes.data_schema, changes.key_columns, None)
            watermark = read_watermark(table, self.source_id)
            if failed_log is not None:
                self._settle_changelog(identifier, changes, *failed_log, watermark)
                failed_log = None
            pending = after_position(ordered, watermark)
            if pending.num_rows == 0:
                return ApplyResult(
                    identifier=identifier,
                    snapshot_id=None,
                    events_received=ordered.num_rows,
                    events_skipped=ordered.num_rows,
                    watermark=watermark,
                    schema_id=table.metadata.current_schema_id,
                    row_count=_row_count(table),
                    duration_s=time.perf_counter() - started,
                )
            if not guarded:
                self._guard(identifier)
                guarded = True
            changelog_paths: list[str] = []
            try:
                result = self._apply_pending(table, identifier, changes, pending, changelog_paths)
            except (CommitFailedException, ValidationException) as error:
                if attempt == self.max_commit_retries:
                    self._discard_changelog(changelog_paths)
                    raise
                failed_log = (pending, changelog_paths)
                logger.info("%s: concurrent commit (%s), retrying (%d)", identifier, error, attempt + 1)
                continue
            except BaseException as error:
                if not getattr(error, _OUTCOME_UNKNOWN, False):
                    self._discard_changelog(changelog_paths)  # nothing was committed
                raise
            result.events_received = ordered.num_rows
            result.events_skipped = ordered.num_rows - pending.num_rows
            result.duration_s = time.perf_counter() - started
            return result
        raise AssertionError("unreachable")

    def _settle_changelog(
        self,
        identifier: str,
        changes: TableChanges,
        failed: pa.Table,
        paths: list[str],
        watermark: Position | None,
    ) -> None:
        """Make the changelog of a rejected attempt hold only what was committed meanwhile.

        The retry logs the changes after the (new) watermark under its own name; the rejected attempt's
        file (named after its first change) keeps only the changes another writer of this source
        committed in between (none: the file goes), so each committed change is logged once.
        """
        if self.changelog is None or not paths:
            return
        committed = failed.slice(0, failed.num_rows - after_position(failed, watermark).num_rows)
        if committed.num_rows == 0:
            self._discard_changelog(paths)
            return
        kept = set(self.changelog.write(identifier, replace(changes, rows=committed)))
        self._discard_changelog([p for p in paths if p not in kept])

    def _discard_changelog(self, paths: list[str]) -> None:
        if self.changelog is None:
            return
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                self.changelog.filesystem.delete_file(path)

    def _apply_pending(
        self,
        table: Table,
        identifier: str,
        changes: TableChanges,
        pending: pa.Table,
        changelog_paths: list[str],
    ) -> ApplyResult:
        """One attempt; the changelog files it writes are added to ``changelog_paths``."""
        plan = plan_schema_evolution(identifier, table.schema(), changes.data_schema, changes.key_columns)
        txn = table.transaction()
        if not plan.empty:
            with txn.update_schema() as update:
                plan.apply(update)
        metadata = txn.table_metadata
        if self.changelog is not None:
            changelog_paths.extend(self.changelog.write(identifier, replace(changes, rows=pending)))

        net = collapse(pending, changes.key_columns)
        rewrite = self._rewrite(table, metadata, net, changes.key_columns)
        position = last_position(pending)
        properties = {
            **position_properties(self.source_id, position),
            EVENTS_PROPERTY: str(pending.num_rows),
            INSERTED_PROPERTY: str(rewrite.inserted),
            UPDATED_PROPERTY: str(rewrite.updated),
            DELETED_PROPERTY: str(rewrite.deleted),
            TRUNCATED_PROPERTY: str(net.truncated).lower(),
        }
        try:
            with txn.update_snapshot(snapshot_properties=properties).overwrite() as overwrite:
                for data_file in rewrite.deleted_files:
                    overwrite.delete_data_file(data_file)
                for data_file in rewrite.added_files:
                    overwrite.append_data_file(data_file)
        except BaseException:
            self._delete_files(table, rewrite.added_files)  # the commit was not attempted
            raise
        try:
            committed = txn.commit_transaction()
        except (CommitFailedException, ValidationException):
            self._delete_files(table, rewrite.added_files)  # rejected: the snapshot does not exist
            raise
        except BaseException as error:
            # The commit may have succeeded: its snapshot would point at these files. Keep them.
            logger.warning(
                "%s: commit outcome unknown (%s): keeping %d written files",
                identifier,
                type(error).__name__,
                len(rewrite.added_files),
            )
            with contextlib.suppress(AttributeError, TypeError):
                setattr(error, _OUTCOME_UNKNOWN, True)
            raise
        snapshot = committed.current_snapshot()
        return ApplyResult(
            identifier=identifier,
            snapshot_id=None if snapshot is None else snapshot.snapshot_id,
            events_received=0,
            events_skipped=0,
            inserted=rewrite.inserted,
            updated=rewrite.updated,
            deleted=rewrite.deleted,
            truncated=net.truncated,
            files_rewritten=len(rewrite.deleted_files),
            files_added=len(rewrite.added_files),
            watermark=position,
            schema_changes=plan.describe(),
            schema_id=committed.metadata.current_schema_id,
            row_count=_row_count(committed),
        )

    @staticmethod
    def _delete_files(table: Table, files: list[DataFile]) -> None:
        for data_file in files:
            table.io.delete(data_file.file_path)

    # -- copy-on-write ------------------------------------------------------------------------------

    def _rewrite(
        self, table: Table, metadata: TableMetadata, net: CollapsedChanges, keys: list[str]
    ) -> _Rewrite:
        schema = metadata.schema()
        arrow_schema = _arrow_schema(schema)
        upserts = net.upserts
        touched = _conform(net.touched_keys, pa.schema([arrow_schema.field(k) for k in keys]))

        files = live_data_files(table, metadata)
        key_field = schema.find_field(keys[0])
        key_type = key_field.field_type
        assert isinstance(key_type, PrimitiveType), f"key column {keys[0]} must be a primitive type"
        if net.truncated:
            file_plan = FilePlan(files, np.array([], dtype=object), np.array([], dtype=object), False)
            existing = arrow_schema.empty_table()
        else:
            touched_first = comparable(touched[keys[0]], key_type)
            file_plan = plan_files(files, key_field.field_id, key_type, touched_first)
            existing = self._read(table, metadata, file_plan.candidates, arrow_schema)

        hit = _key_mask(existing, touched, keys)
        kept = existing.filter(pc.invert(hit))
        # Only the keys of the touched rows are needed, unless unchanged values must be carried forward.
        touched_keys = existing.select(keys).filter(hit)

        if needs_carry_forward(upserts):
            found, pending_values = carry_forward_in_batch(net, keys)
            lookup = _row_lookup(existing.filter(hit), keys)
            upserts = apply_carried_values(upserts, found, pending_values, lookup)
        new_rows = _conform(upserts.drop_columns([UNCHANGED_COL, ROW_COL]), arrow_schema)

        existed = _key_mask(new_rows.select(keys), touched_keys, keys)
        updated = int(pc.sum(existed).as_py() or 0)
        deleted = int(
            pc.sum(_key_mask(_conform(net.deletes, touched.schema), touched_keys, keys)).as_py() or 0
        )

        # Each cluster of overlapping files is rewritten into files of its own, so file key ranges stay
        # narrow; new keys outside every cluster go to new files. Kept rows usually form one cluster,
        # so only the (small) upserts need partitioning.
        kept_parts = _by_cluster(
            kept, file_plan.cluster_of(comparable(kept[keys[0]], key_type), kept.num_rows)
        )
        new_parts = _by_cluster(
            new_rows, file_plan.cluster_of(comparable(new_rows[keys[0]], key_type), new_rows.num_rows)
        )
        parts = [
            pa.concat_tables([p for p in (kept_parts.get(g), new_parts.get(g)) if p is not None])
            for g in sorted(kept_parts.keys() | new_parts.keys())
        ]
        added_files = self._write(table, metadata, parts)
        return _Rewrite(
            deleted_files=file_plan.candidates,
            added_files=added_files,
            inserted=new_rows.num_rows - updated,
            updated=updated,
            deleted=deleted,
        )

    def _read(
        self, table: Table, metadata: TableMetadata, files: list[DataFile], arrow_schema: pa.Schema
    ) -> pa.Table:
        if not files:
            return arrow_schema.empty_table()
        scan = ArrowScan(metadata, table.io, metadata.schema(), AlwaysTrue())
        return _conform(scan.to_table([FileScanTask(f) for f in files]), arrow_schema)

    def _write(self, table: Table, metadata: TableMetadata, parts: list[pa.Table]) -> list[DataFile]:
        """Write each part (the rows of one cluster) into data files of its own."""
        parts = [part for part in parts if part.num_rows]
        if not parts:
            return []
        target = int(
            metadata.properties.get(TableProperties.WRITE_TARGET_FILE_SIZE_BYTES, self.target_file_size_bytes)
        )
        write_uuid = uuid.uuid4()
        counter = itertools.count(0)
        if not metadata.spec().is_unpartitioned():
            return [
                data_file
                for part in parts
                for data_file in _dataframe_to_data_files(metadata, part, table.io, write_uuid, counter)
            ]
        task_schema = pyarrow_to_schema(
            parts[0].schema,
            name_mapping=metadata.schema().name_mapping,
            format_version=metadata.format_version,
        )
        tasks = [
            WriteTask(
                write_uuid=write_uuid, task_id=next(counter), record_batches=batches, schema=task_schema
            )
            for part in parts
            for batches in bin_pack_arrow_table(part, target)
        ]
        return list(write_file(table.io, metadata, iter(tasks)))


def _arrow_schema(schema: Schema) -> pa.Schema:
    """The Arrow schema of a table's rows, with the regular string and binary types that scans return."""
    smaller = {pa.large_string(): pa.string(), pa.large_binary(): pa.binary()}
    arrow = schema_to_pyarrow(schema, include_field_ids=False)
    return pa.schema([f.with_type(smaller.get(f.type, f.type)) for f in arrow], metadata=arrow.metadata)


def _by_cluster(rows: pa.Table, groups: np.ndarray) -> dict[int, pa.Table]:
    """``rows`` split by cluster index; inside a file order does not matter to pruning (it uses the
    file's key bounds), so a stable partition stands in for a sort."""
    if rows.num_rows == 0:
        return {}
    if groups.min() == groups.max():
        return {int(groups[0]): rows}
    order = np.argsort(groups, kind="stable")
    ordered = groups[order]
    rows = rows.take(pa.array(order))
    cuts = [0, *(np.flatnonzero(np.diff(ordered)) + 1).tolist(), rows.num_rows]
    return {int(ordered[start]): rows.slice(start, stop - start) for start, stop in itertools.pairwise(cuts)}


def _row_count(table: Table) -> int:
    snapshot = table.current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return 0
    return int(snapshot.summary["total-records"] or 0)


def _conform(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """``rows`` with exactly the columns of ``schema``: cast, and null where a column is missing."""
    if rows.schema.equals(schema):
        return rows
    columns: list[pa.ChunkedArray | pa.Array] = []
    for target in schema:
        if target.name in rows.column_names:
            column = rows[target.name]
            columns.append(column if column.type.equals(target.type) else column.cast(target.type))
        else:
            columns.append(pa.nulls(rows.num_rows, target.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _key_mask(rows: pa.Table, keys_table: pa.Table, keys: list[str]) -> pa.ChunkedArray | pa.Array:
    """Boolean mask of the rows of ``rows`` whose key is in ``keys_table``."""
    if rows.num_rows == 0 or keys_table.num_rows == 0:
        return pa.array(np.zeros(rows.num_rows, dtype=bool))
    if len(keys) == 1:
        return pc.is_in(rows[keys[0]], value_set=keys_table[keys[0]].combine_chunks())
    index_col = "__index"
    indexed = rows.select(keys).append_column(index_col, pa.array(np.arange(rows.num_rows, dtype=np.int64)))
    matched = indexed.join(keys_table.select(keys), keys=keys, join_type="left semi", use_threads=False)
    mask = np.zeros(rows.num_rows, dtype=bool)
    mask[matched[index_col].to_numpy()] = True
    return pa.array(mask)


def _row_lookup(rows: pa.Table, keys: list[str]) -> Callable[[list[Key]], dict[Key, dict[str, Any]]]:
    """Existing rows by key, for carrying unchanged values forward from the table."""

    def lookup(wanted: list[Key]) -> dict[Key, dict[str, Any]]:
        if not wanted or rows.num_rows == 0:
            return {}
        wanted_table = pa.Table.from_pylist(
            [dict(zip(keys, key, strict=True)) for key in wanted],
            schema=pa.schema([rows.schema.field(k) for k in keys]),
        )
        subset = rows.filter(_key_mask(rows, wanted_table, keys)).to_pylist()
        return {tuple(row[k] for k in keys): row for row in subset}

    return lookup
