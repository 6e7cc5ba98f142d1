"""The audit chain on SQLite and PostgreSQL: appends, refusals, tamper detection, concurrent writers."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from hybrid_dagster.audit import GENESIS_HASH, AuditInputError, AuditLog
from hybrid_dagster.audit.canonical import canonical_json, record_hash
from hybrid_dagster.audit.log import records_table
from tests.conftest import REPO_ROOT

WORKER = Path(__file__).parent / "append_worker.py"


def filled(url: str, n: int = 6) -> AuditLog:
    log = AuditLog(url)
    for i in range(n):
        log.append(
            "transfer" if i % 2 else "residency.allowed",
            actor="tester",
            plane="eu-onprem",
            run_id="run-1",
            details={"i": i, "table": f"t{i}"},
        )
    return log


def test_append_links_records_into_one_chain(audit_url: str) -> None:
    log = filled(audit_url)
    records = list(log.records())
    assert [r.seq for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(records):
        assert after.prev_hash == before.hash
        assert after.hash == record_hash(after.body())
    assert [r.details["i"] for r in log.records(kind="transfer")] == [1, 3, 5]
    assert log.head() == (6, records[-1].hash)
    result = log.verify()
    assert (result.ok, result.count, result.head_hash, result.first_broken_seq) == (
        True,
        6,
        records[-1].hash,
        None,
    )
    log.close()


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": [1, 2.5], "a": "ü"}) == '{"a":"ü","b":[1,2.5]}'.encode()


@pytest.mark.parametrize(
    "details",
    [
        {"payload": b"raw bytes"},
        {"password": "hunter2"},
        {"nested": {"token": "abc"}},
        {1: "non-str key"},
        {"ratio": float("nan")},
        {"obj": object()},
        {"blob": "x" * 5000},
    ],
)
def test_append_refuses_what_is_not_plain_metadata(tmp_path: Path, details: dict) -> None:
    log = AuditLog(f"sqlite:///{tmp_path / 'a.db'}")
    with pytest.raises(AuditInputError) as refused:
        log.append("secret.read", actor="tester", details=details)
    assert "hunter2" not in str(refused.value) and "abc" not in str(refused.value)
    assert log.head()[0] == 0


@pytest.mark.parametrize("kind", ["", "Upper", "with space", "1digit"])
def test_append_refuses_bad_kinds_and_actors(tmp_path: Path, kind: str) -> None:
    log = AuditLog(f"sqlite:///{tmp_path / 'a.db'}")
    with pytest.raises(AuditInputError):
        log.append(kind, actor="tester")
    with pytest.raises(AuditInputError):
        log.append("ok", actor="")


def tamper(url: str, *statements: tuple[str, dict]) -> None:
    with AuditLog(url) as log, log.engine.begin() as conn:
        for statement, params in statements:
            conn.execute(sa.text(statement), params)


def test_an_edited_record_is_detected(audit_url: str) -> None:
    log = filled(audit_url)
    tamper(audit_url, ("UPDATE hybrid_audit_records SET details = :d WHERE seq = 3", {"d": '{"i":99}'}))
    result = log.verify()
    assert (result.ok, result.first_broken_seq, result.count) == (False, 3, 2)
    assert "hash does not match" in result.reason


def test_an_edited_record_with_a_recomputed_hash_breaks_the_next_link(audit_url: str) -> None:
    log = filled(audit_url)
    third = next(r for r in log.records() if r.seq == 3)
    body = {**third.body(), "details": {"i": 99, "table": "t2"}}
    tamper(
        audit_url,
        (
            "UPDATE hybrid_audit_records SET details = :d, hash = :h WHERE seq = 3",
            {"d": canonical_json(body["details"]).decode(), "h": record_hash(body)},
        ),
    )
    result = log.verify()
    assert (result.ok, result.first_broken_seq) == (False, 4)
    assert "prev_hash" in result.reason


def test_a_deleted_record_is_detected(audit_url: str) -> None:
    log = filled(audit_url)
    tamper(audit_url, ("DELETE FROM hybrid_audit_records WHERE seq = 4", {}))
    result = log.verify()
    assert (result.ok, result.first_broken_seq) == (False, 4)
    assert "missing" in result.reason


def test_a_deleted_and_renumbered_record_is_detected(audit_url: str) -> None:
    log = filled(audit_url)
    tamper(
        audit_url,
        ("DELETE FROM hybrid_audit_records WHERE seq = 4", {}),
        ("UPDATE hybrid_audit_records SET seq = seq - 1 WHERE seq > 4", {}),
    )
    result = log.verify()
    assert (result.ok, result.first_broken_seq) == (False, 4)


def test_an_inserted_record_is_detected(audit_url: str) -> None:
    log = filled(audit_url)
    second = next(r for r in log.records() if r.seq == 2)
    forged = {
        **second.body(),
        "seq": 3,
        "kind": "transfer",
        "details": {"i": 100},
        "prev_hash": second.hash,
    }
    row = {**forged, "details": canonical_json(forged["details"]).decode(), "hash": record_hash(forged)}
    tamper(audit_url, ("UPDATE hybrid_audit_records SET seq = seq + 1000 WHERE seq > 2", {}))
    tamper(audit_url, ("UPDATE hybrid_audit_records SET seq = seq - 999 WHERE seq > 1000", {}))
    with log.engine.begin() as conn:
        conn.execute(records_table.insert().values(**row))
    result = log.verify()
    # The forged record itself is well formed; the chain breaks at the record after it.
    assert (result.ok, result.first_broken_seq) == (False, 4)
    assert "prev_hash" in result.reason


def test_reordered_records_are_detected(audit_url: str) -> None:
    log = filled(audit_url)
    tamper(
        audit_url,
        ("UPDATE hybrid_audit_records SET seq = 100 WHERE seq = 2", {}),
        ("UPDATE hybrid_audit_records SET seq = 2 WHERE seq = 5", {}),
        ("UPDATE hybrid_audit_records SET seq = 5 WHERE seq = 100", {}),
    )
    result = log.verify()
    assert (result.ok, result.first_broken_seq) == (False, 2)


def test_a_truncated_tail_is_detected_against_a_checkpoint(audit_url: str) -> None:
    log = filled(audit_url)
    checkpoint = log.head()
    assert log.verify(checkpoint=checkpoint).ok
    tamper(audit_url, ("DELETE FROM hybrid_audit_records WHERE seq > 4", {}))
    assert log.verify().ok  # a shorter chain is still a valid chain ...
    result = log.verify(checkpoint=checkpoint)  # ... but not the one the checkpoint saw
    assert (result.ok, result.first_broken_seq) == (False, 5)
    assert "truncated" in result.reason


def test_a_rewritten_chain_is_detected_against_a_checkpoint(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    log = filled(url, 3)
    checkpoint = log.head()
    tamper(url, ("DELETE FROM hybrid_audit_records", {}))
    for i in range(4):
        log.append("transfer", actor="forger", details={"i": i})
    result = log.verify(checkpoint=checkpoint)
    assert (result.ok, result.first_broken_seq) == (False, 3)


def test_two_processes_appending_at_once_give_one_chain(audit_url: str, tmp_path: Path) -> None:
    AuditLog(audit_url).close()  # create the schema once, like a deployment would
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    n = 300
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{w}" for w in range(2)]
    first = [tmp_path / f"first-{w}" for w in range(2)]
    workers = [
        subprocess.Popen(
            [
                *(sys.executable, str(WORKER), audit_url, str(n), f"writer-{w}", str(ready[w]), str(go)),
                *(str(first[w]), str(first[1 - w])),
            ],
            env=env,
        )
        for w in range(2)
    ]
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.02)
    go.touch()
    assert [w.wait(timeout=240) for w in workers] == [0, 0]
    log = AuditLog(audit_url)
    result = log.verify()
    assert result.ok, result.describe()
    assert result.count == 2 * n
    actors = [r.actor for r in log.records()]
    assert actors.count("writer-0") == n and actors.count("writer-1") == n
    # Both writers really interleaved (each waits for the other's first record before the rest).
    switches = sum(1 for a, b in itertools.pairwise(actors) if a != b)
    assert switches > 1


def test_default_store_lives_in_dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYBRID_DAGSTER_AUDIT_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with AuditLog() as log:
        log.append("test", actor="me")
    assert (tmp_path / "hybrid_audit.db").exists()
    monkeypatch.delenv("DAGSTER_HOME")
    from hybrid_dagster.audit import AuditConfigError

    with pytest.raises(AuditConfigError, match="DAGSTER_HOME"):
        AuditLog()


def test_safe_url_masks_the_password() -> None:
    from hybrid_dagster.audit import safe_url

    assert "s3cret" not in safe_url("postgresql://audit:s3cret@db:5432/audit")


def test_a_writer_killed_at_random_points_leaves_a_valid_chain(audit_url: str, tmp_path: Path) -> None:
    AuditLog(audit_url).close()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    go = tmp_path / "go"
    go.touch()
    rng = random.Random(20261202)
    with AuditLog(audit_url) as log:
        for round_ in range(2):
            ready = tmp_path / f"ready-{round_}"
            writer = subprocess.Popen(
                [sys.executable, str(WORKER), audit_url, "100000", f"victim-{round_}", str(ready), str(go)],
                env=env,
            )
            deadline = time.monotonic() + 120
            while not ready.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            before = log.head()[0]
            time.sleep(rng.uniform(0.2, 1.0))
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=30)
            result = log.verify()
            assert result.ok, result.describe()
            assert result.count > before  # it was killed while appending, not before
            log.append("test.after_kill", actor="survivor")  # the chain goes on
        assert log.verify().ok
