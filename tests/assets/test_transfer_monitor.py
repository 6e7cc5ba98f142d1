"""The transfer monitor's asset checks over a real audit log: routes, volume anomalies, integrity."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from hybrid_dagster.assets.transfer_monitor import transfer_monitor
from hybrid_dagster.audit import AuditLog
from hybrid_dagster.audit.transfers import Transfer, TransferLedger
from hybrid_dagster.residency import ResidencyPolicy, TransferRoute
from hybrid_dagster.resources.audit import AuditLogResource

ROUTE = TransferRoute(
    source="EU",
    target="US",
    legal_basis="GDPR Art. 46 SCCs",
    classifications=["confidential"],
    egress_usd_per_gb=0.09,
)


def move(rows: int, classification: str = "confidential", target: str = "US") -> Transfer:
    return Transfer(
        source_plane="eu-onprem",
        source_jurisdiction="EU",
        target_plane=f"{target.lower()}-cloud",
        target_jurisdiction=target,
        classification=classification,
        legal_basis="GDPR Art. 46 SCCs" if target == "US" else None,
        source_table="clinic.stats",
        target_table="copies.stats",
        rows=rows,
        bytes=rows * 100,
        source_sha256="a" * 64,
        target_sha256="a" * 64,
        egress_usd_per_gb=0.09 if target == "US" else None,
    )


def run(url: str) -> dict[str, dg.AssetCheckEvaluation]:
    ledger, *checks = transfer_monitor()
    result = dg.materialize(
        [ledger, *checks],
        resources={
            "audit_log": AuditLogResource(url=url),
            "residency_policy": ResidencyPolicy(routes=[ROUTE]),
        },
    )
    assert result.success
    [materialization] = result.asset_materializations_for_node("transfer_ledger")
    assert materialization.metadata["hybrid/transfers"].value == len(
        list(AuditLog(url).records(kind="transfer"))
    )
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_a_quiet_ledger_passes_every_check(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    ledger = TransferLedger(AuditLog(url))
    for rows in [1000, 1010, 990, 1005, 1000, 995]:
        ledger.record(move(rows), actor="plane:us-cloud")
    ledger.record(move(5, "internal", target="UK"), actor="plane:uk-cloud")  # internal data moves freely
    checks = run(url)
    assert {name: e.passed for name, e in checks.items()} == {
        "transfers_on_declared_routes": True,
        "transfer_volume_normal": True,
        "transfer_integrity": True,
    }


def test_failures_carry_their_evidence(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    log = AuditLog(url)
    ledger = TransferLedger(log)
    for rows in [1000, 1010, 990, 1005, 1000, 995]:
        ledger.record(move(rows), actor="plane:us-cloud")
    spike = ledger.record(move(9000), actor="plane:us-cloud")
    unlawful = ledger.record(
        move(10, "restricted"), actor="plane:us-cloud"
    )  # the route covers confidential only
    ledger.record_mismatch(move(10), actor="plane:us-cloud")
    checks = run(url)

    routes = checks["transfers_on_declared_routes"]
    assert not routes.passed and routes.severity == dg.AssetCheckSeverity.ERROR
    [violation] = routes.metadata["hybrid/violations"].value  # type: ignore[attr-defined]
    assert (violation["seq"], violation["route"], violation["classification"]) == (
        unlawful.seq,
        "EU->US",
        "restricted",
    )

    volume = checks["transfer_volume_normal"]
    assert not volume.passed and volume.severity == dg.AssetCheckSeverity.WARN
    [anomaly] = volume.metadata["hybrid/anomalies"].value  # type: ignore[attr-defined]
    assert (anomaly["seq"], anomaly["route"], anomaly["bytes"], anomaly["median"]) == (
        spike.seq,
        "EU->US",
        900_000,
        100_000,
    )
    assert anomaly["threshold"] < 900_000

    integrity = checks["transfer_integrity"]
    assert not integrity.passed
    assert integrity.metadata["hybrid/mismatches"].value[0]["target_table"] == "copies.stats"  # type: ignore[attr-defined]
