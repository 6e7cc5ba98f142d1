"""One change batch from Debezium events, shared by the file and the Kafka source.

* One :class:`TableChanges` per table. A batch never mixes two row schemas of one table: when an event
  declares a different schema than the events already in the batch, the batch ends *before* that event
  (the next read starts with it).
* Key columns: the configured ``SourceTable.key_columns`` if given, else the field names of the first
  event key seen for the table, else none.
* Schemaless events are typed per batch with :func:`infer_schema`.
* Snapshot reads (op ``r``) of one snapshot all carry the same log position, and events without log
  fields only have ``ts_ms``. The apply skips changes at or below a table's last applied position, so
  equal positions in two batches would lose the second. The sources therefore give them distinct,
  replay-stable positions from the event's place in the input (``ordinal``: :func:`file_ordinal` of file
  index and line): ``r`` → ``Position(commit - 1, ordinal)`` (just before the stream continues at
  ``commit``); ``ts_ms`` fallback → ``Position(ts_ms, ordinal)``. The Kafka source instead puts every
  event at ``Position(ordinal, 0)`` (``ordinal_positions``) and skips applied events by per-partition
  offsets recorded in the tables (:mod:`hybrid_dagster.cdc.sources.debezium.kafka`), since one position
  cannot order several partitions.
* Anything that cannot become a row becomes a :class:`DeadLetter` naming the reason; ``read`` never raises
  on bad input.
* Debezium takes its own initial snapshot (op ``r`` events), so ``setup`` creates nothing and these sources
  have no :meth:`snapshot`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from hybrid_dagster.cdc.changes import (
    COMMIT_POS_COL,
    COMMIT_TS_COL,
    EVENT_POS_COL,
    OLD_KEY_COL,
    OP_COL,
    OP_READ,
    OP_TRUNCATE,
    TX_ID_COL,
    UNCHANGED_COL,
    ChangeBatch,
    DeadLetter,
    Position,
    TableChanges,
    change_schema,
)
from hybrid_dagster.cdc.sources.base import SourceTable
from hybrid_dagster.cdc.sources.debezium.envelope import (
    EventResult,
    Malformed,
    ParsedChange,
    Skipped,
    infer_schema,
)


@dataclass
class _Event:
    change: ParsedChange
    raw: str
    where: str


@dataclass
class _TableEvents:
    schema: pa.Schema | None = None
    schema_set: bool = False
    events: list[_Event] = field(default_factory=list)


class BatchBuilder:
    """Collects parse results; :meth:`build` returns the batch.

    Example:
        >>> from hybrid_dagster.cdc.sources.debezium.envelope import parse_event
        >>> b = BatchBuilder("debezium-file:///tmp/x", {})
        >>> b.add(parse_event('{"op":"c","after":{"id":1},"source":{"table":"t","lsn":5}}'), "raw", "f:1")
        True
        >>> b.build(ack_position=Position(0, 1)).tables["t"].count
        1
    """

    def __init__(
        self,
        source: str,
        key_columns: dict[str, list[str]],
        tables: set[str] | None = None,
        *,
        ordinal_positions: bool = False,
    ):
        self.source = source
        self.ordinal_positions = ordinal_positions
        """Every event at ``Position(ordinal, 0)``: the Kafka source, which skips applied events by
        per-partition offsets, not by a position of the source database."""
        self.key_columns = key_columns
        self.tables = tables
        self.count = 0
        """Changes plus dead letters added so far."""
        self._tables: dict[str, _TableEvents] = {}
        self._built: dict[str, TableChanges] = {}
        self._dead: list[DeadLetter] = []

    def add_changes(self, changes: TableChanges, events: int) -> None:
        """Add a table's changes parsed many at once (:mod:`~hybrid_dagster.cdc.sources.debezium.columnar`);
        that table gets no events through :meth:`add` in this batch."""
        if changes.table in self._tables or changes.table in self._built:
            raise ValueError(f"table {changes.table!r} already has changes in this batch")
        self._built[changes.table] = changes
        self.count += events

    def add(self, result: EventResult, raw: str, where: str, ordinal: int = 0) -> bool:
        """Add one parse result. False means: schema change, end the batch before this event.

        ``ordinal`` is the event's replay-stable place in the input (see the module docstring).
        """
        if isinstance(result, Skipped):
            return True
        if isinstance(result, Malformed):
            if result.table is None or self._captured(result.table):
                self._dead.append(DeadLetter(self.source, raw, result.reason, result.table, where))
                self.count += 1
            return True
        if not self._captured(result.table):
            return True
        if result.table in self._built:
            raise ValueError(f"table {result.table!r} already has changes parsed many at once")
        entry = self._tables.setdefault(result.table, _TableEvents())
        if result.op != OP_TRUNCATE:
            if not entry.schema_set:
                entry.schema, entry.schema_set = result.data_schema, True
            elif not _same_schema(entry.schema, result.data_schema):
                return False
        if self.ordinal_positions:
            change = replace(result, position=Position(ordinal, 0))
        else:
            change = _stable_position(result, ordinal)
        entry.events.append(_Event(change, raw, where))
        self.count += 1
        return True

    def _captured(self, table: str) -> bool:
        return self.tables is None or table in self.tables

    def build(self, ack_position: Position | None, source_position: Position | None = None) -> ChangeBatch:
        batch = ChangeBatch(self.source, ack_position=ack_position, source_position=source_position)
        batch.dead_letters.extend(self._dead)
        for table, entry in self._tables.items():
            changes, dead = self._table_changes(table, entry)
            if changes is not None and changes.count:
                batch.tables[table] = changes
            batch.dead_letters.extend(dead)
        for table, changes in self._built.items():
            if changes.count:
                batch.tables[table] = changes
        return batch

    def _table_changes(self, table: str, entry: _TableEvents) -> tuple[TableChanges | None, list[DeadLetter]]:
        events = entry.events
        keys = list(self.key_columns.get(table) or [])
        if not keys:
            first_key = next((e.change.key for e in events if e.change.key), None)
            keys = list(first_key or [])
        data_rows = [e.change.row for e in events]
        if entry.schema is not None:
            data_schema = entry.schema
        else:
            data_schema, data_rows = infer_schema(
                [r for e, r in zip(events, data_rows, strict=True) if e.change.op != OP_TRUNCATE]
            )
            data_rows = _reinsert_truncates(events, data_rows)
        missing = [k for k in keys if k not in data_schema.names]
        if missing:
            if all(e.change.op == OP_TRUNCATE for e in events):
                keys = []
            else:
                reason = f"key columns {missing} are not columns of the row (columns: {data_schema.names})"
                return None, [self._dead_letter(e, reason) for e in events]
        schema = change_schema(data_schema, keys)
        rows = [
            _system_row(e.change, keys, data_schema.names, r) for e, r in zip(events, data_rows, strict=True)
        ]
        try:
            return TableChanges(table, keys, data_schema, pa.Table.from_pylist(rows, schema=schema)), []
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            pass
        good, dead = [], []
        for event, row in zip(events, rows, strict=True):
            try:
                pa.Table.from_pylist([row], schema=schema)
                good.append(row)
            except (pa.ArrowException, ValueError, TypeError, OverflowError):
                dead.append(self._dead_letter(event, _unfit_reason(row, schema)))
        return TableChanges(table, keys, data_schema, pa.Table.from_pylist(good, schema=schema)), dead

    def _dead_letter(self, event: _Event, reason: str) -> DeadLetter:
        return DeadLetter(self.source, event.raw, reason, event.change.table, event.where)


def _unfit_reason(row: dict[str, Any], schema: pa.Schema) -> str:
    """Why ``row`` does not fit ``schema``, naming columns and types only (never the values)."""
    bad = []
    for f in schema:
        try:
            pa.array([row.get(f.name)], type=f.type)
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            bad.append(f"{f.name!r} ({f.type})")
    columns = ", ".join(bad) if bad else "unknown"
    return f"a value does not fit its column type: column {columns}"


_ORDINAL_BITS = 48
_PARTITION_LIMIT = 1 << (63 - _ORDINAL_BITS)
_FILE_LINE_BITS = 40


def kafka_ordinal(partition: int, offset: int) -> int:
    """Replay-stable ordinal of a Kafka message: ``partition << 48 | offset`` (fits int64).

    Offsets count per partition, so the partition goes into the high bits: two partitions never give
    the same ordinal.

    Example:
        >>> kafka_ordinal(1, 5) > kafka_ordinal(0, 2**40)
        True
    """
    if not 0 <= offset < 1 << _ORDINAL_BITS:
        raise ValueError(f"Kafka offset {offset} is outside the supported range [0, 2**{_ORDINAL_BITS})")
    if not 0 <= partition < _PARTITION_LIMIT:
        raise ValueError(
            f"Kafka partition {partition} is outside the supported range [0, {_PARTITION_LIMIT})"
        )
    return (partition << _ORDINAL_BITS) | offset


def file_ordinal(file_index: int, line: int) -> int:
    """Replay-stable ordinal of a line of the file source: ``file_index << 40 | line`` (fits int64)."""
    if not 0 <= line < 1 << _FILE_LINE_BITS:
        raise ValueError(f"line {line} is outside the supported range [0, 2**{_FILE_LINE_BITS})")
    if not 0 <= file_index < 1 << (63 - _FILE_LINE_BITS):
        raise ValueError(f"file index {file_index} is outside the supported range")
    return (file_index << _FILE_LINE_BITS) | line


def _stable_position(change: ParsedChange, ordinal: int) -> ParsedChange:
    if change.op == OP_READ:
        return replace(change, position=Position(max(change.position.commit - 1, 0), ordinal))
    if change.position_from == "ts_ms":
        return replace(change, position=Position(change.position.commit, ordinal))
    return change


def _same_schema(a: pa.Schema | None, b: pa.Schema | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.equals(b)


def _reinsert_truncates(events: list[_Event], inferred: list[dict[str, Any]]) -> list[dict[str, Any]]:
    it = iter(inferred)
    return [{} if e.change.op == OP_TRUNCATE else next(it) for e in events]


def _system_row(
    change: ParsedChange, keys: list[str], columns: list[str], data: dict[str, Any]
) -> dict[str, Any]:
    row: dict[str, Any] = {
        OP_COL: change.op,
        COMMIT_POS_COL: change.position.commit,
        EVENT_POS_COL: change.position.event,
        TX_ID_COL: change.tx_id,
        COMMIT_TS_COL: change.commit_ts,
        OLD_KEY_COL: change.old_key(keys),
        UNCHANGED_COL: list(change.unchanged) or None,
    }
    for name in columns:
        row[name] = data.get(name)
    return row


def table_keys(tables: Sequence[SourceTable | str] | None) -> tuple[dict[str, list[str]], set[str] | None]:
    if tables is None:
        return {}, None
    specs = [t if isinstance(t, SourceTable) else SourceTable(t) for t in tables]
    return {t.name: list(t.key_columns) for t in specs if t.key_columns}, {t.name for t in specs}
