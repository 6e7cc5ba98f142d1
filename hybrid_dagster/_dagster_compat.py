"""The only module that touches private Dagster names (``dagster._*``, ``dagster_shared``).

Dagster's private APIs may change in any release; keeping them here means one file to fix on an
upgrade, and a test (``tests/test_layers.py``) fails if any other module imports a private name.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Collection

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
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster.components.definitions import LazyDefinitions as LazyDefinitions
from dagster_shared.check import CheckError as CheckError
from dagster_shared.serdes import deserialize_value

STUB_ASSET_METADATA_KEY = "dagster/auto_created_stub_asset"
"""Metadata Dagster puts on the placeholder node it creates for an undefined dependency."""


def in_dagster_step() -> bool:
    """Whether the calling code runs inside a Dagster step's compute function (this process)."""
    return current_execution_context.get() is not None


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
        after = -1
        if cursor is not None:
            parsed = EventLogCursor.parse(cursor)
            if not parsed.is_id_cursor():
                return None
            after = parsed.storage_id()
        connection = self._connection(run_id)
        if connection is None:
            empty = cursor or EventLogCursor.from_storage_id(-1).to_string()
            return EventLogConnection(records=[], cursor=empty, has_more=False)
        types = sorted(t.value for t in of_type)
        try:
            rows = connection.execute(
                "SELECT id, event FROM event_logs WHERE run_id = ? AND id > ? "
                f"AND dagster_event_type IN ({', '.join('?' * len(types))}) ORDER BY id ASC LIMIT ?",
                (run_id, after, *types, limit),
            ).fetchall()
        except sqlite3.OperationalError:  # a shard being created right now: Dagster's own path waits
            return None
        records = [
            dg.EventLogRecord(storage_id=row_id, event_log_entry=deserialize_value(event, dg.EventLogEntry))
            for row_id, event in rows
        ]
        next_cursor = (
            EventLogCursor.from_storage_id(records[-1].storage_id).to_string() if records else cursor
        )
        return EventLogConnection(
            records=records,
            cursor=next_cursor or EventLogCursor.from_storage_id(-1).to_string(),
            has_more=len(records) == limit,
        )
