"""CDC batch commits in the audit log: a real PostgreSQL run records every commit with its two hashes,
the chain verifies, and a staged batch that does not hash to the decoded one is never committed."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from examples.clinical_ai.hospital_db import HospitalDb
from hybrid_dagster.audit import AuditLog, TransferIntegrityError
from hybrid_dagster.cdc.sink import rewrite as rewrite_module
from hybrid_dagster.cdc.worker import run_job
from hybrid_dagster.resources.data_plane import DataPlane
from tests.cdc.cdc_harness import (
    assert_equal_to_source,
    job_spec,
    plane_at,
    slot_confirmed_lsn,
    table_watermarks,
)
from tests.fixtures.postgres import PgDatabase

HEX = set("0123456789abcdef")


def _hospital(
    pg_db: PgDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, seed: int, patients: int
) -> tuple[str, HospitalDb, DataPlane]:
    """The audit log's URL (set for the CDC work), the populated hospital database and the EU plane."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("HYBRID_DAGSTER_AUDIT_URL", url)
    db = HospitalDb(pg_db.dsn, seed=seed)
    db.create()
    db.populate(patients=patients)
    return url, db, plane_at(tmp_path / "warehouse")


def _commits(url: str) -> list[dict]:
    with AuditLog(url) as log:
        return [{"actor": r.actor, "plane": r.plane, **r.details} for r in log.records(kind="cdc.commit")]


def test_every_batch_commit_is_recorded_with_both_hashes_and_the_chain_verifies(
    pg_db: PgDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, db, plane = _hospital(pg_db, tmp_path, monkeypatch, seed=7, patients=8)
    spec = job_spec(pg_db.dsn, "pgoutput", slot="audit_cdc", batch_events=120)

    _, facts = run_job(spec, plane)  # the initial copy: one commit per table
    db.run_workload(transactions=25)
    report, facts2 = run_job(spec, plane)  # streamed in batches of 120 events
    assert report.batches > 1 and report.events_applied > 0

    commits = _commits(url)
    expected = sum(f["commits"] for f in facts.values()) + sum(f["commits"] for f in facts2.values())
    assert len(commits) == expected > 4
    for c in commits:
        assert c["hashes_match"] is True
        assert c["source_sha256"] == c["target_sha256"] and set(c["source_sha256"]) <= HEX
        assert len(c["source_sha256"]) == 64
        assert c["source"].startswith("postgres://") and "@" not in c["source"]
        assert c["plane"] == "eu-onprem" and c["actor"].startswith("cdc:clinical/")
        assert c["snapshot_id"] is not None and c["rows"] > 0 and c["bytes"] > 0
    # the last record of each table names the position its table is at
    last = {c["table"]: c["source_position"] for c in commits}
    assert last == {k: v.encode() for k, v in table_watermarks(plane).items() if v is not None}
    with AuditLog(url) as log:
        assert log.verify().ok

    replay, _ = run_job(spec, plane)  # nothing new: no commit, no record
    assert replay.events_applied == 0 and len(_commits(url)) == len(commits)


def test_a_staged_batch_that_does_not_hash_to_the_decoded_batch_is_never_committed(
    pg_db: PgDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, db, plane = _hospital(pg_db, tmp_path, monkeypatch, seed=11, patients=10)
    spec = job_spec(pg_db.dsn, "pgoutput", slot="audit_bad", batch_events=10_000)
    run_job(spec, plane)
    db.run_workload(transactions=30)
    before_lsn = slot_confirmed_lsn(pg_db.dsn, "audit_bad")
    before = table_watermarks(plane)
    records_before = len(_commits(url))

    write = rewrite_module.write_data_files

    def lossy_writer(metadata, io, parts: list[pa.Table], target: int):  # type: ignore[no-untyped-def]
        # a writer that loses the last row of what it is handed: the files are real, the loss is real
        return write(metadata, io, [p.slice(0, p.num_rows - 1) for p in parts], target)

    monkeypatch.setattr(rewrite_module, "write_data_files", lossy_writer)
    with pytest.raises(TransferIntegrityError, match=r"commit was abandoned"):
        run_job(spec, plane)
    assert table_watermarks(plane) == before  # no commit
    assert slot_confirmed_lsn(pg_db.dsn, "audit_bad") == before_lsn  # not acknowledged
    with AuditLog(url) as log:
        mismatches = list(log.records(kind="transfer.mismatch"))
        assert log.verify().ok
    assert len(mismatches) == 1 and mismatches[0].details["hashes_match"] is False
    assert len(_commits(url)) == records_before

    monkeypatch.setattr(rewrite_module, "write_data_files", write)
    run_job(spec, plane)  # the same changes apply once the writer is sound
    assert_equal_to_source(pg_db.dsn, plane)
    assert len(_commits(url)) > records_before
