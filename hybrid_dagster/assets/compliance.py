"""The ``compliance_report`` asset: an evidence pack (JSON + Markdown) over the Definitions and the audit log.

Correctness rules: the report is regenerated from the sources on each materialization
(:mod:`hybrid_dagster.assets.evidence_pack`); the audit chain is verified against the latest checkpoint in
the event log; the Markdown report is shown in the Dagster UI (``dg.MetadataValue.md``) and both files are
written to ``output_dir`` (default ``$DAGSTER_HOME/evidence``); the asset's own metadata holds only counts,
statuses and paths. A broken chain does not stop the report - it is the first thing the report says - but
the ``audit_chain_intact`` check fails.

Example:
    .. code-block:: python

        import dagster as dg
        from hybrid_dagster.assets.compliance import compliance_report_asset
        from hybrid_dagster.resources.audit import AuditLogResource

        report, intact = compliance_report_asset(lambda: defs)
        defs = dg.Definitions(
            assets=[..., report], asset_checks=[intact],
            resources={..., "audit_log": AuditLogResource()},
        )
"""

import json
import os
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from hybrid_dagster.assets.evidence_pack import build_evidence_pack, render_markdown
from hybrid_dagster.audit.checkpoint import CHECKPOINT_ASSET_KEY, latest_checkpoint
from hybrid_dagster.resources.audit import AuditLogResource, evidence_tags

REPORT_ASSET_KEY = dg.AssetKey("compliance_report")


def _output_dir(configured: str | None) -> Path:
    if configured:
        return Path(configured)
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise dg.Failure(description="compliance_report: set output_dir or DAGSTER_HOME to write the pack")
    return Path(home) / "evidence"


def compliance_report_asset(
    definitions: Callable[[], dg.Definitions],
    *,
    key: dg.AssetKey = REPORT_ASSET_KEY,
    resource_key: str = "audit_log",
    checkpoint_key: dg.AssetKey = CHECKPOINT_ASSET_KEY,
    output_dir: str | None = None,
    group_name: str = "evidence",
    plane: str | None = None,
    owners: list[str] | None = None,
) -> tuple[dg.AssetsDefinition, dg.AssetChecksDefinition]:
    """The report asset and its ``audit_chain_intact`` check.

    ``definitions`` returns the Definitions to report on (a callable, so the report can be part of them).

    Example:
        >>> report, intact = compliance_report_asset(lambda: defs, output_dir="/srv/evidence")
    """

    @dg.asset(
        key=key,
        group_name=group_name,
        kinds={"json", "markdown"},
        owners=owners,
        required_resource_keys={resource_key},
        tags=evidence_tags(plane),
        description="Evidence pack for SOC 2, HIPAA, GDPR and DORA from the asset graph and the audit log.",
    )
    def _report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        audit: AuditLogResource = getattr(context.resources, resource_key)
        log = audit.get_log()
        checkpoint = latest_checkpoint(context.instance, checkpoint_key)
        pack = build_evidence_pack(definitions(), log, checkpoint=checkpoint)
        markdown = render_markdown(pack)
        folder = _output_dir(output_dir) / context.run_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "evidence.json").write_text(json.dumps(pack, indent=2, sort_keys=True))
        (folder / "evidence.md").write_text(markdown)
        statuses = {c["id"]: c["status"] for c in pack["controls"]}
        return dg.MaterializeResult(
            metadata={
                "hybrid/report": dg.MetadataValue.md(markdown),
                "hybrid/controls": dg.MetadataValue.json(statuses),
                "hybrid/audit_ok": pack["audit"]["ok"],
                "hybrid/audit_count": pack["audit"]["count"],
                "hybrid/not_covered": len(pack["not_covered"]),
                "hybrid/evidence_json": dg.MetadataValue.path(str(folder / "evidence.json")),
                "hybrid/evidence_md": dg.MetadataValue.path(str(folder / "evidence.md")),
            }
        )

    @dg.asset_check(
        asset=key,
        name="audit_chain_intact",
        required_resource_keys={resource_key},
        description="The audit chain verifies, also against the latest checkpoint in the event log.",
    )
    def _intact(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        log = getattr(context.resources, resource_key).get_log()
        result = log.verify(checkpoint=latest_checkpoint(context.instance, checkpoint_key))
        return dg.AssetCheckResult(
            passed=result.ok,
            description=result.describe(),
            metadata={
                "hybrid/audit_count": result.count,
                "hybrid/first_broken_seq": result.first_broken_seq or 0,
            },
        )

    return _report, _intact
