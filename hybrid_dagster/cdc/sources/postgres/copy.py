"""The initial copy of PostgreSQL tables, read at an exact position of the change stream.

Correctness rule: the copy and the stream hand off at one LSN. A temporary logical slot is created over a
replication connection with an exported snapshot (``CREATE_REPLICATION_SLOT ... TEMPORARY LOGICAL ...
(SNAPSHOT 'export')``); the rows are read in a ``REPEATABLE READ`` transaction that imports it (``SET
TRANSACTION SNAPSHOT``). That snapshot shows exactly the transactions that committed before the slot's
consistent point C, and a slot decodes exactly those that commit at or after it. The capture slot was
created earlier (its position is at or before C), so it streams every transaction after the copy, plus
some already in it; the copied table's watermark ``Position(C - 1, 0)`` makes the apply skip exactly the
latter (commit records start on 8-byte boundaries, so none starts at C - 1).

Reading the copy in a later, unrelated transaction (as a plain ``SELECT`` would) is not exact: changes
between the slot's start and the read would be applied twice, and an unchanged TOAST value carried forward
from the copied table would come from a row that has since moved (one patient's value on another's row).

The same mechanism serves every case: a slot created by this run, a slot left by a run killed before it
copied, a slot made by hand, a table added to the capture later. The temporary slot disappears with the
replication connection, also when the process is killed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from hybrid_dagster.cdc.changes import Position, TableChanges
from hybrid_dagster.cdc.sources.base import ConsistentCopy, CopyChunk, SourceTable
from hybrid_dagster.cdc.sources.postgres.snapshot import read_chunks
from hybrid_dagster.cdc.sources.postgres.types import (
    SESSION_SETTINGS,
    PgColumn,
    string_array,
    text_changes,
)
from hybrid_dagster.errors import PostgresSetupError

Describe = Callable[[SourceTable], tuple[list[str], list[PgColumn]]]
"""A table's key columns and columns."""


def parse_lsn(text: str) -> int:
    """``'X/Y'`` -> integer LSN.

    Example:
        >>> parse_lsn("0/16B3748")
        23803720
    """
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


class PostgresCopy(ConsistentCopy):
    """Rows of captured tables as of the consistent point of a temporary slot (see the module docstring).

    Example:
        >>> with source.open_copy() as copy:  # doctest: +SKIP
        ...     chunks = list(copy.rows(SourceTable("public.patients"), chunk_rows=100_000))
        >>> copy.position  # doctest: +SKIP
        Position(commit=24023127, event=0)
    """

    def __init__(self, dsn: str, *, plugin: str, source_id: str, describe: Describe) -> None:
        self.source_id = source_id
        self._describe = describe
        self._replication: Any = None
        self._reader: Any = None
        try:
            self._replication = psycopg2.connect(
                dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection
            )
        except psycopg2.OperationalError as err:
            raise PostgresSetupError(
                f"{source_id}: the initial copy needs a replication connection, to read the tables at the "
                "exact position the stream starts from, and the server refused one. Give the CDC role the "
                "REPLICATION attribute (ALTER ROLE ... REPLICATION) and allow it a 'replication' connection "
                f"in pg_hba.conf ({type(err).__name__})."
            ) from None
        try:
            slot = f"hd_copy_{uuid.uuid4().hex[:20]}"
            with self._replication.cursor() as cur:
                # Waits for the transactions running now to end, like any logical slot creation.
                cur.execute(f"CREATE_REPLICATION_SLOT {slot} TEMPORARY LOGICAL {plugin} (SNAPSHOT 'export')")
                row = cur.fetchone()
            _, consistent_point, snapshot_name, _ = row
            point = parse_lsn(consistent_point)
            self.position = Position(max(point - 1, 0), 0)
            self._reader = psycopg2.connect(dsn)
            self._reader.autocommit = True
            with self._reader.cursor() as cur:
                for statement in SESSION_SETTINGS:
                    cur.execute(statement)
            self._reader.autocommit = False
            self._reader.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with self._reader.cursor() as cur:
                cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot_name,))
        except BaseException:
            self.close()
            raise

    def rows(self, table: SourceTable, chunk_rows: int) -> Iterator[TableChanges]:
        keys, columns = self._describe(table)
        schema, _, name = table.name.rpartition(".")
        select = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c.name)) for c in columns),
            sql.Identifier(schema or "public", name),
        )
        with self._reader.cursor(name=f"copy_{uuid.uuid4().hex[:12]}") as cur:
            cur.itersize = chunk_rows
            cur.execute(select)
            yielded = False
            while chunk := cur.fetchmany(chunk_rows):
                yielded = True
                yield copy_chunk(table.name, keys, columns, chunk, self.position)
            if not yielded:
                yield copy_chunk(table.name, keys, columns, [], self.position)

    chunked = True

    def chunks(
        self,
        table: SourceTable,
        chunk_rows: int,
        *,
        after_key: tuple[str, ...] | None = None,
        first_sequence: int = 0,
    ) -> Iterator[CopyChunk]:
        keys, columns = self._describe(table)
        return read_chunks(
            self._reader,
            table.name,
            keys,
            columns,
            chunk_rows=chunk_rows,
            position=self.position,
            after_key=after_key,
            first_sequence=first_sequence,
        )

    def close(self) -> None:
        for conn in (self._reader, self._replication):
            if conn is not None and not conn.closed:
                conn.close()  # the temporary slot goes with the replication connection
        self._reader = self._replication = None


def copy_chunk(
    table: str, keys: list[str], columns: list[PgColumn], chunk: list[tuple[Any, ...]], position: Position
) -> TableChanges:
    """Rows read as text -> ``r`` changes at ``position``, converted like the decoders' (same Arrow types)."""
    by_column = list(zip(*chunk, strict=True)) if chunk else [() for _ in columns]
    values = {c.name: string_array(list(v)) for c, v in zip(columns, by_column, strict=True)}
    return text_changes(table, keys, columns, values, len(chunk), position)
