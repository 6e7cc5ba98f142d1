"""The only module that touches private Dagster names (``dagster._*``, ``dagster_shared``).

Dagster's private APIs may change in any release; keeping them here means one file to fix on an
upgrade, and a test (``tests/test_layers.py``) fails if any other module imports a private name.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.code_pointer import (
    load_python_file as load_python_file,
    load_python_module as load_python_module,
)
from dagster._core.definitions.assets.graph.base_asset_graph import (
    BaseAssetGraph as BaseAssetGraph,
    BaseAssetNode as BaseAssetNode,
)
from dagster._core.event_api import EventLogCursor
from dagster._core.execution.context.compute import current_execution_context
from dagster._core.storage.event_log.base import EventLogConnection as EventLogConnection
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster.components.definitions import LazyDefinitions as LazyDefinitions
from dagster_shared import check as dagster_check
from dagster_shared.check import CheckError as CheckError
from dagster_shared.serdes import deserialize_value
from dagster_shared.serdes.serdes import _WHITELIST_MAP, UnpackContext, _unpack_object
from dagster_shared.utils.warnings import disable_dagster_warnings

STUB_ASSET_METADATA_KEY = "dagster/auto_created_stub_asset"
"""Metadata Dagster puts on the placeholder node it creates for an undefined dependency."""


def in_dagster_step() -> bool:
    """Whether the calling code runs inside a Dagster step's compute function (this process)."""
    return current_execution_context.get() is not None


@dataclass(frozen=True, slots=True)
class EventLogRow:
    """What a lineage reader needs of one event log record: where it is, which run/step/job, when, the
    event type, and the event's own data as Dagster deserializes it (``event_specific_data``).

    Example:
        >>> row = EventLogRow.of(record)  # from any ``dg.EventLogRecord``
        >>> row.event_type is dg.DagsterEventType.STEP_START
        True
    """

    storage_id: int
    run_id: str
    job_name: str | None
    step_key: str | None
    timestamp: float
    event_type: dg.DagsterEventType | None
    """None for a plain log message (no Dagster event)."""
    message: str | None
    """The Dagster event's message."""
    data: Any
    """``DagsterEvent.event_specific_data`` (e.g. ``StepMaterializationData``), or None."""

    @classmethod
    def of(cls, record: dg.EventLogRecord) -> EventLogRow:
        entry = record.event_log_entry
        event = entry.dagster_event
        return cls(
            storage_id=record.storage_id,
            run_id=entry.run_id,
            job_name=entry.job_name,
            step_key=entry.step_key,
            timestamp=entry.timestamp,
            event_type=event.event_type if event is not None else None,
            message=event.message if event is not None else None,
            data=event.event_specific_data if event is not None else None,
        )


_ENVELOPE_CLASSES = frozenset(
    {
        "EventLogEntry",
        "DagsterEvent",
        "SolidHandle",
        "NodeHandle",
        "StepHandle",
        "ResolvedFromDynamicStepHandle",
    }
)
"""Serialized classes around an event's own data that a lineage reader does not need as objects."""


def decode_event_rows(
    rows: Iterable[tuple[int, str]], event_types: Collection[dg.DagsterEventType]
) -> list[EventLogRow]:
    """``EventLogRow`` of serialized event log entries ``(storage_id, event)`` of ``event_types``.

    The same JSON pass as ``deserialize_value`` with Dagster's own unpacker for every serialized object,
    except the envelope (the entry, the Dagster event and its step/node handles), whose fields are read
    from the JSON instead of being built into objects and read back (about a third of the time of a
    record). Each entry's event data is unpacked by Dagster (its renames and old names included). A row
    this cannot read as expected (another event type, a field missing) is deserialized by
    ``deserialize_value`` in full, so the result is always that of the public deserializer.
    """
    wanted = {t.value for t in event_types}
    decoded: list[EventLogRow] = []
    with (
        disable_dagster_warnings(),
        dagster_check.EvalContext.contextual_namespace(_WHITELIST_MAP.object_type_map),
    ):
        for storage_id, serialized in rows:
            context = UnpackContext()

            def unpack(value: dict[str, Any], context: UnpackContext = context) -> Any:
                if value.get("__class__") in _ENVELOPE_CLASSES:
                    return value
                return _unpack_object(value, _WHITELIST_MAP, context)

            row = None
            try:
                envelope = json.loads(serialized, object_hook=unpack)
                row = _envelope_row(storage_id, envelope, wanted)
                if row is not None:
                    context.finalize_unpack(row.data)
            except Exception:
                row = None
            if row is None:
                entry = deserialize_value(serialized, dg.EventLogEntry)
                row = EventLogRow.of(dg.EventLogRecord(storage_id=storage_id, event_log_entry=entry))
            decoded.append(row)
    return decoded


def _envelope_row(storage_id: int, envelope: Any, wanted: set[str]) -> EventLogRow | None:
    if not isinstance(envelope, dict) or envelope.get("__class__") != "EventLogEntry":
        return None
    event = envelope.get("dagster_event")
    if not isinstance(event, dict) or event.get("__class__") != "DagsterEvent":
        return None
    kind = event["event_type_value"]
    if kind not in wanted:
        return None  # e.g. an old name Dagster's back-compat maps to another type: let Dagster read it
    return EventLogRow(
        storage_id=storage_id,
        run_id=envelope["run_id"],
        job_name=envelope["pipeline_name"],
        step_key=envelope["step_key"],
        timestamp=envelope["timestamp"],
        event_type=dg.DagsterEventType(kind),
        message=event["message"],
        data=event["event_specific_data"],
    )


