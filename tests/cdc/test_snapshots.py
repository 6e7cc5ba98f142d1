"""Chunked initial copies (hybrid_dagster.cdc.snapshots) on a real PostgreSQL and a real Iceberg catalog.

The copy commits one key range at a time while writes continue; after a SIGKILL at random chunks it
resumes at a new consistent point, and the stream then joins every segment exactly (no gap, no duplicate).
"""

from __future__ import annotations

import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2
import pytest

from hybrid_dagster.audit.errors import TransferIntegrityError
from hybrid_dagster.cdc.pipeline import CdcPipeline, TableMapping
from hybrid_dagster.cdc.sink import integrity
from hybrid_dagster.cdc.sink.apply import IcebergApplier
from hybrid_dagster.cdc.sink.watermark import SOURCE_PROPERTY
from hybrid_dagster.cdc.snapshots import (
    LAST_KEY_PROPERTY,
    SEGMENTS_TABLE_PROPERTY,
    SNAPSHOT_SUFFIX,
    SnapshotState,
    copy_table_chunked,
    request_resnapshot,
)
from hybrid_dagster.cdc.sources.base import SourceTable
from hybrid_dagster.cdc.sources.postgres.source import PostgresChangeSource
from tests.cdc.sink.test_apply import make_catalog
from tests.cdc.snapshot_child import MAPPING, build
from tests.cdc.strict import diff_tables
from tests.fixtures.postgres import PgDatabase, execute

REPO_ROOT = Path(__file__).resolve().parents[2]
ROWS = 3_000


def create_items(dsn: str, rows: int = ROWS) -> None:
    execute(
        dsn,
        "CREATE TABLE items (id int PRIMARY KEY, name text, qty int NOT NULL, price numeric(10,2),"
        " tags text)",
        f"INSERT INTO items SELECT g, 'item ' || g, g % 97, g / 7.0, CASE WHEN g % 5 = 0 THEN '' END"
        f" FROM generate_series(1, {rows}) g",
    )


