"""The transfer ledger: records, cost per route, CDC commits, volume anomalies (median + k*MAD)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_dagster.audit import AuditLog, TransferIntegrityError
from hybrid_dagster.audit.transfers import (
    Transfer,
    TransferLedger,
    check_integrity,
    egress_cost_usd,
    record_cdc_commit,
    volume_anomalies,
)


def transfer(rows: int, *, target: str = "US", price: float | None = 0.09, sha: str = "a" * 64) -> Transfer:
    return Transfer(
        source_plane="eu-onprem",
        source_jurisdiction="EU",
        target_plane="us-cloud" if target == "US" else "uk-cloud",
        target_jurisdiction=target,
        classification="confidential",
        legal_basis="GDPR Art. 46(2)(c) SCCs",
        source_table="clinic.stats",
        target_table="copies.stats",
        rows=rows,
        bytes=rows * 100,
        source_sha256="a" * 64,
        target_sha256=sha,
        egress_usd_per_gb=price,
    )


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    return AuditLog(f"sqlite:///{tmp_path / 'audit.db'}")


def test_ledger_records_transfers_and_reports_cost_per_route(log: AuditLog) -> None:
    ledger = TransferLedger(log)
    ledger.record(transfer(10_000_000), actor="plane:us-cloud", run_id="r1")
    ledger.record(transfer(5_000_000), actor="plane:us-cloud", run_id="r2")
    ledger.record(transfer(1_000, target="UK", price=None), actor="plane:uk-cloud")
    [first, _, _] = ledger.transfers()
    assert first.details["route"] == "EU->US" and first.details["copied_verbatim"] is True
    assert first.details["cost_usd"] == pytest.approx(0.09)  # 1 GB at 0.09 USD/GB
    report = ledger.cost_by_route()
    assert report["EU->US"]["transfers"] == 2 and report["EU->US"]["bytes"] == 1_500_000_000
    assert report["EU->US"]["cost_usd"] == pytest.approx(0.135)
    assert report["EU->US"]["legal_bases"] == ["GDPR Art. 46(2)(c) SCCs"]
    assert report["EU->UK"]["cost_usd"] is None
    assert log.verify().ok


def test_egress_cost_uses_decimal_gigabytes() -> None:
    assert egress_cost_usd(2_000_000_000, 0.09) == pytest.approx(0.18)
    assert egress_cost_usd(10, None) is None


def test_integrity_check_names_both_hashes() -> None:
    check_integrity(expected_sha256="ab", staged_sha256="ab", what="copies.x")
    with pytest.raises(TransferIntegrityError, match=r"copies\.x: the rows staged for commit hash to cd"):
        check_integrity(expected_sha256="ab", staged_sha256="cd", what="copies.x")


def test_cdc_commits_record_both_hashes_and_a_mismatch_is_evidence(log: AuditLog) -> None:
    kwargs = {
        "plane": "eu-onprem",
        "table": "clinic.patients",
        "snapshot_id": 7,
        "source": "postgres://db:5432/clinic",
        "source_position": "0/16B3748",
        "rows": 10,
        "bytes": 800,
        "actor": "cdc:patients",
    }
    record = record_cdc_commit(log, source_sha256="a" * 64, target_sha256="a" * 64, **kwargs)  # type: ignore[arg-type]
    assert record.kind == "cdc.commit" and record.details["hashes_match"] is True
    with pytest.raises(TransferIntegrityError):
        record_cdc_commit(log, source_sha256="a" * 64, target_sha256="b" * 64, **kwargs)  # type: ignore[arg-type]
    assert [r.kind for r in log.records()] == ["cdc.commit", "transfer.mismatch"]


def test_volume_anomalies_use_the_routes_own_history(log: AuditLog) -> None:
    ledger = TransferLedger(log)
    for rows in [1000, 1100, 950, 1050, 1000, 40_000, 1020]:  # one outlier in the history
        ledger.record(transfer(rows), actor="plane:us-cloud")
    for rows in [50_000] * 6:  # another route moves a lot, steadily: not an anomaly
        ledger.record(transfer(rows, target="UK"), actor="plane:uk-cloud")
    ledger.record(transfer(3000), actor="plane:us-cloud")  # 3x the usual volume on EU->US
    anomalies = volume_anomalies(ledger.transfers())
    assert [(a.route, a.bytes) for a in anomalies] == [("EU->US", 4_000_000), ("EU->US", 300_000)]
    last = anomalies[-1]
    assert last.median == 102_000 and last.threshold < 300_000
