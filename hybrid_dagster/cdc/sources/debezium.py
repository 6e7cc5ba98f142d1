"""Debezium sources: JSON-lines files (:class:`DebeziumFileSource`) and a Kafka topic (:class:`DebeziumKafkaSource`).

Both share the envelope parser (:mod:`hybrid_dagster.cdc.debezium_envelope`) and :class:`BatchBuilder`:

* One :class:`TableChanges` per table. A batch never mixes two row schemas of one table: when an event
  declares a different schema than the events already in the batch, the batch ends *before* that event
  (the next read starts with it).
* Key columns: the configured ``SourceTable.key_columns`` if given, else the field names of the first
  event key seen for the table, else none.
* Schemaless events are typed per batch with :func:`infer_schema`.
* Anything that cannot become a row becomes a :class:`DeadLetter` naming the reason; ``read`` never raises
  on bad input.
* Debezium takes its own initial snapshot (op ``r`` events), so ``setup`` creates nothing and these sources
  have no :meth:`snapshot`.

File positions. Event positions (``__commit_pos``/``__event_pos``) come from the events (LSNs). The
batch's ``ack_position`` is ``Position(file_index, line_number)`` of the last line read (1-based lines,
files in name order), and :meth:`DebeziumFileSource.ack` stores ``{file_index, file, line, byte}`` in the
offset store. Files must be appended to or added with names that sort after the existing ones (as
rotating writers do); a stored offset whose file name no longer matches its index is an error.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from hybrid_dagster.cdc.changes import (
    COMMIT_POS_COL,
    COMMIT_TS_COL,
    EVENT_POS_COL,
    OLD_KEY_COL,
    OP_COL,
    OP_TRUNCATE,
    TX_ID_COL,
    UNCHANGED_COL,
    ChangeBatch,
    DeadLetter,
    Position,
    TableChanges,
    change_schema,
)
from hybrid_dagster.cdc.debezium_envelope import (
    UNAVAILABLE_VALUE,
    EventError,
    EventResult,
    Malformed,
    ParsedChange,
    Skipped,
    decode_json,
    infer_schema,
    parse_envelope,
)
from hybrid_dagster.cdc.sources.base import ChangeSource, SourceTable

KAFKA_INSTALL_HINT = "pip install 'hybrid-dagster[kafka]'"
_RECORD_FIELDS = frozenset({"key", "value", "headers", "topic", "partition", "offset", "timestamp"})


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
        >>> from hybrid_dagster.cdc.debezium_envelope import parse_event
        >>> b = BatchBuilder("debezium-file:///tmp/x", {})
        >>> b.add(parse_event('{"op":"c","after":{"id":1},"source":{"table":"t","lsn":5}}'), "raw", "f:1")
        True
        >>> b.build(ack_position=Position(0, 1)).tables["t"].count
        1
    """

    def __init__(self, source: str, key_columns: dict[str, list[str]], tables: set[str] | None = None):
        self.source = source
        self.key_columns = key_columns
        self.tables = tables
        self.count = 0
        """Changes plus dead letters added so far."""
        self._tables: dict[str, _TableEvents] = {}
        self._dead: list[DeadLetter] = []

    def add(self, result: EventResult, raw: str, where: str) -> bool:
        """Add one parse result. False means: schema change, end the batch before this event."""
        if isinstance(result, Skipped):
            return True
        if isinstance(result, Malformed):
            if result.table is None or self._captured(result.table):
                self._dead.append(DeadLetter(self.source, raw, result.reason, result.table, where))
                self.count += 1
            return True
        if not self._captured(result.table):
            return True
        entry = self._tables.setdefault(result.table, _TableEvents())
        if result.op != OP_TRUNCATE:
            if not entry.schema_set:
                entry.schema, entry.schema_set = result.data_schema, True
            elif not _same_schema(entry.schema, result.data_schema):
                return False
        entry.events.append(_Event(result, raw, where))
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
        rows = [_system_row(e.change, keys, data_schema.names, r) for e, r in zip(events, data_rows, strict=True)]
        try:
            return TableChanges(table, keys, data_schema, pa.Table.from_pylist(rows, schema=schema)), []
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            pass
        good, dead = [], []
        for event, row in zip(events, rows, strict=True):
            try:
                pa.Table.from_pylist([row], schema=schema)
                good.append(row)
            except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
                dead.append(self._dead_letter(event, f"value does not fit the column types: {exc}"))
        return TableChanges(table, keys, data_schema, pa.Table.from_pylist(good, schema=schema)), dead

    def _dead_letter(self, event: _Event, reason: str) -> DeadLetter:
        return DeadLetter(self.source, event.raw, reason, event.change.table, event.where)


def _same_schema(a: pa.Schema | None, b: pa.Schema | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.equals(b)


def _reinsert_truncates(events: list[_Event], inferred: list[dict[str, Any]]) -> list[dict[str, Any]]:
    it = iter(inferred)
    return [{} if e.change.op == OP_TRUNCATE else next(it) for e in events]


def _system_row(change: ParsedChange, keys: list[str], columns: list[str], data: dict[str, Any]) -> dict[str, Any]:
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
