"""CDC batch commits in the audit log: one ``cdc.commit`` record per Iceberg commit, with both hashes.

Correctness rules:

- The pipeline calls :meth:`CdcAuditRecorder.committed` after each table commit and before it
  acknowledges the source (``CdcPipeline(on_commit=...)``): an acknowledged batch always has its
  record. A failure to record stops the run before the acknowledgement; the replay is a no-op in Iceberg
  (watermark) and records the commit only if it commits something new.
- The applier calls :meth:`CdcAuditRecorder.mismatched` when the staged rows do not hash to the batch
  (``IcebergApplier(on_mismatch=...)``) and then abandons the commit: a ``transfer.mismatch`` record is
  the evidence.
- A record names the plane, the table, the source physically (``postgres://host:port/db#slot``, no
  credentials), the position applied, the snapshot, counts, bytes and the two content hashes; when the
  table's rows come from another jurisdiction than the plane's, also the route and its legal basis.
- Without an audit store (no ``HYBRID_DAGSTER_AUDIT_URL`` nor ``DAGSTER_HOME``) hashes are still
  checked but nothing is recorded, and the warning says so.

Example:
    .. code-block:: python

        recorder = CdcAuditRecorder.open(plane="eu-onprem", jurisdiction="EU", source_id=source.source_id,
                                         run_id=None, warn=print)
        applier = IcebergApplier(catalog, source_id=source.source_id, on_mismatch=recorder.mismatched)
        pipeline = CdcPipeline(source, applier, mappings, on_commit=recorder.committed)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hybrid_dagster.audit.errors import AuditConfigError
from hybrid_dagster.audit.log import AuditLog, AuditRecord
from hybrid_dagster.audit.transfers import MISMATCH_KIND, record_cdc_commit, route_name
from hybrid_dagster.cdc.pipeline import TableMapping
from hybrid_dagster.cdc.sink.apply import ApplyResult
from hybrid_dagster.cdc.sink.integrity import BatchEvidence


@dataclass(frozen=True)
class InboundRoute:
    """Where a table's rows come from when that is not the plane's own jurisdiction."""

    source_jurisdiction: str
    legal_basis: str | None


@dataclass
class CdcAuditRecorder:
    """Records the commits of one CDC run in the audit log (see the module docstring)."""

    log: AuditLog | None
    plane: str
    jurisdiction: str
    source_id: str
    run_id: str | None = None
    actors: Mapping[str, str] = field(default_factory=dict)
    """Actor per Iceberg table (``cdc:<asset key>``); default ``cdc:<table>``."""
    routes: Mapping[str, InboundRoute] = field(default_factory=dict)
    """Per Iceberg table whose rows come from another jurisdiction: that jurisdiction and the legal basis."""
    records: list[AuditRecord] = field(default_factory=list)

    @classmethod
    def open(
        cls,
        *,
        plane: str,
        jurisdiction: str,
        source_id: str,
        run_id: str | None,
        warn: Callable[[str], None],
        actors: Mapping[str, str] | None = None,
        routes: Mapping[str, InboundRoute] | None = None,
        url: str | None = None,
    ) -> CdcAuditRecorder:
        """A recorder on the default audit store (``url`` or ``HYBRID_DAGSTER_AUDIT_URL`` or
        ``$DAGSTER_HOME``); without one, a recorder that records nothing (and ``warn`` says so)."""
        try:
            log: AuditLog | None = AuditLog(url)
        except AuditConfigError as missing:
            warn(f"CDC commits are hash-checked but not recorded: {missing}")
            log = None
        return cls(log, plane, jurisdiction, source_id, run_id, dict(actors or {}), dict(routes or {}))

    def close(self) -> None:
        if self.log is not None:
            self.log.close()

    def _actor(self, identifier: str) -> str:
        return self.actors.get(identifier, f"cdc:{identifier}")

    def _route(self, identifier: str) -> dict[str, Any]:
        route = self.routes.get(identifier)
        if route is None:
            return {}
        return {
            "source_jurisdiction": route.source_jurisdiction,
            "target_jurisdiction": self.jurisdiction,
            "legal_basis": route.legal_basis,
        }

    def committed(self, mapping: TableMapping, result: ApplyResult) -> None:
        """``CdcPipeline(on_commit=...)``: record the commit (kind ``cdc.commit``)."""
        if result.evidence is not None:
            self.chunk_committed(mapping, result.evidence, result.snapshot_id)

    def chunk_committed(
        self, mapping: TableMapping, evidence: BatchEvidence, snapshot_id: int | None
    ) -> None:
        """``CdcPipeline(on_copy_commit=...)``: record a snapshot chunk's commit (kind ``cdc.commit``)."""
        if self.log is None:
            return
        self.records.append(
            record_cdc_commit(
                self.log,
                plane=self.plane,
                table=mapping.identifier,
                snapshot_id=snapshot_id,
                source=self.source_id,
                source_position=evidence.position.encode(),
                rows=evidence.rows,
                bytes=evidence.bytes,
                source_sha256=evidence.source_sha256,
                target_sha256=evidence.target_sha256,
                actor=self._actor(mapping.identifier),
                run_id=self.run_id,
                **self._route(mapping.identifier),
            )
        )

    def mismatched(self, evidence: BatchEvidence) -> None:
        """``IcebergApplier(on_mismatch=...)``: record the abandoned commit (kind ``transfer.mismatch``)."""
        if self.log is None:
            return
        route = self._route(evidence.identifier)
        details: dict[str, Any] = {
            "plane": self.plane,
            "table": evidence.identifier,
            "snapshot_id": None,
            "source": self.source_id,
            "source_position": evidence.position.encode(),
            "rows": evidence.rows,
            "bytes": evidence.bytes,
            "source_sha256": evidence.source_sha256,
            "target_sha256": evidence.target_sha256,
            "hashes_match": False,
        }
        if route:
            details["route"] = route_name(route["source_jurisdiction"], route["target_jurisdiction"])
            details["legal_basis"] = route["legal_basis"]
        self.records.append(
            self.log.append(
                MISMATCH_KIND,
                actor=self._actor(evidence.identifier),
                plane=self.plane,
                run_id=self.run_id,
                details=details,
            )
        )