class Writer(threading.Thread):
    """Updates, inserts, deletes and key changes in small transactions until stopped."""

    def __init__(self, dsn: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.rng, self.stop, self.count = dsn, random.Random(seed), threading.Event(), 0
        self.next_id = 10 * ROWS

    def run(self) -> None:
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            while not self.stop.is_set():
                key = self.rng.randint(1, ROWS)
                roll = self.rng.random()
                if roll < 0.5:
                    cur.execute("UPDATE items SET qty = qty + 1, name = name || '+' WHERE id = %s", (key,))
                elif roll < 0.7:
                    self.next_id += 1
                    cur.execute("INSERT INTO items VALUES (%s, 'new', 1, 2.5, NULL)", (self.next_id,))
                elif roll < 0.85:
                    cur.execute("DELETE FROM items WHERE id = %s", (key,))
                else:  # a key change, across the key ranges of the chunks
                    self.next_id += 1
                    cur.execute("UPDATE items SET id = %s WHERE id = %s", (self.next_id - 5 * ROWS, key))
                self.count += 1
                time.sleep(0.005)
        conn.close()


def assert_equal(dsn: str, catalog_dir: Path) -> None:
    rows = make_catalog(catalog_dir).load_table(MAPPING.identifier).scan().to_arrow()
    problems = diff_tables(dsn, "public.items", rows, ["id"])
    assert not problems, "\n".join(problems)


def drain(dsn: str, catalog_dir: Path) -> None:
    pipeline = build(dsn, catalog_dir, 1_000)
    try:
        pipeline.run()
    finally:
        pipeline.source.close()


def test_chunked_copy_with_concurrent_writes_equals_the_source(pg_db: PgDatabase, tmp_path: Path) -> None:
    create_items(pg_db.dsn)
    writer = Writer(pg_db.dsn, seed=1)
    writer.start()
    pipeline = build(pg_db.dsn, tmp_path, 500)
    try:
        report = pipeline.run(max_batches=0)
    finally:
        writer.stop.set()
        writer.join()
        pipeline.source.close()
    assert writer.count > 0
    progress = report.tables[MAPPING.identifier]
    assert progress.snapshot_rows >= ROWS * 0.8
    table = make_catalog(tmp_path).load_table(MAPPING.identifier)
    chunk_commits = [
        s
        for s in table.metadata.snapshots
        if s.summary and s.summary[SOURCE_PROPERTY].endswith(SNAPSHOT_SUFFIX)
    ]
    # Memory is bounded by the chunk: every chunk commit added at most 500 rows, one key range each.
    assert len(chunk_commits) == progress.commits >= progress.snapshot_rows // 500
    assert all(int(s.summary["added-records"] or 0) <= 500 for s in chunk_commits)
    assert all(s.summary[LAST_KEY_PROPERTY] for s in chunk_commits)
    drain(pg_db.dsn, tmp_path)
    assert_equal(pg_db.dsn, tmp_path)

    # A re-snapshot on demand copies the table afresh; the stream joins it exactly.
    execute(pg_db.dsn, "UPDATE items SET qty = -1 WHERE id % 11 = 0")
    catalog = make_catalog(tmp_path)
    request_resnapshot(catalog, MAPPING.identifier, pipeline.source.source_id)
    assert catalog.load_table(MAPPING.identifier).scan().to_arrow().num_rows == 0
    execute(pg_db.dsn, "DELETE FROM items WHERE id % 13 = 0")
    drain(pg_db.dsn, tmp_path)
    assert_equal(pg_db.dsn, tmp_path)


def test_copy_killed_at_random_chunks_resumes_exactly(pg_db: PgDatabase, tmp_path: Path) -> None:
    create_items(pg_db.dsn)
    rng = random.Random(7)
    writer = Writer(pg_db.dsn, seed=2)
    writer.start()
    kills = 0
    try:
        for _ in range(2):
            child = subprocess.Popen(
                [sys.executable, "-m", "tests.cdc.snapshot_child", pg_db.dsn, str(tmp_path), "200"],
                cwd=REPO_ROOT,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert child.stderr is not None
            wanted, seen = rng.randint(1, 3), 0
            for line in child.stderr:
                if "copied" in line:
                    seen += 1
                    if seen >= wanted:
                        break
            if child.poll() is None:
                # somewhere inside the next chunk (or its commit): a chunk of 200 rows takes a few ms
                time.sleep(rng.random() * 0.02)
                child.send_signal(signal.SIGKILL)
                kills += 1
            child.wait()
    finally:
        writer.stop.set()
        writer.join()
    assert kills >= 2
    drain(pg_db.dsn, tmp_path)
    assert_equal(pg_db.dsn, tmp_path)
    table = make_catalog(tmp_path).load_table(MAPPING.identifier)
    assert SEGMENTS_TABLE_PROPERTY in table.properties  # resumed at least once, at a later point


@pytest.mark.parametrize("chunk_rows", [1, 7])
def test_tiny_chunks_and_an_empty_table(pg_db: PgDatabase, tmp_path: Path, chunk_rows: int) -> None:
    execute(
        pg_db.dsn,
        "CREATE TABLE items (id text PRIMARY KEY, name text, qty int, price numeric(10,2), tags text)",
    )
    pipeline = build(pg_db.dsn, tmp_path, chunk_rows)
    try:
        pipeline.run(max_batches=0)  # empty: the copy still records the hand-off
        execute(
            pg_db.dsn,
            "INSERT INTO items VALUES ('b', '', 1, 1.5, NULL), ('B', NULL, 2, NULL, 'x'),"
            " ('a b', 'z', 3, 0, ''), ('é', 'y', 4, 9.99, 'q')",
        )
        pipeline.run()
    finally:
        pipeline.source.close()
    assert_equal(pg_db.dsn, tmp_path)
    request_resnapshot(make_catalog(tmp_path), MAPPING.identifier, pipeline.source.source_id)
    drain(pg_db.dsn, tmp_path)
    assert_equal(pg_db.dsn, tmp_path)


SWAP = (
    "BEGIN; UPDATE docs SET id = -1 WHERE id = {a}; UPDATE docs SET id = {a} WHERE id = {b};"
    " UPDATE docs SET id = {b} WHERE id = -1; COMMIT"
)
"""Rows ``a`` and ``b`` of ``docs`` swap ids through -1 in one transaction (TOASTed values unchanged)."""


def create_docs(dsn: str) -> psycopg2.extensions.connection:
    """Table ``docs`` with keys 1-6, each holding an out-of-line (TOASTed) value; an autocommit connection."""
    execute(
        dsn,
        "CREATE TABLE docs (id int PRIMARY KEY, big text, v int NOT NULL DEFAULT 0)",
        "ALTER TABLE docs ALTER COLUMN big SET STORAGE EXTERNAL",
    )
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        for key in range(1, 7):
            cur.execute(
                "INSERT INTO docs (id, big) VALUES (%s, %s)", (key, f"{key}:" + secrets.token_hex(6000))
            )
    return conn


def copy_first_segment_and_die(source: PostgresChangeSource, applier: IcebergApplier) -> None:
    """The chunked copy of ``docs`` commits keys 1 and 2 (at C1) and is abandoned, as a killed copy is."""
    source.setup()
    with source.open_copy() as copy:
        chunks = copy_table_chunked(
            applier, "lake.docs", SourceTable("public.docs"), copy, SnapshotState("none"), chunk_rows=2
        )
        assert next(chunks) == 2
        chunks.close()


def test_resumed_copy_segments_keep_toast_values_on_their_rows(pg_db: PgDatabase, tmp_path: Path) -> None:
    """Keys up to 2 are copied at C1; the copy dies; rows 3 and 4 swap ids (through -1, their TOASTed
    values unchanged) before the copy resumes at C2. Re-applying the swap over the C2 copy would hand each
    row the other's value: the segment filter drops what the C2 copy already holds."""
    conn = create_docs(pg_db.dsn)
    source = PostgresChangeSource(pg_db.dsn, [SourceTable("public.docs")], slot_name="docs_slot")
    applier = IcebergApplier(make_catalog(tmp_path), source_id=source.source_id)
    try:
        copy_first_segment_and_die(source, applier)
        with conn.cursor() as cur:
            cur.execute(SWAP.format(a=3, b=4))  # both keys in the later segment: its copy holds the swap
            cur.execute(SWAP.format(a=1, b=2))  # both in the first: the stream applies it
            cur.execute("UPDATE docs SET v = v + 1 WHERE id IN (2, 5)")
        pipeline = CdcPipeline(
            source, applier, [TableMapping("public.docs", "lake.docs")], snapshot_chunk_rows=2
        )
        pipeline.run()
        table = make_catalog(tmp_path).load_table("lake.docs")
        assert SEGMENTS_TABLE_PROPERTY in table.properties
        with conn.cursor() as cur:
            cur.execute(SWAP.format(a=5, b=1))  # after both points: streamed as usual
        pipeline.run()
    finally:
        source.close()
        conn.close()
    rows = make_catalog(tmp_path).load_table("lake.docs").scan().to_arrow()
    problems = diff_tables(pg_db.dsn, "public.docs", rows, ["id"])
    assert not problems, "\n".join(problems)


def test_a_chunk_that_reads_back_wrong_stops_the_copy_before_its_completion(
    pg_db: PgDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_items(pg_db.dsn)
    real = integrity.read_data_files
    calls = {"n": 0}

    def lossy(metadata, io, files):  # type: ignore[no-untyped-def]
        rows = real(metadata, io, files)  # the third chunk's files, read back, lose a row
        calls["n"] += 1
        return rows.slice(1) if calls["n"] == 3 else rows

    monkeypatch.setattr(integrity, "read_data_files", lossy)
    pipeline = build(pg_db.dsn, tmp_path, 500)
    try:
        with pytest.raises(TransferIntegrityError, match=r"snapshot chunk 3 of Iceberg table lake\.items"):
            pipeline.run(max_batches=0)
    finally:
        pipeline.source.close()
    table = make_catalog(tmp_path).load_table(MAPPING.identifier)
    sources = {s.summary[SOURCE_PROPERTY] for s in table.metadata.snapshots if s.summary}
    assert sources and all(s.endswith(SNAPSHOT_SUFFIX) for s in sources)  # never the source's watermark


@pytest.mark.parametrize(
    "moves",
    [
        ["UPDATE docs SET id = -5 WHERE id = 4"],
        # a swap through -1 between the segments: 4 (later segment) -> -1, 2 -> 4, -1 -> 2 (first segment)
        [SWAP.format(a=4, b=2)],
    ],
    ids=["moved-into-the-first-segment", "swapped-across-segments"],
)
def test_a_key_moved_between_resumed_segments_with_an_unchanged_toast_value_recopies_the_table(
    pg_db: PgDatabase, tmp_path: Path, moves: list[str]
) -> None:
    """Keys up to 2 are copied at C1; the copy dies; key 4's row moves into the first segment's range
    (to -5, or to 2 in a swap) with its TOASTed value unchanged before the copy resumes at C2. The C2
    copy no longer has key 4's row and the C1 copy predates the move, so no table row holds the value:
    the pipeline re-snapshots the table, exactly."""
    execute(pg_db.dsn, "CREATE TABLE other (id int PRIMARY KEY, v int)")
    conn = create_docs(pg_db.dsn)
    tables = [SourceTable("public.docs"), SourceTable("public.other")]
    mappings = [TableMapping("public.docs", "lake.docs"), TableMapping("public.other", "lake.other")]
    source = PostgresChangeSource(pg_db.dsn, tables, slot_name="docs_slot")
    applier = IcebergApplier(make_catalog(tmp_path), source_id=source.source_id)
    try:
        copy_first_segment_and_die(source, applier)
        with conn.cursor() as cur:
            for move in moves:  # the later segment's row moves, its TOASTed value unchanged
                cur.execute(move)
        pipeline = CdcPipeline(source, applier, mappings, snapshot_chunk_rows=2)
        pipeline.run()  # resumes the copy at C2; the segments now filter the stream
        with conn.cursor() as cur:
            cur.execute("INSERT INTO other VALUES (1, 1)")
            cur.execute("UPDATE docs SET v = v + 1 WHERE id IN (1, 6)")
        report = pipeline.run()
        assert report.tables["lake.other"].inserted == 1  # the other table's changes were applied
        for table, key in (("docs", "id"), ("other", "id")):
            rows = make_catalog(tmp_path).load_table(f"lake.{table}").scan().to_arrow()
            problems = diff_tables(pg_db.dsn, f"public.{table}", rows, [key])
            assert not problems, "\n".join(problems)
        with conn.cursor() as cur:
            cur.execute("UPDATE docs SET v = v + 1 WHERE id IN (-5, 2)")  # streamed after the fresh copy
        pipeline.run()
    finally:
        source.close()
        conn.close()
    rows = make_catalog(tmp_path).load_table("lake.docs").scan().to_arrow()
    problems = diff_tables(pg_db.dsn, "public.docs", rows, ["id"])
    assert not problems, "\n".join(problems)
