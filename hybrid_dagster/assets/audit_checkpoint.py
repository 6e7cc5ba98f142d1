"""The ``audit_checkpoint`` asset: verify the audit chain, then anchor its head in the event log.

Correctness rules: each materialization first verifies the whole chain against the previous checkpoint
(so a truncated tail or an edited record fails the run and is never re-anchored), then records the new
``(count, head_hash)`` as metadata (``hybrid/audit_count``, ``hybrid/audit_head``). Schedule it
(:func:`audit_checkpoint_schedule`) so the gap between checkpoints stays short.

Example:
    .. code-block:: python

        import dagster as dg
        from hybrid_dagster.assets.audit_checkpoint import audit_checkpoint_asset, audit_checkpoint_schedule
        from hybrid_dagster.resources.audit import AuditLogResource

        checkpoint = audit_checkpoint_asset()
        defs = dg.Definitions(
            assets=[checkpoint],
            schedules=[audit_checkpoint_schedule(checkpoint)],
            resources={"audit_log": AuditLogResource()},
        )
"""

import dagster as dg

from hybrid_dagster.audit.checkpoint import CHECKPOINT_ASSET_KEY, checkpoint_metadata, latest_checkpoint
from hybrid_dagster.resources.audit import AuditLogResource, evidence_tags


def audit_checkpoint_asset(
    key: dg.AssetKey = CHECKPOINT_ASSET_KEY,
    *,
    resource_key: str = "audit_log",
    group_name: str = "evidence",
    plane: str | None = None,
) -> dg.AssetsDefinition:
    """An asset that verifies the chain against the last checkpoint and records the new head.

    Example:
        >>> dg.materialize([audit_checkpoint_asset()], resources={"audit_log": AuditLogResource()})
    """

    @dg.asset(
        key=key,
        group_name=group_name,
        kinds={"sql"},
        required_resource_keys={resource_key},
        tags=evidence_tags(plane),
        description="Head (count, hash) of the tamper-evident audit chain, verified before it is recorded.",
    )
    def _checkpoint(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        resource: AuditLogResource = getattr(context.resources, resource_key)
        log = resource.get_log()
        previous = latest_checkpoint(context.instance, key)
        result = log.verify(checkpoint=previous)
        if not result.ok:
            raise dg.Failure(
                description=f"{result.describe()} (store {log.safe_url})",
                metadata={"hybrid/audit_first_broken_seq": result.first_broken_seq or 0},
            )
        return dg.MaterializeResult(metadata=checkpoint_metadata(result.count, result.head_hash, log))

    return _checkpoint


def audit_checkpoint_schedule(
    asset: dg.AssetsDefinition, cron_schedule: str = "*/15 * * * *"
) -> dg.ScheduleDefinition:
    """A schedule materializing the checkpoint asset (every 15 minutes by default).

    Example:
        >>> audit_checkpoint_schedule(audit_checkpoint_asset(), "0 * * * *").cron_schedule
        '0 * * * *'
    """
    return dg.ScheduleDefinition(
        name="audit_checkpoint_schedule",
        target=dg.AssetSelection.assets(asset),
        cron_schedule=cron_schedule,
    )
