"""Inside a plane: content hashes of what crosses jurisdictions, checked before commit and recorded.

Correctness rules:

- A read from a plane of another jurisdiction is hashed as read (:func:`content_sha256`) and remembered.
- A write hashes the rows handed over, stages the Iceberg commit, hashes the rows read back from the
  staged snapshot's data files and abandons the commit on a mismatch (recording ``transfer.mismatch``).
- After the commit, each remembered cross-jurisdiction read is recorded as a ``transfer`` into that
  target (source hash as read, target hash as committed); reads never followed by a write are recorded
  when the work closes, with no target.
- The audit store is the one :class:`AuditLog` finds by default (``HYBRID_DAGSTER_AUDIT_URL``, else
  ``$DAGSTER_HOME/hybrid_audit.db``; put it in the plane's ``env`` for a Kubernetes plane). Without one,
  hashes are still checked but nothing is recorded, and the work log says so.

Example:
    .. code-block:: python

        transfers = PlaneTransfers(plane_name="us-cloud", jurisdiction="US", run_id=run_id, warn=print)
        transfers.note_read(source_plane="eu-onprem", source_jurisdiction="EU", table="clinic.stats",
                            rows=stats, classification="confidential", route=route)
        replace_table(catalog, "copies.stats", stats, before_commit=transfers.before_commit(...))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa

from hybrid_dagster.audit.content_hash import content_sha256
from hybrid_dagster.audit.errors import AuditConfigError
from hybrid_dagster.audit.log import AuditLog
from hybrid_dagster.audit.transfers import Transfer, TransferLedger, check_integrity
from hybrid_dagster.errors import ResidencyError
from hybrid_dagster.residency import TransferRoute


@dataclass
class _InboundRead:
    source_plane: str
    source_jurisdiction: str
    table: str
    classification: str
    route: TransferRoute | None
    rows: int
    bytes: int
    sha256: str
    recorded: bool = False


class PlaneTransfers:
    """The transfers of one unit of plane work (see the module docstring)."""

    def __init__(
        self, *, plane_name: str, jurisdiction: str, run_id: str | None, warn: Callable[[str], None]
    ):
        self.plane_name = plane_name
        self.jurisdiction = jurisdiction
        self.run_id = run_id
        self.warn = warn
        self.inbound: list[_InboundRead] = []
        self._ledger: TransferLedger | None = None
        self._ledger_opened = False

    @property
    def actor(self) -> str:
        return f"plane:{self.plane_name}"

    def ledger(self) -> TransferLedger | None:
        if not self._ledger_opened:
            self._ledger_opened = True
            try:
                self._ledger = TransferLedger(AuditLog())
            except AuditConfigError as missing:
                self.warn(f"transfers are hash-checked but not recorded: {missing}")
        return self._ledger

    @contextmanager
    def decision(self, action: str, **details: str) -> Iterator[None]:
        """Record the residency decision taken inside the block: ``residency.allowed`` when it completes,
        ``residency.refused`` (with the value-free reason) when it raises a residency error.
        """
        try:
            yield
        except ResidencyError as refused:
            ledger = self.ledger()
            if ledger is not None:
                ledger.log.append(
                    "residency.refused",
                    actor=self.actor,
                    plane=self.plane_name,
                    run_id=self.run_id,
                    details={"action": action, **details, "reason": str(refused)[:2000]},
                )
            raise
        ledger = self.ledger()
        if ledger is not None:
            ledger.log.append(
                "residency.allowed",
                actor=self.actor,
                plane=self.plane_name,
                run_id=self.run_id,
                details={"action": action, **details},
            )

    def note_read(
        self,
        *,
        source_plane: str,
        source_jurisdiction: str,
        table: str,
        rows: pa.Table,
        classification: str,
        route: TransferRoute | None,
    ) -> None:
        """Remember a cross-jurisdiction read with its content hash as read at the source."""
        self.inbound.append(
            _InboundRead(
                source_plane,
                source_jurisdiction,
                table,
                classification,
                route,
                rows.num_rows,
                rows.nbytes,
                content_sha256(rows),
            )
        )

    def before_commit(self, identifier: str, handed_sha256: str) -> Callable[[pa.Table], None]:
        """A ``replace_table`` hook: the staged rows must hash to ``handed_sha256``, or no commit."""

        def _check(staged: pa.Table) -> None:
            staged_sha256 = content_sha256(staged)
            if staged_sha256 != handed_sha256:
                ledger = self.ledger()
                if ledger is not None:
                    reads: list[_InboundRead | None] = [*self.inbound] or [None]
                    for read in reads:
                        ledger.record_mismatch(
                            self._transfer(read, identifier, staged, staged_sha256),
                            actor=self.actor,
                            run_id=self.run_id,
                        )
            check_integrity(
                expected_sha256=handed_sha256,
                staged_sha256=staged_sha256,
                what=f"{self.plane_name}.{identifier}",
            )

        return _check

    def record_write(self, identifier: str, committed: pa.Table, committed_sha256: str) -> None:
        """After the commit: record every cross-jurisdiction read of this work as a transfer into it."""
        ledger = self.ledger()
        if ledger is None:
            return
        for read in self.inbound:
            ledger.record(
                self._transfer(read, identifier, committed, committed_sha256),
                actor=self.actor,
                run_id=self.run_id,
            )
            read.recorded = True

    def close(self) -> None:
        """Record reads that were never written anywhere (no target table, no target hash)."""
        ledger = self.ledger() if any(not r.recorded for r in self.inbound) else None
        for read in self.inbound:
            if not read.recorded and ledger is not None:
                ledger.record(self._transfer(read, None, None, None), actor=self.actor, run_id=self.run_id)
                read.recorded = True

    def _transfer(
        self,
        read: _InboundRead | None,
        identifier: str | None,
        target: pa.Table | None,
        target_sha256: str | None,
    ) -> Transfer:
        if read is None:  # a mismatch in a write that moved nothing across jurisdictions
            read = _InboundRead(self.plane_name, self.jurisdiction, "-", "-", None, 0, 0, "-")
        return Transfer(
            source_plane=read.source_plane,
            source_jurisdiction=read.source_jurisdiction,
            target_plane=self.plane_name,
            target_jurisdiction=self.jurisdiction,
            classification=read.classification,
            legal_basis=read.route.legal_basis if read.route is not None else None,
            source_table=read.table,
            target_table=identifier,
            rows=read.rows,
            bytes=read.bytes,
            source_sha256=read.sha256,
            target_sha256=target_sha256,
            egress_usd_per_gb=read.route.egress_usd_per_gb if read.route is not None else None,
            extra={"target_rows": target.num_rows} if target is not None else {},
        )
