"""The CDC loop: read a batch, commit it to Iceberg table by table, then acknowledge the source.

Exactly-once rests on three rules: the source is read without consuming it; every Iceberg commit records
the last applied source position in its snapshot summary, and changes at or below it are skipped on
replay; the source is acknowledged only after every table of the batch has committed - and after
``on_commit`` (the audit record of each commit, with its two content hashes) returned.

A table without a watermark is first copied (chunk by chunk and resumable where the copy reads key
ranges: :mod:`hybrid_dagster.cdc.snapshots`) through :meth:`ChangeSource.open_copy`, which reads it at one
exact stream position (for PostgreSQL a temporary slot's consistent point), in one commit recording that
position: the stream then applies exactly the changes after the copy. Never a copy read at one moment and
labelled with another position: changes would apply twice and unchanged TOAST values would be carried
forward from rows that have since moved. A change that a resumed copy's segments cannot take exactly (a
key moved between segments with an unchanged TOAST value the table does not hold:
:class:`~hybrid_dagster.cdc.snapshots.SnapshotResumeError`) makes the pipeline re-snapshot that table at
once: none of the table's batch is committed, the other tables' changes are, the batch is acknowledged,
and the table is copied afresh at a point after it (so the copy holds the dropped changes).

The long-running mode (:class:`Follow`) keeps the same rules: it only changes when a batch is cut (after
at most about half the target latency, instead of when the source is drained) and that an empty read does
not end the run; it ends after ``max_seconds`` and a new run resumes from the committed watermarks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from hybrid_dagster.cdc.changes import COMMIT_TS_COL, DeadLetter, Position, TableChanges
from hybrid_dagster.cdc.sink.apply import ApplyResult, IcebergApplier
from hybrid_dagster.cdc.sink.dead_letters import DeadLetterTable
from hybrid_dagster.cdc.sink.integrity import BatchEvidence
from hybrid_dagster.cdc.sink.maintenance import SnapshotRetention
from hybrid_dagster.cdc.snapshots import (
    SegmentFilter,
    SnapshotResumeError,
    SnapshotState,
    copy_table_chunked,
    request_resnapshot,
    snapshot_state,
)
from hybrid_dagster.cdc.sources.base import ChangeSource, CommitHooks, ConsistentCopy, SourceTable
from hybrid_dagster.errors import DeadLetterStop as DeadLetterStop, MissingWatermarkError

log = logging.getLogger(__name__)

DeadLetterPolicy = Literal["continue", "stop"]


@dataclass(frozen=True)
class TableMapping:
    """A source table and the Iceberg table it lands in.

    Example:
        >>> TableMapping("public.patients", "clinical.patients", key_columns=("patient_id",))
    """

    source_table: str
    identifier: str
    key_columns: tuple[str, ...] = ()

    @property
    def source(self) -> SourceTable:
        return SourceTable(self.source_table, self.key_columns)


@dataclass(frozen=True)
class Follow:
    """Long-running mode: keep applying small batches, each within about ``target_latency_s`` of its commit
    at the source, until ``max_seconds`` have passed (None: until the process is stopped).

    Example:
        >>> Follow(target_latency_s=2.0, max_seconds=3300).linger_s
        1.0
    """

    target_latency_s: float = 2.0
    max_seconds: float | None = None

    @property
    def linger_s(self) -> float:
        """How long a read waits for more changes: half the target, the other half is for the commit."""
        return max(0.05, self.target_latency_s / 2)


@dataclass
class TableProgress:
    """What one pipeline run did to one Iceberg table."""

    identifier: str
    events_received: int = 0
    events_skipped: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    snapshot_rows: int = 0
    commits: int = 0
    truncated: bool = False
    watermark: Position | None = None
    last_commit_ts: datetime | None = None
    schema_changes: list[str] = field(default_factory=list)
    schema_id: int | None = None
    row_count: int | None = None

    def add(self, result: ApplyResult, *, snapshot: bool = False) -> None:
        """Count ``result``; the rows of an initial copy count as ``snapshot_rows``, not as events."""
        if snapshot:
            self.snapshot_rows += result.inserted + result.updated
        else:
            self.events_received += result.events_received
            self.events_skipped += result.events_skipped
            self.inserted += result.inserted
            self.updated += result.updated
            self.deleted += result.deleted
        self.truncated = self.truncated or result.truncated
        self.commits += int(result.snapshot_id is not None)
        self.watermark = result.watermark or self.watermark
        self.schema_changes.extend(result.schema_changes)
        self.schema_id = result.schema_id
        self.row_count = result.row_count


@dataclass
class PipelineReport:
    """The outcome of one :meth:`CdcPipeline.run`: per-table progress, dead letters, lag, timings."""

    source_id: str
    tables: dict[str, TableProgress]
    batches: int = 0
    dead_letters: int = 0
    acked: Position | None = None
    source_position: Position | None = None
    duration_s: float = 0.0
    expired_snapshots: int = 0
    """Snapshots expired by the run's table maintenance (``CdcPipeline(retention=...)``)."""
    deleted_files: int = 0
    """Data files, manifests and manifest lists that only those snapshots named, deleted."""
    manifests_merged_away: int = 0
    """How many fewer manifests the tables' current snapshots list after the run's merges."""

    @property
    def events_applied(self) -> int:
        return sum(t.events_received - t.events_skipped for t in self.tables.values())


