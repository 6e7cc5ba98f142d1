"""PostgreSQL -> Iceberg end to end: equivalence on a random workload and crash safety under SIGKILL."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2
import pytest

from examples.clinical_ai.hospital_db import HospitalDb
from hybrid_dagster.cdc.worker import run_job
from tests.cdc.cdc_harness import (
    KEYS,
    assert_equal_to_source,
    changelog_positions,
    duplicate_keys,
    job_spec,
    plane_at,
    slot_confirmed_lsn,
    table_watermarks,
    write_job_files,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_random_workload_streams_into_equal_iceberg_tables(pg_decoder_db, tmp_path: Path) -> None:
    dsn, decoder = pg_decoder_db
    db = HospitalDb(dsn, seed=42)
    db.create()
    db.populate(patients=40)
    plane = plane_at(tmp_path / "warehouse")
    spec = job_spec(dsn, decoder, slot=f"eq_{decoder}", batch_events=500)

    report, facts = run_job(spec, plane)  # initial snapshot, then stream
    assert facts["clinical.patients"]["snapshot_rows"] == 40
    assert_equal_to_source(dsn, plane)

    db.run_workload(transactions=300)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:  # NULLs, unicode, large text
        cur.execute("UPDATE encounters SET notes = NULL WHERE encounter_id % 7 = 0")
        cur.execute(
            "UPDATE encounters SET notes = repeat('Ünïcødé ✓ 診療 ', 2000) WHERE encounter_id % 11 = 0"
        )
        cur.execute(
            "UPDATE encounters SET ward = 'icu' WHERE encounter_id % 11 = 0"
        )  # TOASTed notes unchanged
    conn.close()
    report, facts = run_job(spec, plane)
    assert report.events_applied > 300
    assert_equal_to_source(dsn, plane)
    assert all(f["duplicate_keys"] == 0 for f in facts.values())
    assert facts["clinical.lab_results"]["deleted"] > 0

    replay, _ = run_job(spec, plane)  # nothing new: a no-op
    assert replay.events_applied == 0
    assert_equal_to_source(dsn, plane)


def _lsn_after_commit(cur: psycopg2.extensions.cursor) -> int:
    cur.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.slow
def test_sigkill_at_random_points_loses_and_duplicates_nothing(pg_decoder_db, tmp_path: Path) -> None:
    dsn, decoder = pg_decoder_db
    db = HospitalDb(dsn, seed=9)
    db.create()
    db.populate(patients=60)
    plane = plane_at(tmp_path / "warehouse")
    spec = job_spec(dsn, decoder, slot="crash", batch_events=150)
    spec_path, plane_path = write_job_files(tmp_path, spec, plane)
    run_job(spec, plane)  # the slot and the snapshot exist before the crashes start

    # Record the end LSN of every workload transaction, to check the slot against the tables.
    tx_ends: list[int] = []
    conn = psycopg2.connect(dsn)
    for _ in range(600):
        with conn.cursor() as cur:
            for _ in range(random.Random(len(tx_ends)).randint(1, 5)):
                db._random_op(cur)
        conn.commit()
        with conn.cursor() as cur:
            tx_ends.append(_lsn_after_commit(cur))
    conn.close()

    rng = random.Random(20261130)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    argv = [
        sys.executable,
        "-m",
        "hybrid_dagster.cdc.worker",
        "--spec",
        str(spec_path),
        "--plane",
        str(plane_path),
    ]
    kills = 0
    progress: set[tuple] = set()
    for _ in range(40):
        worker = subprocess.Popen(
            argv, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        # Kill at a random point once batches are being applied (start-up time varies with load):
        # after a random number of applied batches, a random moment into the next one.
        if not _wait_for_applied_batches(worker, rng.randint(0, 2), timeout_s=120):
            assert worker.wait() == 0, "".join(worker.stderr or [])
            break
        time.sleep(rng.uniform(0.0, 0.6))
        if worker.poll() is not None:
            assert worker.returncode == 0
            break
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        kills += 1
        _check_slot_not_ahead(dsn, plane, tx_ends)
        progress.add(tuple(sorted(str(w) for w in table_watermarks(plane).values())))
        for identifier_table, key in KEYS.items():
            identifier = f"clinical.{identifier_table.split('.')[1]}"
            if plane.load_catalog().table_exists(identifier):
                assert duplicate_keys(plane, identifier, key) == 0
        if kills >= 6:
            break
    assert kills >= 5, "the worker finished before it could be killed 5 times; enlarge the workload"
    assert len(progress) >= 4, "kills should land while batches are being applied, not only at start-up"

    finished = subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, timeout=300)
    assert finished.returncode == 0, finished.stderr.decode()
    _check_slot_not_ahead(dsn, plane, tx_ends)
    assert_equal_to_source(dsn, plane)
    # The raw change log got every streamed change exactly once, up to each table's watermark.
    for identifier, watermark in table_watermarks(plane).items():
        logged = changelog_positions(plane, identifier)
        assert len(logged) == len(set(logged)), f"{identifier}: the change log repeats changes after crashes"
        assert watermark is not None and max(logged) == (watermark.commit, watermark.event)


def _wait_for_applied_batches(worker: subprocess.Popen, batches: int, *, timeout_s: float) -> bool:
    """Wait until the worker logged ``batches`` + 1 applied batches; False if it exited first."""
    seen: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert worker.stderr is not None
        for line in worker.stderr:
            if "watermark" in line:
                seen.append(line)
                if len(seen) > batches:
                    done.set()
        done.set()  # end of stream: the worker exited

    threading.Thread(target=read, daemon=True).start()
    done.wait(timeout_s)
    return len(seen) > batches and worker.poll() is None


def _check_slot_not_ahead(dsn: str, plane, tx_ends: list[int]) -> None:  # type: ignore[no-untyped-def]
    confirmed = slot_confirmed_lsn(dsn, "crash")
    watermarks = [w for w in table_watermarks(plane).values() if w is not None]
    assert confirmed is not None and watermarks
    newest_applied = max(w.event for w in watermarks)
    # tx_ends[k] ends the workload transaction holding the newest applied change; the slot may be
    # acknowledged up to it, and past transactions without captured changes (e.g. autovacuum's, which
    # wal2json reports as empty transactions), but never up to the end of the next workload transaction,
    # which no table has applied yet.
    later = sorted(end for end in tx_ends if end > newest_applied)
    if len(later) >= 2:
        assert confirmed < later[1], f"slot acknowledged {confirmed} beyond applied data (bound {later[1]})"
