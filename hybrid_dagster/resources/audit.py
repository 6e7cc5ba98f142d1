"""The audit log as a Dagster resource.

Correctness rule: the resource holds only the store's URL; records are written through
:class:`hybrid_dagster.audit.AuditLog`, which refuses values and secrets. A password in the URL is never
shown (:func:`hybrid_dagster.audit.safe_url`) - prefer ``dg.EnvVar`` for a production URL.

Example:
    .. code-block:: python

        import dagster as dg
        from hybrid_dagster.resources.audit import AuditLogResource

        defs = dg.Definitions(
            assets=[...],
            resources={"audit_log": AuditLogResource(url=dg.EnvVar("HYBRID_DAGSTER_AUDIT_URL"))},
        )
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg
from pydantic import Field, PrivateAttr

from hybrid_dagster.audit.canonical import JSON
from hybrid_dagster.audit.log import AuditLog, AuditRecord

EVIDENCE_TAG = "hybrid/evidence"
"""Tag marking the orchestrator-side evidence assets (checkpoint, ledger, report): metadata only, no rows."""


def evidence_tags(plane: str | None = None) -> dict[str, str]:
    """Tags of an evidence asset: classification ``internal``, the evidence marker, and ``plane`` if given.

    Evidence assets read only the audit log and the asset graph; pin them to a plane of the
    orchestrator's jurisdiction so that ``hybrid-dagster validate`` accepts them.

    Example:
        >>> evidence_tags("eu-onprem")["hybrid/plane"]
        'eu-onprem'
    """
    tags = {"hybrid/classification": "internal", EVIDENCE_TAG: "true"}
    if plane is not None:
        tags["hybrid/plane"] = plane
    return tags


class AuditLogResource(dg.ConfigurableResource):
    """Where the tamper-evident audit log lives; ``get_log()`` opens it.

    Example:
        .. code-block:: python

            @dg.asset
            def cohort(audit_log: AuditLogResource) -> None:
                audit_log.append("residency.allowed", actor="dagster", details={"asset": "cohort"})
    """

    url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the audit store (sqlite:///path or postgresql://...). Default: "
            "HYBRID_DAGSTER_AUDIT_URL, else $DAGSTER_HOME/hybrid_audit.db."
        ),
    )
    _log: AuditLog | None = PrivateAttr(default=None)

    def get_log(self) -> AuditLog:
        """The opened log (one per resource instance).

        Example:
            >>> AuditLogResource(url="sqlite:////tmp/a.db").get_log().verify().ok
            True
        """
        if self._log is None:
            self._log = AuditLog(self.url)
        return self._log

    def append(
        self,
        kind: str,
        *,
        actor: str,
        plane: str | None = None,
        run_id: str | None = None,
        details: Mapping[str, JSON] | None = None,
    ) -> AuditRecord:
        """Append a record (see :meth:`hybrid_dagster.audit.AuditLog.append`)."""
        return self.get_log().append(kind, actor=actor, plane=plane, run_id=run_id, details=details)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
