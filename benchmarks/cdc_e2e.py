"""End-to-end CDC throughput: PostgreSQL commit -> logical decoding -> Iceberg commit.

300,000 changes (200k inserts, 70k updates, 30k deletes in 10k-row transactions) are committed first;
then the clock runs while the pipeline drains the slot into Iceberg. Prints one JSON object.

    python benchmarks/cdc_e2e.py [--changes 300000] [--decoder pgoutput|wal2json|both]
    python -m benchmarks.cdc_e2e --help
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as `python benchmarks/NAME.py`: import this checkout's packages, as `-m` does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg2

from hybrid_dagster.cdc.pipeline import CdcPipeline, TableMapping
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


def _workload(dsn: str, changes: int, tx_rows: int = 10_000) -> None:
    inserts, updates = int(changes * 2 / 3), int(changes * 7 / 30)
    deletes = changes - inserts - updates
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
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
        cur.execute("DELETE FROM bench_events WHERE id > %s", (inserts - deletes,))
        conn.commit()
    conn.close()


def measure(
    server: PostgresServer, decoder: str, changes: int, workdir: Path, batch_events: int = 100_000
) -> dict[str, float]:
    admin = psycopg2.connect(server.dsn)
    admin.autocommit = True
    database = f"bench_{decoder}"
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {database}")
    admin.close()
    dsn = server.dsn_for(database)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(DDL)
    conn.close()

    plane = DataPlane(
        name="bench",
        jurisdiction="EU",
        region="local",
        location="on_prem",
        warehouse=f"file://{workdir / decoder}",
    )
    source = PostgresChangeSource(dsn, [SourceTable(TABLE)], slot_name=f"bench_{decoder}", decoder=decoder)  # type: ignore[arg-type]
    applier = IcebergApplier(plane.load_catalog(), source_id=source.source_id)
    pipeline = CdcPipeline(source, applier, [TableMapping(TABLE, "bench.events")], batch_events=batch_events)
    pipeline.run()  # creates slot and publication; the table is still empty
    _workload(dsn, changes)

    started = time.perf_counter()
    report = pipeline.run()
    elapsed = time.perf_counter() - started
    source.close()
    applied = report.events_applied
    rows = plane.load_catalog().load_table("bench.events").scan().to_arrow().num_rows
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM bench_events")
        expected = cur.fetchone()[0]  # type: ignore[index]
    conn.close()
    return {
        "events": applied,
        "seconds": round(elapsed, 3),
        "events_per_s": round(applied / elapsed, 1),
        "rows_match": rows == expected,
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--changes",
        type=int,
        default=300_000,
        help="changes committed before the clock starts (default 300000)",
    )
    parser.add_argument(
        "--decoder",
        choices=["pgoutput", "wal2json", "both"],
        default="both",
        help="logical decoding plugin; wal2json needs Debian's PostgreSQL 15 and is skipped without it",
    )
    parser.add_argument(
        "--batch-events",
        type=int,
        default=100_000,
        help="events per read; each peek re-decodes WAL from the slot's restart_lsn, so larger is faster",
    )
    args = parser.parse_args(argv)
    out: dict[str, object] = {"changes": args.changes, "batch_events": args.batch_events}
    with tempfile.TemporaryDirectory(prefix="hd-e2e-") as tmp:
        workdir = Path(tmp)
        if args.decoder in ("pgoutput", "both"):
            print("e2e: pgoutput on embedded PostgreSQL", file=sys.stderr)
            server = start_embedded_postgres(workdir / "pg")
            try:
                out["pgoutput"] = measure(server, "pgoutput", args.changes, workdir, args.batch_events)
            finally:
                server.stop()
        if args.decoder in ("wal2json", "both"):
            try:
                debian = start_debian_postgres(workdir / "pg15")
            except Exception as exc:  # reported, not fatal: wal2json is optional here
                out["wal2json"] = {"skipped": str(exc)}
            else:
                print("e2e: wal2json on Debian PostgreSQL 15", file=sys.stderr)
                try:
                    out["wal2json"] = measure(debian, "wal2json", args.changes, workdir, args.batch_events)
                finally:
                    debian.stop()
    pg = out.get("pgoutput")
    out["e2e_events_per_s"] = pg["events_per_s"] if isinstance(pg, dict) else None
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
