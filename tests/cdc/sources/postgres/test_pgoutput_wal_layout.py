"""Issue 8, defect 1, end to end: a DELETE whose following Commit bytes read as a negative tuple length.

The WAL is padded with non-transactional logical messages until the Commit record's LSN has the bytes
``0x62`` ('b') then ``>= 0x80``: the layout that made the old decoder walk a "new tuple" of the Delete
into the Commit and index its buffer at a negative position, on every rerun.
"""

from __future__ import annotations

from typing import Any

import psycopg2

from hybrid_dagster.cdc.sources.base import SourceTable
from hybrid_dagster.cdc.sources.postgres.source import PostgresChangeSource

COLUMNS = ", ".join(f"c{i} text" for i in range(1, 10))


def insert_lsn(cur: Any) -> int:
    cur.execute("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8")
    return int(cur.fetchone()[0])


def window_after(lsn: int) -> int:
    """The next LSN ``...XX 62 80 00`` (XX not 'b'/'t') at least 64 kB ahead."""
    window = (lsn >> 24 << 24) | 0x628000
    while window < lsn + 65536 or (window >> 24) & 0xFF in (0x62, 0x74):
        window += 1 << 24
    return window


def pad_to(cur: Any, target: int) -> None:
    while (left := target - insert_lsn(cur)) > 0:
        cur.execute("SELECT pg_logical_emit_message(false, 'pad', repeat('x', %s))", (min(left, 1 << 20),))


def old_walk_reads_a_negative_length(commit: bytes) -> bool:
    """Whether the old decoder, walking 10 columns from the byte after the Commit's type, hit it."""
    for k in range(3, 13):
        if commit[k] in b"tb":
            return commit[k + 1] >= 0x80
    return False


def test_delete_before_a_commit_that_looks_like_a_negative_length(pg_db: Any) -> None:
    conn = psycopg2.connect(pg_db.dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE w (id int PRIMARY KEY, {COLUMNS})")
            cur.execute("INSERT INTO w (id, c1) SELECT g, 'Klinik A' FROM generate_series(1, 10) g")
            source = PostgresChangeSource(pg_db.dsn, [SourceTable("public.w")], slot_name="w_layout")
            source.setup()
            pad_to(cur, window_after(insert_lsn(cur)))
            cur.execute("DELETE FROM w WHERE id = 1")
            cur.execute(
                "SELECT data FROM pg_logical_slot_peek_binary_changes('w_layout', NULL, NULL, "
                "'proto_version', '1', 'publication_names', 'w_layout')"
            )
            messages = [bytes(row[0]) for row in cur.fetchall()]
        assert [m[:1] for m in messages] == [b"B", b"R", b"D", b"C"]
        assert old_walk_reads_a_negative_length(messages[3]), messages[3].hex()

        batch = source.read(1000)
        assert batch.dead_letters == []
        rows = batch.tables["public.w"].rows
        assert rows.column("__op").to_pylist() == ["d"] and rows.column("id").to_pylist() == [1]
        assert batch.ack_position is not None
        source.ack(batch.ack_position)
        assert source.read(1000).empty
        source.teardown()
        source.close()
    finally:
        conn.close()
