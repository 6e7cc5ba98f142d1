"""Chunked initial snapshot of a large PostgreSQL table into Iceberg while writes continue.

Prints ONE JSON object on stdout (progress on stderr)::

    .venv/bin/python -m benchmarks.snapshot                  # 10,000,000 rows, 100,000-row chunks
    .venv/bin/python -m benchmarks.snapshot --rows 1000000   # a smaller run

Figures: ``rows_per_s`` (rows copied / seconds from the start of the copy to its completion commit;
goal >= 300,000), ``peak_rss_mb`` (this process's peak resident memory while copying, PostgreSQL apart;
goal <= 1,500), ``correct`` (after the stream drained the writes made during the copy, the Iceberg table
equals ``SELECT *``: same keys, same row hashes), plus ``writes_during_copy`` and the chunk size.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

if not __package__:  # run as `python benchmarks/NAME.py`: import this checkout's packages, as `-m` does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog.sql import SqlCatalog

from hybrid_dagster.cdc.changes import Position
from hybrid_dagster.cdc.pipeline import CdcPipeline, TableMapping
from hybrid_dagster.cdc.sink.apply import IcebergApplier
from hybrid_dagster.cdc.sources.base import SourceTable
from hybrid_dagster.cdc.sources.postgres.snapshot import read_chunks
from hybrid_dagster.cdc.sources.postgres.source import PostgresChangeSource
from hybrid_dagster.cdc.sources.postgres.types import PgColumn
from hybrid_dagster.testing.postgres import start_embedded_postgres

COLUMNS = "id bigint PRIMARY KEY, qty int NOT NULL, amount numeric(12,2), code text, updated_at timestamptz"


def _execute(dsn: str, statement: str) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(statement)
    conn.close()


class _Writer(threading.Thread):
    """Small transactions of updates, inserts and deletes, as fast as one connection goes."""

    def __init__(self, dsn: str, rows: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.rows, self.stop, self.count = dsn, rows, threading.Event(), 0

    def run(self) -> None:
        rng, next_id = random.Random(1), self.rows + 1
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            while not self.stop.is_set():
                key = rng.randint(1, self.rows)
                roll = rng.random()
                if roll < 0.6:
                    cur.execute("UPDATE items SET qty = qty + 1, updated_at = now() WHERE id = %s", (key,))
                elif roll < 0.85:
                    cur.execute("INSERT INTO items VALUES (%s, 1, 2.50, 'new', now())", (next_id,))
                    next_id += 1
                else:
                    cur.execute("DELETE FROM items WHERE id = %s", (key,))
                self.count += 1
                time.sleep(0.001)
        conn.close()


def _row_hashes(table: pa.Table) -> pa.Table:
    """Keys and a text rendering of each row, sorted by key (compared, never printed)."""
    rendered = [pc.cast(table.column(n), pa.string()) for n in table.column_names]
    joined = pc.binary_join_element_wise(*[pc.fill_null(c, "\\N") for c in rendered], "|")
    return pa.table({"id": table.column("id"), "row": joined}).sort_by("id")


def _source_rows(dsn: str) -> pa.Table:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        for statement in ("SET TimeZone = 'UTC'", "SET DateStyle = 'ISO, YMD'"):
            cur.execute(statement)
        cur.execute(
            "SELECT attname, atttypid, atttypmod FROM pg_attribute WHERE attrelid = 'items'::regclass"
            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        )
        columns = [PgColumn(n, int(o), int(t) if o == 1700 else -1) for n, o, t in cur.fetchall()]
    parts = []
    for chunk in read_chunks(
        conn, "public.items", ["id"], columns, chunk_rows=1_000_000, position=Position(0)
    ):
        parts.append(chunk.changes.rows.select([c.name for c in columns]))
    conn.close()
    return pa.concat_tables(parts)


def measure(rows: int, chunk_rows: int, workdir: Path) -> dict[str, object]:
    server = start_embedded_postgres(workdir / "pg")
    try:
        dsn = server.dsn
        print(f"snapshot: loading {rows} rows", file=sys.stderr)
        _execute(dsn, f"CREATE TABLE items ({COLUMNS})")
        _execute(
            dsn,
            "INSERT INTO items SELECT g, g % 1000, g / 100.0, 'code-' || (g % 977),"
            f" timestamptz '2026-01-01' + g * interval '1 second' FROM generate_series(1, {rows}) g",
        )
        _execute(dsn, "VACUUM ANALYZE items")
        catalog = SqlCatalog(
            "bench", uri=f"sqlite:///{workdir}/catalog.db", warehouse=f"file://{workdir}/warehouse"
        )
        source = PostgresChangeSource(dsn, [SourceTable("public.items")], slot_name="bench_snapshot")
        applier = IcebergApplier(catalog, source_id=source.source_id)
        pipeline = CdcPipeline(
            source, applier, [TableMapping("public.items", "lake.items")], snapshot_chunk_rows=chunk_rows
        )
        source.setup()
        writer = _Writer(dsn, rows)
        writer.start()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        report = pipeline.run(max_batches=0)
        copy_s = time.perf_counter() - started
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        writer.stop.set()
        writer.join()
        copied = report.tables["lake.items"].snapshot_rows
        print(f"snapshot: {copied} rows in {copy_s:.1f}s; draining {writer.count} writes", file=sys.stderr)
        drained = pipeline.run()
        source.close()
        iceberg = _row_hashes(catalog.load_table("lake.items").scan().to_arrow())
        expected = _row_hashes(_source_rows(dsn))
        correct = iceberg.equals(expected)
        return {
            "rows": rows,
            "chunk_rows": chunk_rows,
            "copied_rows": copied,
            "copy_s": round(copy_s, 2),
            "rows_per_s": round(copied / copy_s),
            "peak_rss_mb": round(peak_rss_mb),
            "rss_before_copy_mb": round(rss_before),
            "writes_during_copy": writer.count,
            "stream_events_after_copy": drained.events_applied,
            "chunk_commits": report.tables["lake.items"].commits,
            "correct": correct,
        }
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows in the table (default 10000000)")
    parser.add_argument("--chunk-rows", type=int, default=100_000, help="rows per chunk (default 100000)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hd-snapshot-") as tmp:
        return measure(args.rows, args.chunk_rows, Path(tmp))


if __name__ == "__main__":
    print(json.dumps(main()))
