"""The streaming reader (replication protocol): acknowledgement, bounded large transactions, reconnects,
a slot held by another consumer, and the long-running mode."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2.extras import LogicalReplicationConnection

from hybrid_dagster.cdc.pipeline import CdcPipeline, Follow, PipelineReport, TableMapping
from hybrid_dagster.cdc.sink.apply import IcebergApplier
from hybrid_dagster.cdc.sources.base import SourceTable
from hybrid_dagster.cdc.sources.postgres.source import PostgresChangeSource
from hybrid_dagster.errors import ReplicationSlotInUse, ValueFreeError
from hybrid_dagster.testing.postgres import restart_embedded_postgres
from tests.fixtures.postgres import confirmed_flush
from tests.planes import make_plane


def _execute(dsn: str, *statements: str) -> None:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.close()


def _source(dsn: str, slot: str, decoder: str = "pgoutput", **kwargs: Any) -> PostgresChangeSource:
    kwargs.setdefault("reader", "stream")
    return PostgresChangeSource(dsn, [SourceTable("public.t")], slot_name=slot, decoder=decoder, **kwargs)  # type: ignore[arg-type]


def _pipeline(source: PostgresChangeSource, warehouse: Path, batch_events: int) -> CdcPipeline:
    applier = IcebergApplier(make_plane(warehouse).load_catalog(), source_id=source.source_id)
    return CdcPipeline(source, applier, [TableMapping("public.t", "s.t")], batch_events=batch_events)


def _iceberg_rows(pipeline: CdcPipeline) -> list[tuple[int, str]]:
    rows = pipeline.applier.catalog.load_table("s.t").scan().to_arrow().sort_by("id")
    return list(zip(rows["id"].to_pylist(), rows["v"].to_pylist(), strict=True))


def _commit_backlog(dsn: str) -> None:
    """1,200 inserts in 12 transactions into ``t``, then one update of every fifth row."""
    for k in range(12):
        _execute(dsn, f"INSERT INTO t SELECT g, 'v' || g FROM generate_series({k * 100}, {k * 100 + 99}) g")
    _execute(dsn, "UPDATE t SET v = 'u' WHERE id % 5 = 0")


def _source_rows(dsn: str) -> list[tuple[int, str]]:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id, v FROM t ORDER BY id")
        rows = [(int(r[0]), str(r[1])) for r in cur.fetchall()]
    conn.close()
    return rows


def test_stream_reads_on_and_acknowledges_only_what_is_acked(pg_decoder_db: tuple[str, str]) -> None:
    dsn, decoder = pg_decoder_db
    _execute(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    source = _source(dsn, f"st_{decoder}", decoder)
    source.setup()
    start = confirmed_flush(dsn, f"st_{decoder}")
    for k in range(3):
        _execute(dsn, f"INSERT INTO t SELECT g, 'v' || g FROM generate_series({k * 10}, {k * 10 + 9}) g")
    first = source.read(1000)
    assert first.tables["public.t"].count == 30 and first.ack_position is not None
    assert source.read(1000).empty  # the stream goes on: nothing new
    source.close()  # not acknowledged: the slot has not moved, a new reader gets the same changes
    assert confirmed_flush(dsn, f"st_{decoder}") == start
    again = _source(dsn, f"st_{decoder}", decoder)
    replay = again.read(1000)
    assert replay.tables["public.t"].rows.equals(first.tables["public.t"].rows)
    again.ack(replay.ack_position)  # type: ignore[arg-type]
    _execute(dsn, "UPDATE t SET v = 'x' WHERE id < 5")
    later = again.read(1000)
    assert later.tables["public.t"].count == 5
    again.close()  # the last status update carries the acknowledged position, not what was read after it
    assert replay.ack_position is not None and later.ack_position is not None
    # (psycopg2 may move it past WAL that holds nothing for the slot, never into the unacknowledged update)
    assert replay.ack_position.commit <= confirmed_flush(dsn, f"st_{decoder}") < later.ack_position.commit


def test_large_transaction_is_applied_exactly_in_bounded_pieces(pg_db: Any, tmp_path: Path) -> None:
    dsn = pg_db.dsn
    _execute(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    source = _source(dsn, "big")
    pipeline = _pipeline(source, tmp_path / "wh", batch_events=400)
    pipeline.run()
    # one transaction of 6,000 changes, 3,000 of them from COPY (multi-insert records: many changes
    # share one LSN), 15 times the batch bound
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.copy_expert("COPY t FROM STDIN", io.StringIO("".join(f"{i}\tc{i}\n" for i in range(3000))))
        cur.execute("INSERT INTO t SELECT g, 'i' || g FROM generate_series(3000, 4499) g")
        cur.execute("UPDATE t SET v = v || '+' WHERE id % 2 = 0 AND id >= 3000")
        cur.execute("DELETE FROM t WHERE id % 3 = 0 AND id < 3000")
    conn.close()
    # stop after three pieces (as a crash would), then a new reader resumes inside the transaction
    partial = pipeline.run(max_batches=3)
    assert partial.acked is None and 0 < partial.events_applied < 6000
    pipeline.source.close()
    resumed = _pipeline(_source(dsn, "big"), tmp_path / "wh", batch_events=400)
    report = resumed.run()
    stream = resumed.source.stream  # type: ignore[attr-defined]
    assert stream is not None and stream.largest_batch <= 400 + 1000  # + at most one multi-insert record
    assert report.acked is not None and report.batches >= 10
    assert _iceberg_rows(resumed) == _source_rows(dsn)
    resumed.source.close()


def test_reconnects_after_the_walsender_is_terminated_and_resumes_exactly(pg_db: Any, tmp_path: Path) -> None:
    dsn = pg_db.dsn
    _execute(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    source = _source(dsn, "drop")
    pipeline = _pipeline(source, tmp_path / "wh", batch_events=300)
    pipeline.run()
    _commit_backlog(dsn)
    done: list[str] = []

    def interrupt(report: PipelineReport) -> None:
        if report.batches in (1, 3):  # the walsender is terminated (the server would do so on a restart)
            conn = psycopg2.connect(dsn)
            conn.autocommit = True
            deadline = time.monotonic() + 10
            with conn.cursor() as cur:
                while time.monotonic() < deadline:  # the receiver may still be reconnecting from the last
                    cur.execute(
                        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                        " WHERE slot_name = 'drop' AND active_pid IS NOT NULL"
                    )
                    if cur.fetchall():
                        done.append("terminated")
                        break
                    time.sleep(0.02)
            conn.close()

    pipeline.on_batch = interrupt
    try:
        pipeline.run()
        assert done == ["terminated", "terminated"] and source.stream is not None
        receiver = source.stream.receiver
        deadline = time.monotonic() + 10  # what followed may have been received before the second drop
        while receiver.connections < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.connections >= 3
        assert _iceberg_rows(pipeline) == _source_rows(dsn)
    finally:
        source.close()


def test_resumes_exactly_after_full_server_restarts(pg_db: Any, tmp_path: Path) -> None:
    """Two restarts of the whole server mid-stream: an immediate one (a crash: the slot falls back to its
    last checkpoint) while the pipeline waits, and a fast one while the pipeline goes on (a fast shutdown
    waits until the walsender's consumer confirmed what it was sent; the pipeline, refused SQL, lets its
    replication connection go so the server can stop)."""
    dsn = pg_db.dsn
    _execute(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    source = _source(dsn, "restart", reconnect_timeout_s=60)
    pipeline = _pipeline(source, tmp_path / "wh", batch_events=300)
    pipeline.run()
    _commit_backlog(dsn)
    failed: list[BaseException] = []
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute("SHOW data_directory")
        pgdata = Path(cur.fetchone()[0])  # type: ignore[index]
    conn.close()

    def fast_restart() -> None:
        try:
            restart_embedded_postgres(pg_db.server, mode="fast")
        except BaseException as err:  # reported below, after the shared server is healed
            failed.append(err)

    fast = threading.Thread(target=fast_restart)

    def restart(report: PipelineReport) -> None:
        if report.batches == 1:  # received beyond the acknowledged position: a crash mid-stream
            restart_embedded_postgres(pg_db.server, mode="immediate")
        elif report.batches == 2:
            fast.start()

    pipeline.on_batch = restart
    try:
        first = pipeline.run()
        fast.join(timeout=120)
        assert not failed and not fast.is_alive() and first.acked is not None
        _execute(dsn, "DELETE FROM t WHERE id % 7 = 0", "INSERT INTO t VALUES (5000, 'after')")
        pipeline.run()  # the receiver reconnected with backoff; it goes on from the acknowledged position
        assert source.stream is not None and source.stream.receiver.connections >= 3
        assert _iceberg_rows(pipeline) == _source_rows(dsn)
    finally:
        source.close()
        if failed or fast.is_alive():  # the session's server must come back for the tests after this one
            restart_embedded_postgres(pg_db.server, mode="immediate", pgdata=pgdata)


def test_a_killed_pipeline_leaves_no_receiver_holding_the_slot(pg_db: Any) -> None:
    """The receiver process stops when its stdin ends, so a SIGKILLed pipeline frees the slot at once."""
    _execute(pg_db.dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    script = (
        "import sys, time\n"
        "from hybrid_dagster.cdc.sources.base import SourceTable\n"
        "from hybrid_dagster.cdc.sources.postgres.source import PostgresChangeSource\n"
        "source = PostgresChangeSource(sys.argv[1], [SourceTable('public.t')], slot_name='orphan')\n"
        "source.setup()\n"
        "source.read(10)\n"
        "print('streaming', flush=True)\n"
        "time.sleep(120)\n"
    )
    pipeline = subprocess.Popen([sys.executable, "-c", script, pg_db.dsn], stdout=subprocess.PIPE)
    try:
        assert pipeline.stdout is not None and pipeline.stdout.readline() == b"streaming\n"
        children = Path(f"/proc/{pipeline.pid}/task/{pipeline.pid}/children").read_text().split()
        assert len(children) == 1 and _slot_active(pg_db.dsn, "orphan")  # the receiver process streams
    finally:
        pipeline.kill()
        pipeline.wait()
    deadline = time.monotonic() + 5
    while _slot_active(pg_db.dsn, "orphan") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _slot_active(pg_db.dsn, "orphan")  # released by the walsender once its receiver left


def _slot_active(dsn: str, slot: str) -> bool:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        row = cur.fetchone()
    conn.close()
    return bool(row and row[0])


def test_slot_held_by_another_consumer_is_a_clear_error(pg_db: Any) -> None:
    dsn = pg_db.dsn
    _execute(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    source = _source(dsn, "held", slot_busy_timeout_s=0.5)
    source.setup()
    other = psycopg2.connect(dsn, connection_factory=LogicalReplicationConnection)
    try:
        other.cursor().start_replication(
            slot_name="held", decode=False, options={"proto_version": "1", "publication_names": "held"}
        )
        with pytest.raises(ReplicationSlotInUse) as caught:
            source.read(100)
        assert isinstance(caught.value, ValueFreeError)
        assert "slot held is in use by another consumer" in str(caught.value)
        assert "pg_terminate_backend" in str(caught.value) and "slot_name" in str(caught.value)
    finally:
        other.close()
        source.close()


def test_follow_mode_keeps_applying_within_the_target_latency(pg_db: Any, tmp_path: Path) -> None:
    dsn = pg_db.dsn
    _execute(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    pipeline = _pipeline(_source(dsn, "follow"), tmp_path / "wh", batch_events=10_000)
    pipeline.run()
    lags: list[float] = []
    stop = threading.Event()

    def on_batch(report: PipelineReport) -> None:
        progress = report.tables["s.t"]
        if progress.last_commit_ts is not None:
            lags.append(time.time() - progress.last_commit_ts.timestamp())

    def write() -> None:
        k = 0
        while not stop.is_set():
            _execute(dsn, f"INSERT INTO t SELECT g, 'f' || g FROM generate_series({k * 50}, {k * 50 + 49}) g")
            k += 1
            time.sleep(0.1)

    pipeline.on_batch = on_batch
    writer = threading.Thread(target=write)
    writer.start()
    try:
        report = pipeline.run(follow=Follow(target_latency_s=1.0, max_seconds=4.0))
    finally:
        stop.set()
        writer.join()
    assert report.batches >= 2 and report.events_applied > 0
    assert sorted(lags)[len(lags) // 2] < 5.0  # median lag, loose: the test machine is shared
    pipeline.run()  # drain what came after the follow run ended
    assert _iceberg_rows(pipeline) == _source_rows(dsn)
    pipeline.source.close()
