"""Chunked, resumable initial copies and on-demand re-snapshots of CDC tables.

Correctness rules:

* A copy reads the table at one consistent point *C* of the stream (a temporary slot's exported snapshot,
  :class:`~hybrid_dagster.cdc.sources.base.ConsistentCopy`) in key ranges, and commits each range as its
  own Iceberg snapshot. Memory holds one chunk.
* Chunk commits are made under the source id ``<source>#snapshot``, never the source's own: the table has
  no watermark of the source until the copy is complete, so the stream never applies to a half-copied
  table, and a killed copy is found and resumed (:func:`snapshot_state`). Each chunk commit's summary
  records the progress: the last key copied (``hybrid.cdc.snapshot.last-key``), the segments and the
  next chunk number. A chunk commit is atomic, so after a SIGKILL the copy resumes exactly after the last
  committed key; the rows of a killed, uncommitted chunk were never visible.
* A resumed copy reads at a new consistent point *C2* (the exported snapshot died with the process). The
  table then holds *segments*: keys up to the resume key as of *C1*, keys after it as of *C2*. The
  completion commit records the source's watermark ``C1 - 1`` (the stream re-applies everything after the
  oldest segment) and, in the table property ``hybrid.cdc.snapshot.segments``, each segment's first key
  and position. :class:`SegmentFilter` then drops, from the stream, changes a segment's copy already
  holds (a change at or below the position of its key's segment). A key change between segments whose
  copy states differ becomes a delete of the old key, or is refused (:class:`SnapshotResumeError`) when
  it would carry an unchanged TOAST value from a row the table no longer has at that state; the pipeline
  then re-snapshots that table at once (:mod:`hybrid_dagster.cdc.pipeline`).
* A re-snapshot (:func:`request_resnapshot`) removes the table's rows in a commit marked as a snapshot
  of the source; the next pipeline run copies the table afresh, at a new consistent point, while the other
  tables keep streaming. Readers see the table refill chunk by chunk (time travel shows the old state).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.io import FileIO
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import ancestors_of

from hybrid_dagster.audit import check_integrity
from hybrid_dagster.cdc.changes import (
    COMMIT_POS_COL,
    COMMIT_TS_COL,
    EVENT_POS_COL,
    OLD_KEY_COL,
    OP_COL,
    OP_DELETE,
    TX_ID_COL,
    UNCHANGED_COL,
    Position,
    TableChanges,
)
from hybrid_dagster.cdc.sink.apply import IcebergApplier
from hybrid_dagster.cdc.sink.integrity import BatchEvidence, appended_evidence
from hybrid_dagster.cdc.sink.rewrite import write_parts
from hybrid_dagster.cdc.sink.watermark import (
    SNAPSHOT_SUFFIX as SNAPSHOT_SUFFIX,
    SOURCE_PROPERTY,
    position_properties,
)
from hybrid_dagster.cdc.sources.base import ConsistentCopy, CopyChunk, SourceTable
from hybrid_dagster.errors import ValueFreeError

log = logging.getLogger(__name__)

STATE_PROPERTY = "hybrid.cdc.snapshot.state"
LAST_KEY_PROPERTY = "hybrid.cdc.snapshot.last-key"
SEGMENTS_PROPERTY = "hybrid.cdc.snapshot.segments"
NEXT_CHUNK_PROPERTY = "hybrid.cdc.snapshot.next-chunk"
ROWS_PROPERTY = "hybrid.cdc.snapshot.rows"
SEGMENTS_TABLE_PROPERTY = "hybrid.cdc.snapshot.segments"


class SnapshotResumeError(ValueFreeError):
    """A change cannot be applied exactly over a copy resumed at a later point: re-snapshot the table."""


Segment = tuple[tuple[str, ...] | None, int]
"""A segment of a resumed copy: keys after the first element (None: from the start), copied at the
consistent point whose position (commit) is the second."""


@dataclass
class SnapshotState:
    """Where the copy of a table stands for one source: ``running`` (with progress) or ``done``/``none``."""

    status: str
    last_key: tuple[str, ...] | None = None
    segments: list[Segment] = field(default_factory=list)
    next_chunk: int = 0
    rows: int = 0


def snapshot_state(table: Table | None, source_id: str) -> SnapshotState:
    """The newest snapshot of ``table`` made by the source or by its copy decides.

    Example:
        >>> snapshot_state(catalog.load_table("clinical.patients"), source.source_id).status  # doctest: +SKIP
        'running'
    """
    if table is None:
        return SnapshotState("none")
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        summary = snapshot.summary
        if summary is None:
            continue
        if summary[SOURCE_PROPERTY] == source_id:
            return SnapshotState("done")
        if summary[SOURCE_PROPERTY] == source_id + SNAPSHOT_SUFFIX:
            if summary[STATE_PROPERTY] == "done":  # chunk commits of an earlier, completed copy
                return SnapshotState("done")
            last = summary[LAST_KEY_PROPERTY]
            segments = json.loads(summary[SEGMENTS_PROPERTY] or "[]")
            return SnapshotState(
                "running",
                last_key=tuple(json.loads(last)) if last else None,
                segments=[(tuple(k) if k is not None else None, int(p)) for k, p in segments],
                next_chunk=int(summary[NEXT_CHUNK_PROPERTY] or 0),
                rows=int(summary[ROWS_PROPERTY] or 0),
            )
    return SnapshotState("none")


def copy_table_chunked(
    applier: IcebergApplier,
    identifier: str,
    source: SourceTable,
    copy: ConsistentCopy,
    state: SnapshotState,
    *,
    chunk_rows: int,
    on_chunk: Callable[[BatchEvidence, int | None], None] | None = None,
) -> Iterator[int]:
    """Copy (or resume copying) ``source`` into ``identifier`` chunk by chunk; yields rows per chunk.

    Ends with the completion commit that gives the table the source's watermark. Each chunk commit is
    checked (rows handed over against rows read back from the files it added), on a background thread
    while the next chunk is read and appended; a mismatch raises before the completion commit, at the
    latest, and the chunks are reported in order to ``on_chunk`` with their evidence and snapshot id.

    Example:
        >>> with source.open_copy() as copy:  # doctest: +SKIP
        ...     rows = sum(copy_table_chunked(applier, "clinical.patients", SourceTable("public.patients"),
        ...                                   copy, SnapshotState("none"), chunk_rows=100_000))
    """
    snapshot_applier = IcebergApplier(
        applier.catalog,
        source_id=applier.source_id + SNAPSHOT_SUFFIX,
        changelog=applier.changelog,
        before_write=applier.before_write,
        target_file_size_bytes=applier.target_file_size_bytes,
        max_commit_retries=applier.max_commit_retries,
        verify_integrity=applier.verify_integrity,
        on_mismatch=applier.on_mismatch,
    )
    segments = [*state.segments, (state.last_key, copy.position.commit)]
    total, chunk_number = state.rows, state.next_chunk
    schema_known = None
    chunks = copy.chunks(source, chunk_rows, after_key=state.last_key, first_sequence=chunk_number)
    with _ChunkVerifier(snapshot_applier, identifier, on_chunk) as verifier:
        for chunk in _read_ahead(chunks):
            changes = chunk.changes
            schema_known = changes
            chunk_number += 1
            if changes.count == 0:
                continue
            total += changes.count
            progress = {
                STATE_PROPERTY: "running",
                LAST_KEY_PROPERTY: json.dumps(list(chunk.last_key or ())),
                SEGMENTS_PROPERTY: json.dumps([[list(k) if k else None, p] for k, p in segments]),
                NEXT_CHUNK_PROPERTY: str(chunk_number),
                ROWS_PROPERTY: str(total),
            }
            table = snapshot_applier.ensure_table(identifier, changes.data_schema, list(changes.key_columns))
            appended = _append(snapshot_applier, table, changes, progress)
            if appended is None:
                # The source's columns changed since the copy began: evolve the schema with the data.
                result = snapshot_applier.apply(identifier, changes, extra_properties=_constant(progress))
                verifier.done(result.evidence, result.snapshot_id)
            elif snapshot_applier.verify_integrity:
                verifier.submit(table, chunk_number, *appended)
            yield changes.count
        verifier.wait()
    if schema_known is None:
        raise RuntimeError(f"{type(copy).__name__} copied nothing for {source.name}")
    table = applier.ensure_table(identifier, schema_known.data_schema, list(schema_known.key_columns))
    _complete(applier, table, segments, total)


class _ChunkVerifier:
    """Checks committed chunks on one background thread while the next chunks are read and appended.

    Chunks are checked and reported (``on_chunk``) in commit order. The first mismatch (or error) is
    raised in the copying thread at its next call, and :meth:`wait` - called before the completion
    commit - raises it at the latest: a copy with a bad chunk never gets the source's watermark. Each
    check reads the metadata its own commit returned, so later appends do not change what it checks.
    """

    def __init__(
        self,
        applier: IcebergApplier,
        identifier: str,
        on_chunk: Callable[[BatchEvidence, int | None], None] | None,
    ) -> None:
        self._applier, self._identifier, self._on_chunk = applier, identifier, on_chunk
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-verify")
        self._pending: list[Future[None]] = []

    def __enter__(self) -> _ChunkVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)

    def submit(self, table: Table, chunk_number: int, appended: pa.Table, position: Position) -> None:
        self._raise_failed()
        metadata, io = table.metadata, table.io
        self._pending.append(self._pool.submit(self._check, metadata, io, chunk_number, appended, position))

    def done(self, evidence: BatchEvidence | None, snapshot_id: int | None) -> None:
        """Report a chunk the applier checked itself, after the chunks before it."""
        self.wait()
        if self._on_chunk is not None and evidence is not None:
            self._on_chunk(evidence, snapshot_id)

    def wait(self) -> None:
        for future in self._pending:
            future.result()
        self._pending.clear()

    def _raise_failed(self) -> None:
        while self._pending and self._pending[0].done():
            self._pending.pop(0).result()

    def _check(
        self, metadata: TableMetadata, io: FileIO, chunk_number: int, appended: pa.Table, position: Position
    ) -> None:
        evidence = appended_evidence(metadata, io, self._identifier, appended, position)
        if not evidence.matches:
            if self._applier.on_mismatch is not None:
                self._applier.on_mismatch(evidence)
            check_integrity(
                expected_sha256=evidence.source_sha256,
                staged_sha256=evidence.target_sha256,
                what=f"snapshot chunk {chunk_number} of Iceberg table {self._identifier} (re-snapshot the "
                "table: hybrid-dagster cdc resnapshot)",
            )
        if self._on_chunk is not None:
            snapshot = metadata.current_snapshot()
            self._on_chunk(evidence, snapshot.snapshot_id if snapshot is not None else None)


def _append(
    applier: IcebergApplier, table: Table, changes: TableChanges, progress: dict[str, str]
) -> tuple[pa.Table, Position] | None:
    """Append a chunk's rows as new files in one snapshot (the rows and their position); None if the
    table's columns differ.

    A chunk holds only keys the table has not got (the copy began on an empty table and ranges do not
    overlap), so an append is the apply; the rows come key-ordered from the server, so files keep
    disjoint key ranges.
    """
    target = table.schema().as_arrow()
    data = changes.rows.select(changes.data_schema.names)
    if [(f.name, _plain(f.type)) for f in target] != [(f.name, _plain(f.type)) for f in data.schema]:
        return None
    if applier.changelog is not None:
        applier.changelog.write(".".join(table.name()), changes)
    if applier.before_write is not None:
        applier.before_write(".".join(table.name()))
    position = Position(
        int(pc.max(changes.rows.column(COMMIT_POS_COL)).as_py()),
        int(pc.max(changes.rows.column(EVENT_POS_COL)).as_py()),
    )
    properties = {**position_properties(applier.source_id, position), **progress}
    appended = data.cast(target)
    # Files written against the table's own metadata, then one fast append: pyiceberg's Table.append
    # deep-copies the table metadata at each of its several reads of it, a cost that grows with every
    # chunk committed before (quadratic over a long copy).
    files = write_parts(table, table.metadata, [appended], applier.target_file_size_bytes)
    try:
        with (
            table.transaction() as txn,
            txn.update_snapshot(snapshot_properties=properties).fast_append() as fast_append,
        ):
            for data_file in files:
                fast_append.append_data_file(data_file)
    except (CommitFailedException, ValidationException):
        applier.delete_files(table, files)  # rejected: no snapshot points at them
        raise
    return appended, position


def _plain(arrow_type: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(arrow_type):
        return pa.string()
    if pa.types.is_large_binary(arrow_type):
        return pa.binary()
    return arrow_type


def _read_ahead(chunks: Iterator[CopyChunk]) -> Iterator[CopyChunk]:
    """Read the next chunk while the current one is written (the server serializes it meanwhile).

    At most two chunks are held: memory stays bounded by the chunk size. When the consumer stops early
    (an error, a closed generator), the reading thread is told to stop and is not left blocked.
    """
    slot: queue.Queue[CopyChunk | BaseException | None] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: CopyChunk | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                slot.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(None)
        except BaseException as error:  # handed to the consumer
            put(error)

    thread = threading.Thread(target=produce, daemon=True, name="snapshot-read-ahead")
    thread.start()
    try:
        while True:
            item = slot.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=60)


def _constant(properties: dict[str, str]) -> Callable[[Table], dict[str, str]]:
    return lambda _table: properties


def _complete(applier: IcebergApplier, table: Table, segments: list[Segment], rows: int) -> None:
    """The source's watermark (the oldest segment's point) and, if resumed, the segments for the stream."""
    watermark = Position(min(p for _, p in segments), 0)
    if applier.before_write is not None:
        applier.before_write(".".join(table.name()))
    with table.transaction() as txn:
        if len(segments) > 1:
            txn.set_properties(
                {
                    SEGMENTS_TABLE_PROPERTY: json.dumps(
                        {
                            "source": applier.source_id,
                            "segments": [[list(k) if k else None, p] for k, p in segments],
                        }
                    )
                }
            )
        elif SEGMENTS_TABLE_PROPERTY in table.properties:
            txn.remove_properties(SEGMENTS_TABLE_PROPERTY)
        properties = {
            **position_properties(applier.source_id, watermark),
            STATE_PROPERTY: "done",
            ROWS_PROPERTY: str(rows),
        }
        with txn.update_snapshot(snapshot_properties=properties).fast_append():
            pass


def request_resnapshot(catalog: Catalog, identifier: str, source_id: str) -> None:
    """Empty ``identifier`` in a commit marked as a copy of ``source_id``: the next run copies it afresh.

    The other tables of the source keep streaming; this table's changes resume after its new copy.

    Example:
        >>> request_resnapshot(plane.load_catalog(), "clinical.patients", source.source_id)  # doctest: +SKIP
    """
    table = catalog.load_table(identifier)
    properties = {SOURCE_PROPERTY: source_id + SNAPSHOT_SUFFIX, STATE_PROPERTY: "requested"}
    files = [task.file for task in table.scan().plan_files()]
    with table.transaction() as txn:
        if files:
            with txn.update_snapshot(snapshot_properties=properties).overwrite() as overwrite:
                for data_file in files:
                    overwrite.delete_data_file(data_file)
        else:
            with txn.update_snapshot(snapshot_properties=properties).fast_append():
                pass
    log.info("%s: re-snapshot requested for source %s", identifier, source_id)


class SegmentFilter:
    """Drops stream changes that a resumed copy's later segments already hold (see the module docstring).

    Example:
        >>> flt = SegmentFilter.from_table(table, source_id)  # doctest: +SKIP
        >>> changes = flt.apply(changes) if flt else changes  # doctest: +SKIP
    """

    def __init__(self, identifier: str, segments: list[Segment]) -> None:
        self.identifier = identifier
        self.segments = sorted(segments, key=lambda s: (s[0] is not None, s[0] or ()))
        self.horizon = max(p for _, p in segments)

    @classmethod
    def from_table(cls, table: Table, source_id: str) -> SegmentFilter | None:
        raw = table.properties.get(SEGMENTS_TABLE_PROPERTY)
        if not raw:
            return None
        data = json.loads(raw)
        if data.get("source") != source_id:
            return None
        segments = [(tuple(k) if k is not None else None, int(p)) for k, p in data["segments"]]
        return cls(".".join(table.name()), segments) if len(segments) > 1 else None

    def apply(self, changes: TableChanges) -> TableChanges:
        rows = changes.rows
        if rows.num_rows == 0 or pc.min(rows.column(COMMIT_POS_COL)).as_py() > self.horizon:
            return changes
        keys = list(changes.key_columns)
        commit = rows.column(COMMIT_POS_COL).to_numpy(zero_copy_only=False)
        new_pos = self._positions([rows.column(k) for k in keys], rows.schema)
        keep = commit > new_pos
        old = rows.column(OLD_KEY_COL) if OLD_KEY_COL in rows.column_names else None
        if old is None or old.null_count == len(old):
            return _replace_rows(changes, rows.filter(pa.array(keep)))
        old_valid = pc.is_valid(old).to_numpy(zero_copy_only=False)
        old_struct = old.combine_chunks()
        old_cols = [pc.struct_field(old_struct, k) for k in keys]
        old_pos = self._positions(old_cols, rows.schema)
        out_parts: list[pa.Table] = []
        deletes: list[int] = []
        drop_old_key: list[int] = []
        for i in range(rows.num_rows):
            if not old_valid[i]:
                continue
            new_held, old_held = commit[i] <= new_pos[i], commit[i] <= old_pos[i]
            if new_held and not old_held:
                deletes.append(i)  # the new key's copy has the row; the old key's copy still has it too
                keep[i] = False
            elif old_held and not new_held:
                has_unchanged = UNCHANGED_COL in rows.column_names
                if not (has_unchanged and rows.column(UNCHANGED_COL)[i].as_py()):
                    drop_old_key.append(i)
                elif _removed_later(rows, keys, i, old_cols, commit <= new_pos):
                    keep[i] = False  # a transient key (ids swapped through -1): the later move settles it
                else:
                    raise SnapshotResumeError(
                        f"{self.identifier}: a key change at position {int(commit[i])} moves a row between "
                        "segments of a resumed copy with unchanged TOAST values the table cannot supply. "
                        f"Re-snapshot the table (hybrid-dagster cdc resnapshot --table {self.identifier})."
                    )
        kept = rows.filter(pa.array(keep))
        out_parts.append(_without_old_key(kept, rows, keep, drop_old_key))
        if deletes:
            out_parts.append(_old_key_deletes(rows.take(pa.array(deletes)), keys))
        order = [(COMMIT_POS_COL, "ascending"), (EVENT_POS_COL, "ascending")]
        merged = pa.concat_tables(out_parts).sort_by(order)
        return _replace_rows(changes, merged)

    def _positions(self, key_cols: list[Any], schema: pa.Schema) -> Any:
        """Per row, the position of the segment its key falls in."""
        n = len(key_cols[0])
        out = np.full(n, self.segments[0][1], dtype=np.int64)
        for bound, position in self.segments[1:]:
            assert bound is not None
            after = _after(key_cols, bound)
            out[after] = position
        return out


def _after(key_cols: list[Any], bound: tuple[str, ...]) -> Any:
    """Rows whose key is strictly after ``bound`` (text values cast to the key types), tuple order."""
    result = np.zeros(len(key_cols[0]), dtype=bool)
    equal_so_far = np.ones(len(key_cols[0]), dtype=bool)
    for column, text in zip(key_cols, bound, strict=True):
        value = pc.cast(pa.scalar(text, pa.string()), column.type)
        greater = pc.fill_null(pc.greater(column, value), False).to_numpy(zero_copy_only=False)
        equal = pc.fill_null(pc.equal(column, value), False).to_numpy(zero_copy_only=False)
        result |= equal_so_far & greater
        equal_so_far &= equal
    return result


def _removed_later(rows: pa.Table, keys: list[str], i: int, old_cols: list[Any], new_held: Any) -> bool:
    """Whether the key row ``i`` moves to is deleted by a later change of ``rows``, or moved away to a key
    whose segment's copy holds that move (``new_held``): then the row at that key never needs the value
    row ``i`` would carry. A move away to a key no copy holds would need it: not removed."""
    key = tuple(rows.column(k)[i].as_py() for k in keys)
    ops = rows.column(OP_COL)
    for j in range(i + 1, rows.num_rows):
        if ops[j].as_py() == OP_DELETE and tuple(rows.column(k)[j].as_py() for k in keys) == key:
            return True
        if old_cols[0][j].is_valid and tuple(c[j].as_py() for c in old_cols) == key:
            return bool(new_held[j])
    return False


def _without_old_key(kept: pa.Table, rows: pa.Table, keep: Any, drop: list[int]) -> pa.Table:
    if not drop:
        return kept
    mask = np.zeros(rows.num_rows, dtype=bool)
    mask[drop] = True
    cleared = pc.if_else(
        pa.array(mask), pa.nulls(rows.num_rows, rows.schema.field(OLD_KEY_COL).type), rows.column(OLD_KEY_COL)
    )
    idx = rows.schema.get_field_index(OLD_KEY_COL)
    return rows.set_column(idx, rows.schema.field(OLD_KEY_COL), cleared).filter(pa.array(keep))


def _old_key_deletes(rows: pa.Table, keys: list[str]) -> pa.Table:
    """Deletes of the old keys of key-change rows (other data columns null)."""
    old = rows.column(OLD_KEY_COL).combine_chunks()
    columns = {}
    for f in rows.schema:
        if f.name == OP_COL:
            columns[f.name] = pa.array([OP_DELETE] * rows.num_rows, f.type)
        elif f.name in keys:
            columns[f.name] = pc.struct_field(old, f.name).cast(f.type)
        elif f.name in (COMMIT_POS_COL, EVENT_POS_COL, TX_ID_COL, COMMIT_TS_COL):
            columns[f.name] = rows.column(f.name)
        else:
            columns[f.name] = pa.nulls(rows.num_rows, f.type)
    return pa.table(columns, schema=rows.schema)


def _replace_rows(changes: TableChanges, rows: pa.Table) -> TableChanges:
    return replace(changes, rows=rows)


__all__ = [
    "SegmentFilter",
    "SnapshotResumeError",
    "SnapshotState",
    "copy_table_chunked",
    "request_resnapshot",
    "snapshot_state",
]
