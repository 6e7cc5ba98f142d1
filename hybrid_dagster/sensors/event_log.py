"""Read Dagster's event log oldest first, without skipping, on every storage Dagster ships.

Two streams, both through public ``DagsterInstance`` methods:

- The run-status stream (run start, success, failure, cancel) in storage-id order across all runs:
  ``fetch_run_status_changes`` with ``RunStatusChangeRecordsFilter(after_storage_id=...)``, one query per
  status, merged by storage id. On the default run-sharded SQLite storage these events are mirrored
  into the index shard, whose ids are global; on PostgreSQL they are rows of the one event table.
- Each run's own stream (step start/success/failure, asset materializations and observations, asset
  check evaluations) in that run's order: ``get_records_for_run(run_id, cursor, of_type)``. On the
  run-sharded SQLite storage step events live only in the run's shard, so a cross-run query by storage
  id cannot see them; per run they are complete and ordered on every storage. There, one tick reads
  them through :class:`~hybrid_dagster._dagster_compat.RunShardReader` (the same query and cursors, one
  connection per shard, no per-call engine or schema check).

Records come back as :class:`~hybrid_dagster._dagster_compat.EventLogRow`: the fields lineage needs and
the event's own data as Dagster deserializes it. On the run shards they are decoded without building the
entry and event objects around that data (``decode_event_rows``); elsewhere they are read from the
records the public methods return.

Correctness rules: merging per-status pages of ``limit`` records each and keeping the ``limit`` smallest
storage ids yields exactly the first ``limit`` records of the merged stream (each page is sorted, and
any record among the first ``limit`` overall is among the first ``limit`` of its own status). A run's
cursor is the opaque string Dagster returns for that run; it is stored as is.

Example:
    .. code-block:: python

        records = run_status_records(instance, after_storage_id=-1, limit=100)
        page = run_records(instance, records[0].run_id, cursor=None, limit=100)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg

from hybrid_dagster._dagster_compat import EventLogRow, RunShardReader

RUN_STATUS_TYPES: tuple[dg.DagsterEventType, ...] = (
    dg.DagsterEventType.RUN_START,
    dg.DagsterEventType.RUN_SUCCESS,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.RUN_CANCELED,
)
"""Run-status events the lineage stream follows."""

RUN_END_TYPES = frozenset(RUN_STATUS_TYPES[1:])

RUN_EVENT_TYPES = frozenset(
    {
        dg.DagsterEventType.STEP_START,
        dg.DagsterEventType.STEP_SUCCESS,
        dg.DagsterEventType.STEP_FAILURE,
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.ASSET_OBSERVATION,
        dg.DagsterEventType.ASSET_CHECK_EVALUATION,
    }
)
"""Events read from each run's own stream."""


def iter_run_status_records(
    instance: dg.DagsterInstance,
    *,
    after_storage_id: int,
    page_size: int = 64,
    shards: RunShardReader | None = None,
) -> Iterator[EventLogRow]:
    """Every run-status record after ``after_storage_id``, oldest first, read ``page_size`` at a time
    (a consumer that stops early reads no more than it used, plus one page)."""
    while True:
        page = run_status_records(instance, after_storage_id=after_storage_id, limit=page_size, shards=shards)
        yield from page
        if len(page) < page_size:
            return
        after_storage_id = page[-1].storage_id


def run_status_records(
    instance: dg.DagsterInstance,
    *,
    after_storage_id: int,
    limit: int,
    shards: RunShardReader | None = None,
) -> list[EventLogRow]:
    """The first ``limit`` run-status records after ``after_storage_id``, oldest first (``shards``: read
    the index shard of the default storage in one query, see :meth:`RunShardReader.run_status_rows`)."""
    if shards is not None:
        rows = shards.run_status_rows(after_storage_id, RUN_STATUS_TYPES, limit)
        if rows is not None:
            return rows
    merged: list[dg.EventLogRecord] = []
    for event_type in RUN_STATUS_TYPES:
        result = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type=event_type, after_storage_id=after_storage_id),  # type: ignore[arg-type]
            limit=limit,
            ascending=True,
        )
        merged.extend(result.records)
    merged.sort(key=lambda record: record.storage_id)
    return [EventLogRow.of(record) for record in merged[:limit]]


@dataclass(frozen=True)
class RunPage:
    """Records of one run after a cursor, the cursor after them, and whether more are waiting."""

    records: list[EventLogRow]
    cursor: str | None
    has_more: bool


def run_records(
    instance: dg.DagsterInstance,
    run_id: str,
    *,
    cursor: str | None,
    limit: int,
    shards: RunShardReader | None = None,
) -> RunPage:
    """Up to ``limit`` of the run's lineage-relevant records after ``cursor``, in the run's order.

    ``shards`` (:meth:`RunShardReader.for_instance`, on the default storage) reads the run's shard
    directly; the records and cursors are those of ``get_records_for_run``.
    """
    page = shards.rows_for_run(run_id, cursor, RUN_EVENT_TYPES, limit) if shards is not None else None
    if page is not None:
        records, next_cursor, has_more = page
    else:
        connection = instance.get_records_for_run(
            run_id, cursor=cursor, of_type=set(RUN_EVENT_TYPES), limit=limit, ascending=True
        )
        records = [EventLogRow.of(record) for record in connection.records]
        next_cursor, has_more = connection.cursor, connection.has_more
    return RunPage(records=records, cursor=next_cursor if records else cursor, has_more=has_more)
