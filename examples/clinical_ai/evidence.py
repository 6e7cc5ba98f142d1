"""Meridian Health's evidence: audit checkpoint, transfer ledger with its monitor, compliance report.

These assets read only the audit log and the asset graph (metadata), so they are pinned to the EU
on-prem plane where the orchestrator's own records live. Merge them into the example's Definitions with
``dg.Definitions.merge(defs, evidence_definitions(lambda: defs))``.
"""

from collections.abc import Callable
from pathlib import Path

import dagster as dg

from examples.clinical_ai.planes import PLANES, POLICY
from hybrid_dagster.assets.audit_checkpoint import audit_checkpoint_asset, audit_checkpoint_schedule
from hybrid_dagster.assets.compliance import compliance_report_asset
from hybrid_dagster.assets.transfer_monitor import transfer_monitor
from hybrid_dagster.resources.audit import AuditLogResource

EVIDENCE_PLANE = "eu-onprem"


def evidence_definitions(
    clinical: Callable[[], dg.Definitions], output_dir: Path | None = None
) -> dg.Definitions:
    """The evidence assets and checks over the Definitions ``clinical`` returns."""
    checkpoint = audit_checkpoint_asset(plane=EVIDENCE_PLANE)
    ledger, *monitor = transfer_monitor(plane=EVIDENCE_PLANE)
    report, intact = compliance_report_asset(
        clinical,
        plane=EVIDENCE_PLANE,
        owners=["team:compliance"],
        output_dir=str(output_dir) if output_dir else None,
    )
    return dg.Definitions(
        assets=[checkpoint, ledger, report],
        asset_checks=[*monitor, intact],  # type: ignore[list-item]
        schedules=[audit_checkpoint_schedule(checkpoint)],
        resources={
            **{plane.name.replace("-", "_"): plane for plane in PLANES},
            "residency_policy": POLICY,
            "audit_log": AuditLogResource(),
        },
    )
