"""Checkpoints of the audit chain in the Dagster event log, so that a truncated tail is detectable.

A hash chain proves that nothing inside it changed, but cutting records off its end leaves a shorter
chain that is still valid. So the chain head (``count``, ``head_hash``) is written periodically as asset
metadata (keys :data:`HEAD_KEY`, :data:`COUNT_KEY`) of the ``audit_checkpoint`` asset, a store the audit
log's writers do not control; verification then checks that the latest checkpoint's record still exists
and still has that hash.

Correctness rule: a checkpoint is written only after the chain verified against the previous checkpoint
(:func:`hybrid_dagster.assets.audit_checkpoint.audit_checkpoint_asset`), so a damaged chain is never
re-anchored.

Example:
    .. code-block:: python

        from hybrid_dagster.audit import AuditLog
        from hybrid_dagster.audit.checkpoint import latest_checkpoint

        checkpoint = latest_checkpoint(dg.DagsterInstance.get())
        print(AuditLog().verify(checkpoint=checkpoint).describe())
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from hybrid_dagster.audit.log import AuditLog

CHECKPOINT_ASSET_KEY = dg.AssetKey("audit_checkpoint")
"""Default key of the checkpoint asset."""

HEAD_KEY = "hybrid/audit_head"
COUNT_KEY = "hybrid/audit_count"
URL_KEY = "hybrid/audit_url"


def checkpoint_metadata(count: int, head_hash: str, log: AuditLog) -> dict[str, Any]:
    """Asset metadata recording a chain head (the URL with its password masked).

    Example:
        >>> checkpoint_metadata(*log.head(), log)[COUNT_KEY]
        IntMetadataValue(value=42)
    """
    return {
        HEAD_KEY: dg.MetadataValue.text(head_hash),
        COUNT_KEY: dg.MetadataValue.int(count),
        URL_KEY: dg.MetadataValue.text(log.safe_url),
    }


def latest_checkpoint(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey = CHECKPOINT_ASSET_KEY
) -> tuple[int, str] | None:
    """``(count, head_hash)`` of the latest checkpoint materialization, or None if there is none.

    Example:
        >>> latest_checkpoint(dg.DagsterInstance.get())
        (42, '9f2c...')
    """
    event = instance.get_latest_materialization_event(asset_key)
    materialization = event.asset_materialization if event is not None else None
    if materialization is None:
        return None
    metadata = materialization.metadata
    head, count = metadata.get(HEAD_KEY), metadata.get(COUNT_KEY)
    if not isinstance(head, dg.TextMetadataValue) or not isinstance(count, dg.IntMetadataValue):
        return None
    if head.value is None or count.value is None:
        return None
    return int(count.value), str(head.value)
