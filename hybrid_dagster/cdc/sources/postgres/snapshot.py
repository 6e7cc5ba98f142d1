"""Chunked reads of a PostgreSQL table by primary-key ranges, into Arrow, for the initial copy.

Correctness rules:

* Chunks are key ranges read in key order (keyset pagination, ``WHERE (k1, k2) > (last) ORDER BY k1, k2
  LIMIT n``), each in the copy's ``REPEATABLE READ`` transaction that imports the slot's exported snapshot
  (:mod:`hybrid_dagster.cdc.sources.postgres.copy`): every chunk sees the table at the same consistent
  point, whatever is written meanwhile. The ranges neither overlap nor leave gaps, so a copy resumed after
  the last committed chunk's key reads each row exactly once.
* Text key columns are ordered and compared with ``COLLATE "C"`` (byte order), the order Arrow compares
  strings in; the resume filter of :mod:`hybrid_dagster.cdc.snapshots` relies on the two agreeing.
* Rows travel as ``COPY (SELECT ...) TO STDOUT (FORMAT csv)``, parsed by pyarrow's multi-threaded CSV
  reader into string columns and converted with the decoders' own conversions
  (:func:`~hybrid_dagster.cdc.sources.postgres.types.build_table_changes`), so the copy has exactly the
  Arrow types the stream has. In CSV a NULL is an unquoted empty field and an empty string is ``""``:
  the reader keeps the two apart. Memory holds one chunk (its CSV text and its Arrow columns).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg2 import sql

from hybrid_dagster.cdc.changes import Position, TableChanges
from hybrid_dagster.cdc.sources.base import CopyChunk
from hybrid_dagster.cdc.sources.postgres.types import (
    BPCHAR,
    TEXT,
    VARCHAR,
    PgColumn,
    text_changes,
)

TEXT_TYPES = frozenset({TEXT, VARCHAR, BPCHAR})
"""Key columns ordered with ``COLLATE "C"``."""


def read_chunks(
    conn: Any,
    table: str,
    keys: list[str],
    columns: list[PgColumn],
    *,
    chunk_rows: int,
    position: Position,
    after_key: tuple[str, ...] | None = None,
    first_sequence: int = 0,
) -> Iterator[CopyChunk]:
    """Key ranges of ``table`` after ``after_key``, ``chunk_rows`` rows each, read on ``conn``.

    Rows of the n-th chunk get ``Position(position.commit, first_sequence + n)``. Yields at least one
    chunk (an empty one for an empty range), so the schema is known.

    Example:
        >>> for chunk in read_chunks(conn, "public.t", ["id"], cols, chunk_rows=100_000,
        ...                          position=Position(24023127)):  # doctest: +SKIP
        ...     chunk.changes.count, chunk.last_key
    """
    if not keys:
        raise ValueError(f"table {table}: a chunked copy needs key columns")
    by_name = {c.name: c for c in columns}
    key_types = _key_types(conn, table, keys)
    schema, _, name = table.rpartition(".")
    relation = sql.Identifier(schema or "public", name)
    ordered = [_collated(k, by_name[k]) for k in keys]
    sequence, last, yielded = first_sequence, after_key, False
    while True:
        where: sql.Composable = sql.SQL("")
        params: list[str] = []
        if last is not None:
            where = sql.SQL(" WHERE ({}) > ({})").format(
                sql.SQL(", ").join(ordered),
                sql.SQL(", ").join(
                    _collated_param(sql.SQL("%s::") + sql.SQL(key_types[k]), by_name[k]) for k in keys
                ),
            )
            params = list(last)
        query = sql.SQL("COPY (SELECT {} FROM {}{} ORDER BY {} LIMIT {}) TO STDOUT (FORMAT csv)").format(
            sql.SQL(", ").join(sql.Identifier(c.name) for c in columns),
            relation,
            where,
            sql.SQL(", ").join(ordered),
            sql.Literal(chunk_rows),
        )
        buffer = io.BytesIO()
        with conn.cursor() as cur:
            cur.copy_expert(cur.mogrify(query, params).decode(), buffer)
        text = _parse_csv(buffer.getvalue(), columns)
        del buffer
        n = text.num_rows
        if n == 0 and yielded:
            return
        changes = _changes(table, keys, columns, text, Position(position.commit, sequence))
        last_key = tuple(str(text.column(k)[n - 1].as_py()) for k in keys) if n else last
        yield CopyChunk(changes, last_key)
        yielded, sequence, last = True, sequence + 1, last_key
        if n < chunk_rows:
            return


def _key_types(conn: Any, table: str, keys: list[str]) -> dict[str, str]:
    schema, _, name = table.rpartition(".")
    with conn.cursor() as cur:
        cur.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (sql.Identifier(schema or "public", name).as_string(conn),),
        )
        types = dict(cur.fetchall())
    return {k: types[k] for k in keys}


def _collated(name: str, column: PgColumn) -> sql.Composable:
    ident = sql.Identifier(name)
    return sql.SQL('{} COLLATE "C"').format(ident) if column.type_oid in TEXT_TYPES else ident


def _collated_param(param: sql.Composable, column: PgColumn) -> sql.Composable:
    return sql.SQL('{} COLLATE "C"').format(param) if column.type_oid in TEXT_TYPES else param


def _parse_csv(data: bytes, columns: list[PgColumn]) -> pa.Table:
    names = [c.name for c in columns]
    if not data:
        return pa.table({n: pa.array([], pa.string()) for n in names})
    return pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=names, block_size=16 << 20),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )


def _changes(
    table: str, keys: list[str], columns: list[PgColumn], text: pa.Table, position: Position
) -> TableChanges:
    values = {c.name: text.column(c.name).combine_chunks() for c in columns}
    return text_changes(table, keys, columns, values, text.num_rows, position)
