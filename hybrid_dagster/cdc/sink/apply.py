"""Apply normalized CDC change batches to Apache Iceberg tables, exactly once, copy-on-write.

One :meth:`IcebergApplier.apply` call:

1. orders the changes and drops those at or below the table's watermark (a replay is a no-op);
2. evolves the schema (new columns, safe widening) in the same transaction as the data;
3. writes the raw changes to the changelog (if configured);
4. collapses the batch to the last change per key (truncates, key changes, TOAST values);
5. rewrites only the data files whose key range holds a touched key, sorted by key, and adds the new
   keys in new files: the deletes of old files and the adds of new ones land in ONE snapshot, whose
   summary records the source position;
6. before committing, hashes the batch as decoded and the staged rows at its keys
   (:mod:`.integrity`); on a mismatch the commit is abandoned (``TransferIntegrityError``);
7. on a concurrent commit, refreshes, re-reads the watermark and redoes the work.

Files written for an attempt (data files, changelog files) are deleted when its commit certainly did
not happen: an error before the commit, or a commit the catalog rejected (``CommitFailedException``,
``ValidationException``). When the outcome is unknown (``CommitStateUnknownException``, or any other
error from the catalog call) they are kept, since the snapshot may point at them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NoSuchTableError,
    ValidationException,
)
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table, Transaction

from hybrid_dagster.audit.transfers import check_integrity
from hybrid_dagster.cdc._pyiceberg_compat import MetadataCachingTransaction, merging_append, merging_overwrite
from hybrid_dagster.cdc.changes import Position, TableChanges
from hybrid_dagster.cdc.sink.changelog import ChangelogWriter
from hybrid_dagster.cdc.sink.collapse import (
    after_position,
    collapse,
    last_position,
    order_changes,
)
from hybrid_dagster.cdc.sink.integrity import BatchEvidence, batch_evidence
from hybrid_dagster.cdc.sink.maintenance import ExpiryReport, SnapshotRetention, maintain_table
from hybrid_dagster.cdc.sink.pruning import remember_live_files
from hybrid_dagster.cdc.sink.rewrite import Rewrite, rewrite as rewrite_files
from hybrid_dagster.cdc.sink.schema_evolution import (
    SchemaEvolutionError,
    plan_schema_evolution,
)
from hybrid_dagster.cdc.sink.tables import check_identifier_fields, create_table
from hybrid_dagster.cdc.sink.watermark import (
    DELETED_PROPERTY,
    EVENTS_PROPERTY,
    INSERTED_PROPERTY,
    TRUNCATED_PROPERTY,
    UPDATED_PROPERTY,
    position_properties,
    read_watermark,
)
from hybrid_dagster.errors import CarryForwardError

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
    evidence: BatchEvidence | None = None
    """The two content hashes of the commit (None when nothing was committed or checking is off)."""


_OUTCOME_UNKNOWN = "_hybrid_commit_outcome_unknown"
"""Set on an error from the catalog commit call whose outcome is unknown: its files are kept."""


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
        verify_integrity: bool = True,
        on_mismatch: Callable[[BatchEvidence], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.source_id = source_id
        self.changelog = changelog
        self.before_write = before_write
        self.target_file_size_bytes = target_file_size_bytes
        self.max_commit_retries = max_commit_retries
        self.verify_integrity = verify_integrity
        self.on_mismatch = on_mismatch

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
        check_identifier_fields(table, identifier, key_columns)
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

    def maintain(self, identifier: str, retention: SnapshotRetention) -> ExpiryReport | None:
        """Merge the table's manifests once they are many, expire its snapshots past ``retention`` and
        delete the files only those named (:mod:`.maintenance`: what the pipeline reads back is kept);
        None when there is no table. The ``before_write`` guard runs before either writes.

        Example:
            >>> applier.maintain("crm.patients", SnapshotRetention(max_age_s=3600)).expired_snapshot_ids
            ... # doctest: +SKIP
            [4316297735420157932]
        """
        table = self._load(identifier)
        if table is None:
            return None
        return maintain_table(table, retention, before_write=lambda: self._guard(identifier))

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
        return create_table(
            self.catalog,
            identifier,
            data_schema,
            key_columns,
            target_file_size_bytes=self.target_file_size_bytes,
            properties=properties,
        )

    def _guard(self, identifier: str) -> None:
        if self.before_write is not None:
            self.before_write(identifier)

    # -- apply --------------------------------------------------------------------------------------

    def apply(
        self,
        identifier: str,
        changes: TableChanges,
        *,
        extra_properties: Callable[[Table], dict[str, str]] | None = None,
        pending_filter: Callable[[Table, pa.Table], pa.Table] | None = None,
    ) -> ApplyResult:
        """Apply ``changes`` to the table ``identifier`` (created if missing); idempotent on replay.

        ``extra_properties(table)`` adds snapshot summary properties computed from the table as loaded for
        each attempt (chunk progress of a snapshot, per-partition Kafka offsets). ``pending_filter(table,
        changes)`` replaces the watermark skip: for sources that know what a table holds by other means
        (Kafka, by per-partition offsets, where one position cannot order several partitions).

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
            if pending_filter is None:
                pending = after_position(ordered, watermark)
            else:
                pending = pending_filter(table, ordered)
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
                extra = {} if extra_properties is None else extra_properties(table)
                result = self._apply_pending(table, identifier, changes, pending, changelog_paths, extra)
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
        extra_properties: dict[str, str] | None = None,
    ) -> ApplyResult:
        """One attempt; the changelog files it writes are added to ``changelog_paths``."""
        plan = plan_schema_evolution(
            identifier, table.schema(), changes.data_schema, changes.key_columns, changes.column_defaults
        )
        txn = MetadataCachingTransaction(table)
        if not plan.empty:
            with txn.update_schema() as update:
                plan.apply(update)
        metadata = txn.table_metadata
        if self.changelog is not None:
            changelog_paths.extend(self.changelog.write(identifier, replace(changes, rows=pending)))

        net = collapse(pending, changes.key_columns)
        try:
            rewrite = rewrite_files(table, metadata, net, changes.key_columns, self.target_file_size_bytes)
        except CarryForwardError as error:
            raise CarryForwardError(
                f"{identifier}: {error}. The table is not the source's state at its watermark (written by "
                "another tool, or changes were lost). Nothing was written and the source was not "
                f"acknowledged. To recover, drop or rename the Iceberg table {identifier}: the next run "
                "copies the source table afresh at a consistent point."
            ) from None
        position = last_position(pending)
        evidence = None
        if self.verify_integrity:
            try:
                evidence = batch_evidence(
                    identifier, metadata, table.io, rewrite, list(changes.key_columns), pending, position
                )
            except BaseException:
                self.delete_files(table, rewrite.added_files)  # abandoned: nothing was committed
                raise
            if not evidence.matches:
                self.delete_files(table, rewrite.added_files)  # abandoned: nothing was committed
                if self.on_mismatch is not None:
                    self.on_mismatch(evidence)
                check_integrity(
                    expected_sha256=evidence.source_sha256,
                    staged_sha256=evidence.target_sha256,
                    what=f"CDC batch into Iceberg table {identifier} (source {self.source_id})",
                )
        properties = {
            **position_properties(self.source_id, position),
            EVENTS_PROPERTY: str(pending.num_rows),
            INSERTED_PROPERTY: str(rewrite.inserted),
            UPDATED_PROPERTY: str(rewrite.updated),
            DELETED_PROPERTY: str(rewrite.deleted),
            TRUNCATED_PROPERTY: str(net.truncated).lower(),
            **(extra_properties or {}),
        }
        committed = self._commit(table, txn, identifier, rewrite, properties)
        remember_live_files(metadata, committed.metadata, rewrite.deleted_files, rewrite.added_files)
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
            evidence=evidence,
        )

    def _commit(
        self, table: Table, txn: Transaction, identifier: str, rewrite: Rewrite, properties: dict[str, str]
    ) -> Table:
        """One snapshot: an overwrite (delete the rewritten files, add the written ones), or an append
        when no file is rewritten (an overwrite reads every manifest of the table to find the deleted
        files); both merge the manifests once they are many (``_pyiceberg_compat``); clean up on failure.

        The written files are deleted when the commit certainly did not happen, and kept (the error
        marked ``_OUTCOME_UNKNOWN``) when it may have.
        """
        try:
            update = txn.update_snapshot(snapshot_properties=properties)
            if not rewrite.deleted_files:
                with merging_append(update, table.metadata.properties) as append:
                    for data_file in rewrite.added_files:
                        append.append_data_file(data_file)
            else:
                with merging_overwrite(update, table.metadata.properties) as overwrite:
                    for data_file in rewrite.deleted_files:
                        overwrite.delete_data_file(data_file)
                    for data_file in rewrite.added_files:
                        overwrite.append_data_file(data_file)
        except BaseException:
            self.delete_files(table, rewrite.added_files)  # the commit was not attempted
            raise
        try:
            committed = txn.commit_transaction()
        except (CommitFailedException, ValidationException):
            self.delete_files(table, rewrite.added_files)  # rejected: the snapshot does not exist
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
        return committed

    @staticmethod
    def delete_files(table: Table, files: list[DataFile]) -> None:
        """Delete written data files that no snapshot points at (an abandoned or rejected commit).

        Example:
            >>> IcebergApplier.delete_files(table, rewrite.added_files)  # doctest: +SKIP
        """
        for data_file in files:
            table.io.delete(data_file.file_path)


def _row_count(table: Table) -> int:
    snapshot = table.current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return 0
    return int(snapshot.summary["total-records"] or 0)