class RunShardReader:
    """Per-run event reads from the run shards of Dagster's default storage (run-sharded SQLite).

    ``DagsterInstance.get_records_for_run`` opens a new SQLAlchemy engine per call and, the first time a
    process touches a shard, checks that shard's alembic revision (about 100 ms each): a sensor reading
    hundreds of runs spends its tick there. This reader runs the same query (``event_logs`` rows of the
    run, of the given types, after an id cursor, ascending, limited) on one plain SQLite connection per
    shard, kept until :meth:`close`, and returns what the public method returns: the same records
    (``EventLogRecord`` with the row id and the deserialized entry), the same cursor strings and
    ``has_more``. It never writes, never creates a shard (a missing shard has no records yet) and never
    migrates one.

    :meth:`for_instance` gives None for every other storage (PostgreSQL, MySQL, consolidated SQLite): use
    the public method there.

    Example:
        >>> reader = RunShardReader.for_instance(instance)
        >>> if reader is not None:
        ...     page = reader.records_for_run(run_id, None, {dg.DagsterEventType.STEP_START}, 100)
    """

    def __init__(self, storage: SqliteEventLogStorage) -> None:
        self._storage = storage
        self._connections: dict[str, sqlite3.Connection] = {}

    @classmethod
    def for_instance(cls, instance: dg.DagsterInstance) -> RunShardReader | None:
        storage = instance.event_log_storage
        return cls(storage) if type(storage) is SqliteEventLogStorage else None

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def _connection(self, run_id: str) -> sqlite3.Connection | None:
        connection = self._connections.get(run_id)
        if connection is None:
            path = self._storage.path_for_shard(run_id)
            if not os.path.exists(path):
                return None
            connection = sqlite3.connect(
                f"file:{path}?mode=rw", uri=True, timeout=15, check_same_thread=False
            )
            self._connections[run_id] = connection
        return connection

    def records_for_run(
        self,
        run_id: str,
        cursor: str | None,
        of_type: Collection[dg.DagsterEventType],
        limit: int,
    ) -> EventLogConnection | None:
        """``get_records_for_run(run_id, cursor, of_type, limit, ascending=True)``; None when the cursor is
        not an id cursor or the shard has no event table yet (then call the public method)."""
        rows = self._select(run_id, cursor, of_type, limit)
        if rows is None:
            return None
        records = [
            dg.EventLogRecord(storage_id=row_id, event_log_entry=deserialize_value(event, dg.EventLogEntry))
            for row_id, event in rows
        ]
        return EventLogConnection(
            records=records, cursor=self._cursor_after(rows, cursor), has_more=len(rows) == limit
        )

    def rows_for_run(
        self,
        run_id: str,
        cursor: str | None,
        of_type: Collection[dg.DagsterEventType],
        limit: int,
    ) -> tuple[list[EventLogRow], str, bool] | None:
        """The records of :meth:`records_for_run` as :class:`EventLogRow` (:func:`decode_event_rows`),
        with the same cursor and ``has_more``; None where :meth:`records_for_run` gives None."""
        rows = self._select(run_id, cursor, of_type, limit)
        if rows is None:
            return None
        return decode_event_rows(rows, of_type), self._cursor_after(rows, cursor), len(rows) == limit

    def run_status_rows(
        self, after_storage_id: int, of_type: Collection[dg.DagsterEventType], limit: int
    ) -> list[EventLogRow] | None:
        """The first ``limit`` records of ``of_type`` (run-status types) after ``after_storage_id`` in the
        index shard, oldest first: what ``fetch_run_status_changes`` reads there, one status type at a
        time, in one query. None if the index shard cannot be read now (then call the public method)."""
        connection = self._connection(INDEX_SHARD_NAME)
        if connection is None:
            return None
        types = sorted(t.value for t in of_type)
        try:
            rows = connection.execute(
                "SELECT id, event FROM event_logs WHERE id > ? "
                f"AND dagster_event_type IN ({', '.join('?' * len(types))}) ORDER BY id ASC LIMIT ?",
                (after_storage_id, *types, limit),
            ).fetchall()
        except sqlite3.OperationalError:
            return None
        return decode_event_rows(rows, of_type)

    def _select(
        self, run_id: str, cursor: str | None, of_type: Collection[dg.DagsterEventType], limit: int
    ) -> list[tuple[int, str]] | None:
        after = -1
        if cursor is not None:
            parsed = EventLogCursor.parse(cursor)
            if not parsed.is_id_cursor():
                return None
            after = parsed.storage_id()
        connection = self._connection(run_id)
        if connection is None:
            return []
        types = sorted(t.value for t in of_type)
        try:
            return connection.execute(
                "SELECT id, event FROM event_logs WHERE run_id = ? AND id > ? "
                f"AND dagster_event_type IN ({', '.join('?' * len(types))}) ORDER BY id ASC LIMIT ?",
                (run_id, after, *types, limit),
            ).fetchall()
        except sqlite3.OperationalError:  # a shard being created right now: Dagster's own path waits
            return None

    @staticmethod
    def _cursor_after(rows: list[tuple[int, str]], cursor: str | None) -> str:
        if rows:
            return EventLogCursor.from_storage_id(rows[-1][0]).to_string()
        return cursor or EventLogCursor.from_storage_id(-1).to_string()
