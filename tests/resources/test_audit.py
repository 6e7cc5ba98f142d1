"""AuditLogResource: appends from an asset land in the configured store, and the chain verifies."""

from pathlib import Path

import dagster as dg

from hybrid_dagster.audit import AuditLog
from hybrid_dagster.resources.audit import AuditLogResource


def test_resource_appends_from_an_asset(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"

    @dg.asset
    def cohort(context: dg.AssetExecutionContext, audit_log: AuditLogResource) -> None:
        audit_log.append(
            "residency.allowed",
            actor="dagster",
            plane="eu-onprem",
            run_id=context.run_id,
            details={"asset": "cohort"},
        )

    result = dg.materialize([cohort], resources={"audit_log": AuditLogResource(url=url)})
    assert result.success
    with AuditLog(url) as log:
        [record] = list(log.records())
        assert (record.kind, record.run_id, record.details) == (
            "residency.allowed",
            result.run_id,
            {"asset": "cohort"},
        )
        assert log.verify().ok