class CdcPipeline:
    """Streams a :class:`ChangeSource` into Iceberg tables with exactly-once results.

    Example:
        .. code-block:: python

            source = PostgresChangeSource(dsn, [SourceTable("public.patients")], slot_name="clinical")
            applier = IcebergApplier(plane.load_catalog(), source_id=source.source_id)
            pipeline = CdcPipeline(source, applier, [TableMapping("public.patients", "clinical.patients")])
            report = pipeline.run()
    """

    def __init__(
        self,
        source: ChangeSource,
        applier: IcebergApplier,
        tables: list[TableMapping],
        *,
        dead_letters: DeadLetterTable | None = None,
        dead_letter_policy: DeadLetterPolicy = "continue",
        batch_events: int = 50_000,
        snapshot_chunk_rows: int = 100_000,
        on_batch: Callable[[PipelineReport], None] | None = None,
        on_commit: Callable[[TableMapping, ApplyResult], None] | None = None,
        on_copy_commit: Callable[[TableMapping, BatchEvidence, int | None], None] | None = None,
        retention: SnapshotRetention | None = None,
    ) -> None:
        self.source = source
        self.applier = applier
        self.tables = {t.source_table: t for t in tables}
        self.dead_letters = dead_letters
        self.dead_letter_policy = dead_letter_policy
        self.batch_events = batch_events
        self.snapshot_chunk_rows = snapshot_chunk_rows
        self.on_batch = on_batch
        self._segment_filters: dict[str, SegmentFilter] = {}
        self.on_commit = on_commit
        self.on_copy_commit = on_copy_commit
        self.retention = retention
        """Maintain each table while running (merge many manifests, expire old snapshots: every
        ``retention.interval_s``); None: never (see :mod:`hybrid_dagster.cdc.sink.maintenance`)."""
        self._maintained_at: float | None = None

    def _maintain(self, report: PipelineReport) -> None:
        """Maintain every table (merge many manifests, expire old snapshots: :mod:`..sink.maintenance`):
        after the first batch (or at the end of a run without any), then at most every
        ``retention.interval_s``. A failure is logged and left for the next time: it never stops the
        changes (a crash after the expiry's commit leaves unreferenced files)."""
        if self.retention is None:
            return
        now = time.monotonic()
        if self._maintained_at is not None and now - self._maintained_at < self.retention.interval_s:
            return
        self._maintained_at = now
        for mapping in self.tables.values():
            try:
                expiry = self.applier.maintain(mapping.identifier, self.retention)
            except (CommitFailedException, OSError) as err:
                log.warning("%s: table maintenance failed (%s); retried later", mapping.identifier, err)
                continue
            if expiry is not None:
                report.manifests_merged_away += expiry.manifests_merged_away
                report.expired_snapshots += len(expiry.expired_snapshot_ids)
                report.deleted_files += expiry.deleted_files

    def run(
        self, *, max_batches: int | None = None, deadline_s: float | None = None, follow: Follow | None = None
    ) -> PipelineReport:
        """Snapshot new tables, then apply batches until the source is drained (or a limit is hit).

        With ``follow``, an empty read does not end the run: it goes on until ``follow.max_seconds``.
        """
        started = time.monotonic()
        if follow is not None:
            deadline_s = follow.max_seconds
        report = PipelineReport(
            source_id=self.source.source_id,
            tables={m.identifier: TableProgress(m.identifier) for m in self.tables.values()},
        )
        if self.source.offsets_in_tables:
            self.source.bind_applied(self._load_tables)
        self.source.setup()
        self._snapshot_new_tables(report)
        while max_batches is None or report.batches < max_batches:
            if deadline_s is not None and time.monotonic() - started > deadline_s:
                break
            if follow is not None:
                batch = self.source.follow_read(self.batch_events, follow.linger_s)
            else:
                batch = self.source.read(self.batch_events)
            if batch.source_position is not None:
                report.source_position = batch.source_position
            if batch.ack_position is None and batch.empty:
                if follow is not None:
                    continue
                break
            if batch.dead_letters:
                self._handle_dead_letters(batch.dead_letters, report)
            hooks = None
            if self.source.offsets_in_tables and batch.ack_position is not None:
                hooks = self.source.commit_hooks(batch.ack_position)
            recopy = False
            for source_table, changes in batch.tables.items():
                mapping = self._mapping(source_table)
                try:
                    self._apply(mapping, changes, report, hooks=hooks)
                except SnapshotResumeError as refused:
                    # nothing of this table's batch was committed: a fresh copy, taken after the ack
                    # below, holds these changes (and the stream's later ones apply after it)
                    log.warning("%s The pipeline re-snapshots the table now.", refused)
                    request_resnapshot(self.applier.catalog, mapping.identifier, self.source.source_id)
                    self._segment_filters.pop(mapping.source_table, None)
                    recopy = True
            if batch.ack_position is not None:
                self.source.ack(batch.ack_position)
                report.acked = batch.ack_position
            if recopy:
                self._snapshot_new_tables(report)
            report.batches += 1
            self._maintain(report)
            if self.on_batch is not None:
                self.on_batch(report)
        self._maintain(report)
        for progress in report.tables.values():
            if progress.watermark is None:
                progress.watermark = self.applier.watermark(progress.identifier)
        report.duration_s = time.monotonic() - started
        return report

    def _mapping(self, source_table: str) -> TableMapping:
        mapping = self.tables.get(source_table)
        if mapping is None:
            known = ", ".join(sorted(self.tables))
            raise KeyError(
                f"source {self.source.source_id} sent changes for {source_table!r}; mapped: {known}"
            )
        return mapping

    def _load_tables(self) -> dict[str, Table | None]:
        catalog = self.applier.catalog
        return {
            m.source_table: catalog.load_table(m.identifier) if catalog.table_exists(m.identifier) else None
            for m in self.tables.values()
        }

    def _apply(
        self,
        mapping: TableMapping,
        changes: TableChanges,
        report: PipelineReport,
        *,
        snapshot: bool = False,
        hooks: CommitHooks | None = None,
    ) -> None:
        segment_filter = None if snapshot else self._segment_filters.get(mapping.source_table)
        if segment_filter is not None:
            changes = segment_filter.apply(changes)
        self.applier.ensure_table(mapping.identifier, changes.data_schema, list(changes.key_columns))
        if hooks is None:
            result = self.applier.apply(mapping.identifier, changes)
        else:
            result = self.applier.apply(
                mapping.identifier,
                changes,
                pending_filter=hooks.pending_filter,
                extra_properties=hooks.properties,
            )
        if result.snapshot_id is not None and self.on_commit is not None:
            self.on_commit(mapping, result)  # before the source is acknowledged
        progress = report.tables[mapping.identifier]
        progress.add(result, snapshot=snapshot)
        last_ts = _max_commit_ts(changes.rows)
        if last_ts is not None and (progress.last_commit_ts is None or last_ts > progress.last_commit_ts):
            progress.last_commit_ts = last_ts
        log.info(
            "%s: %d received, %d skipped, +%d ~%d -%d, watermark %s",
            mapping.identifier,
            result.events_received,
            result.events_skipped,
            result.inserted,
            result.updated,
            result.deleted,
            result.watermark,
        )

    def _snapshot_new_tables(self, report: PipelineReport) -> None:
        # A table without a watermark from this source has never been loaded: copy it first, at the exact
        # position its copy gives (ConsistentCopy). That position is its watermark: the stream applies
        # exactly the changes after it, and values carried forward from the copy are the row's own.
        if not self.source.copies_tables:
            return
        # A copy killed part-way (or a requested re-snapshot) is resumed after its last committed chunk
        # (hybrid_dagster.cdc.snapshots); a resumed copy's segments then filter the stream.
        states = {m.identifier: self._snapshot_state(m) for m in self.tables.values()}
        new = [m for m in self.tables.values() if states[m.identifier].status != "done"]
        for mapping in new:
            if states[mapping.identifier].status == "none":
                self._refuse_unowned_rows(mapping)
        if new:
            with self.source.open_copy() as copy:
                for mapping in new:
                    if copy.chunked:
                        self._copy_table_chunked(mapping, copy, states[mapping.identifier], report)
                    else:
                        self._copy_table(mapping, copy, report)
        for mapping in self.tables.values():
            segment_filter = self._segment_filter(mapping)
            if segment_filter is not None:
                self._segment_filters[mapping.source_table] = segment_filter

    def _segment_filter(self, mapping: TableMapping) -> SegmentFilter | None:
        catalog = self.applier.catalog
        if not catalog.table_exists(mapping.identifier):
            return None
        return SegmentFilter.from_table(catalog.load_table(mapping.identifier), self.source.source_id)

    def _snapshot_state(self, mapping: TableMapping) -> SnapshotState:
        catalog = self.applier.catalog
        table = catalog.load_table(mapping.identifier) if catalog.table_exists(mapping.identifier) else None
        return snapshot_state(table, self.source.source_id)

    def _copy_table_chunked(
        self, mapping: TableMapping, copy: ConsistentCopy, state: SnapshotState, report: PipelineReport
    ) -> None:
        """Copy one table chunk by chunk, one commit each; resumes after the last committed chunk."""
        progress = report.tables[mapping.identifier]
        for rows in copy_table_chunked(
            self.applier,
            mapping.identifier,
            mapping.source,
            copy,
            state,
            chunk_rows=self.snapshot_chunk_rows,
            on_chunk=self._chunk_committed(mapping),
        ):
            progress.snapshot_rows += rows
            progress.commits += 1
            log.info("%s: copied %d rows", mapping.identifier, rows)
        progress.watermark = self.applier.watermark(mapping.identifier)

    def _chunk_committed(self, mapping: TableMapping) -> Callable[[BatchEvidence, int | None], None] | None:
        on_copy_commit = self.on_copy_commit
        if on_copy_commit is None:
            return None
        return lambda evidence, snapshot_id: on_copy_commit(mapping, evidence, snapshot_id)

    def _refuse_unowned_rows(self, mapping: TableMapping) -> None:
        """No watermark but rows: copying on top would keep rows deleted at the source since then."""
        catalog = self.applier.catalog
        if not catalog.table_exists(mapping.identifier):
            return
        snapshot_now = catalog.load_table(mapping.identifier).current_snapshot()
        summary = snapshot_now.summary if snapshot_now is not None else None
        rows_now = int(summary["total-records"] or 0) if summary is not None else 0
        if rows_now:
            raise MissingWatermarkError(
                f"Iceberg table {mapping.identifier} holds {rows_now} rows but none of its snapshots "
                f"records a position of source {self.source.source_id} (snapshots expired after another "
                f"writer committed, or another tool wrote it). Copying {mapping.source_table} again on "
                "top would keep rows deleted at the source. To recover: drop or rename the Iceberg table "
                "so the next run copies the source table afresh, or restore the watermark (commit a "
                "snapshot recording the source position the table is complete up to, e.g. with "
                "IcebergApplier.record_position)."
            )

    def _copy_table(self, mapping: TableMapping, copy: ConsistentCopy, report: PipelineReport) -> None:
        """Copy one source table in ONE commit: a crash mid-copy leaves no watermark, so it reruns."""
        chunks = list(copy.rows(mapping.source, self.snapshot_chunk_rows))
        if not chunks:
            raise RuntimeError(f"{type(self.source).__name__} copied nothing for {mapping.source_table}")
        snapshot = TableChanges(
            table=chunks[-1].table,
            key_columns=chunks[-1].key_columns,
            data_schema=chunks[-1].data_schema,
            rows=pa.concat_tables([c.rows for c in chunks]),
        )
        if snapshot.count == 0:  # still record the hand-off, so the copy is not redone later
            self.applier.ensure_table(mapping.identifier, snapshot.data_schema, list(snapshot.key_columns))
            self.applier.record_position(mapping.identifier, copy.position)
            return
        self._apply(mapping, snapshot, report, snapshot=True)

    def _handle_dead_letters(self, letters: list[DeadLetter], report: PipelineReport) -> None:
        # Messages name positions and tables only: a reason may quote the payload, and exception text
        # leaves the plane through Dagster Pipes, while the dead letters themselves stay in it.
        report.dead_letters += len(letters)
        first = letters[0]
        where = f"first at {first.position or '?'} (table {first.table or 'unknown'})"
        if self.dead_letters is None:
            raise DeadLetterStop(
                f"{len(letters)} malformed events from {self.source.source_id}, {where}, and no dead-letter "
                "table configured"
            )
        self.dead_letters.write(letters)
        if self.dead_letter_policy == "stop":
            raise DeadLetterStop(
                f"{len(letters)} malformed events from {self.source.source_id} written to the dead-letter "
                f"table {self.dead_letters.identifier}, {where}; stopping before applying the batch (policy "
                "'stop': fix or remove the events at the source, or run once with policy 'continue')"
            )


def _max_commit_ts(rows: pa.Table) -> datetime | None:
    if COMMIT_TS_COL not in rows.column_names or rows.num_rows == 0:
        return None
    value = pc.max(rows.column(COMMIT_TS_COL)).as_py()
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
