"""The transfer ledger: every cross-plane movement and CDC commit, with integrity hashes, in the audit log.

Correctness rules:

- A transfer record (kind ``transfer``) names the route (``EU->US``), its legal basis, source and target
  plane and table, rows, bytes (Arrow in-memory size of the batch), the SHA-256 content hash of the
  batch as read at the source and of the rows as committed at the target
  (:func:`hybrid_dagster.audit.content_hash.content_sha256`), and the egress cost when the route has a
  price (bytes / 10^9 x USD per GB).
- Integrity is checked *before* the target commit: :func:`check_integrity` raises
  :class:`TransferIntegrityError` when the rows staged for commit do not hash to what was handed over, and
  the commit is abandoned. A mismatch is itself recorded (kind ``transfer.mismatch``) as evidence.
- CDC batches record the same two hashes through :func:`record_cdc_commit` (kind ``cdc.commit``). Where the
  sink calls it: compute ``source_sha256`` of the collapsed batch as decoded, stage the Iceberg commit,
  compute ``target_sha256`` of the staged rows, call :func:`check_integrity` before committing, commit,
  then call :func:`record_cdc_commit` before acknowledging the source (so an acknowledged batch always has
  its record).
- Only metadata is recorded: names, counts, hashes, positions - never row values.

Example:
    .. code-block:: python

        from hybrid_dagster.audit import AuditLog
        from hybrid_dagster.audit.transfers import Transfer, TransferLedger

        ledger = TransferLedger(AuditLog())
        ledger.record(Transfer(source_plane="eu-onprem", source_jurisdiction="EU", target_plane="us-cloud",
                               target_jurisdiction="US", classification="confidential",
                               legal_basis="GDPR Art. 46(2)(c) SCCs", source_table="clinic.stats",
                               target_table="copies.stats", rows=120, bytes=9_600,
                               source_sha256=h, target_sha256=h, egress_usd_per_gb=0.09),
                      actor="plane:us-cloud")
        print(ledger.cost_by_route())
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from hybrid_dagster.audit.errors import TransferIntegrityError
from hybrid_dagster.audit.log import AuditLog, AuditRecord

TRANSFER_KIND = "transfer"
MISMATCH_KIND = "transfer.mismatch"
CDC_COMMIT_KIND = "cdc.commit"
BYTES_PER_GB = 1_000_000_000


def route_name(source_jurisdiction: str, target_jurisdiction: str) -> str:
    """``"EU->US"``: how the ledger names a route.

    Example:
        >>> route_name("EU", "US")
        'EU->US'
    """
    return f"{source_jurisdiction}->{target_jurisdiction}"


def egress_cost_usd(num_bytes: int, usd_per_gb: float | None) -> float | None:
    """Egress cost of ``num_bytes`` at ``usd_per_gb`` (1 GB = 10^9 bytes), None when there is no price.

    Example:
        >>> egress_cost_usd(2_000_000_000, 0.09)
        0.18
    """
    if usd_per_gb is None:
        return None
    return round(num_bytes / BYTES_PER_GB * usd_per_gb, 12)


@dataclass(frozen=True)
class Transfer:
    """One movement of rows from a plane to a plane of another (or the same) jurisdiction.

    Example:
        >>> Transfer(source_plane="eu-onprem", source_jurisdiction="EU", target_plane="us-cloud",
        ...          target_jurisdiction="US", classification="internal", legal_basis=None,
        ...          source_table="a.b", target_table="c.d", rows=1, bytes=8,
        ...          source_sha256="ab", target_sha256="ab").route
        'EU->US'
    """

    source_plane: str
    source_jurisdiction: str
    target_plane: str
    target_jurisdiction: str
    classification: str
    legal_basis: str | None
    source_table: str
    target_table: str | None
    rows: int
    bytes: int
    source_sha256: str
    target_sha256: str | None
    egress_usd_per_gb: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def route(self) -> str:
        return route_name(self.source_jurisdiction, self.target_jurisdiction)

    @property
    def cost_usd(self) -> float | None:
        return egress_cost_usd(self.bytes, self.egress_usd_per_gb)

    def details(self) -> dict[str, Any]:
        """The audit record's details (plain JSON).

        ``copied_verbatim`` says whether the committed rows are exactly the rows read at the source (a
        copy: True) or rows a step derived from them (False; ``None`` when nothing was written). It is
        not an integrity verdict: the rows handed to the writer are compared with the rows staged for
        commit by :func:`check_integrity` before every commit, and a difference stops the commit.
        """
        body = {k: v for k, v in asdict(self).items() if k != "extra"}
        return {
            **dict(self.extra),
            **body,
            "route": self.route,
            "cost_usd": self.cost_usd,
            "copied_verbatim": (
                None if self.target_sha256 is None else self.source_sha256 == self.target_sha256
            ),
        }


def check_integrity(*, expected_sha256: str, staged_sha256: str, what: str) -> None:
    """Raise :class:`TransferIntegrityError` unless the staged rows hash to what was handed over.

    Call it after staging and before committing; the message names ``what`` and both hashes.

    Example:
        >>> check_integrity(expected_sha256="ab", staged_sha256="ab", what="copies.patients")
    """
    if expected_sha256 != staged_sha256:
        raise TransferIntegrityError(
            f"{what}: the rows staged for commit hash to {staged_sha256} but the rows handed over hash to "
            f"{expected_sha256}; the commit was abandoned - check the writer and the storage between them"
        )


class TransferLedger:
    """Transfers and CDC commits recorded in (and read back from) the audit log.

    Example:
        >>> ledger = TransferLedger(AuditLog())
        >>> ledger.cost_by_route()["EU->US"]["cost_usd"]
        0.27
    """

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def record(
        self, transfer: Transfer, *, actor: str, run_id: str | None = None, plane: str | None = None
    ) -> AuditRecord:
        """Record a committed transfer (kind ``transfer``)."""
        return self.log.append(
            TRANSFER_KIND,
            actor=actor,
            plane=plane or transfer.target_plane,
            run_id=run_id,
            details=transfer.details(),
        )

    def record_mismatch(
        self, transfer: Transfer, *, actor: str, run_id: str | None = None, plane: str | None = None
    ) -> AuditRecord:
        """Record an abandoned transfer whose hashes did not match (kind ``transfer.mismatch``)."""
        return self.log.append(
            MISMATCH_KIND,
            actor=actor,
            plane=plane or transfer.target_plane,
            run_id=run_id,
            details=transfer.details(),
        )

    def transfers(self) -> list[AuditRecord]:
        """Every ``transfer`` record, oldest first."""
        return list(self.log.records(kind=TRANSFER_KIND))

    def cost_by_route(self) -> dict[str, dict[str, Any]]:
        """Per route: transfers, rows, bytes, cost (None when no transfer on it had a price), legal bases.

        Example:
            >>> TransferLedger(log).cost_by_route()
            {'EU->US': {'transfers': 3, 'rows': 360, 'bytes': 28800, 'cost_usd': 2.6e-06, ...}}
        """
        return cost_by_route(r.details for r in self.transfers())


def cost_by_route(details: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Aggregate transfer details per route (see :meth:`TransferLedger.cost_by_route`)."""
    report: dict[str, dict[str, Any]] = {}
    for d in details:
        entry = report.setdefault(
            str(d.get("route", "unknown")),
            {
                "transfers": 0,
                "rows": 0,
                "bytes": 0,
                "cost_usd": None,
                "legal_bases": [],
                "classifications": [],
            },
        )
        entry["transfers"] += 1
        entry["rows"] += int(d.get("rows") or 0)
        entry["bytes"] += int(d.get("bytes") or 0)
        if d.get("cost_usd") is not None:
            entry["cost_usd"] = round((entry["cost_usd"] or 0.0) + float(d["cost_usd"]), 12)
        for key, name in (("legal_bases", "legal_basis"), ("classifications", "classification")):
            if d.get(name) and d[name] not in entry[key]:
                entry[key].append(d[name])
    return dict(sorted(report.items()))


def record_cdc_commit(
    log: AuditLog,
    *,
    plane: str,
    table: str,
    snapshot_id: int | None,
    source: str,
    source_position: str,
    rows: int,
    bytes: int,
    source_sha256: str,
    target_sha256: str,
    actor: str,
    run_id: str | None = None,
    source_jurisdiction: str | None = None,
    target_jurisdiction: str | None = None,
    legal_basis: str | None = None,
) -> AuditRecord:
    """Record a committed CDC batch (kind ``cdc.commit``) with its two hashes.

    ``source`` names the source database physically (``postgres://host:port/db``, no credentials);
    ``source_position`` is the last applied position (an LSN, a Kafka offset). Raises
    :class:`TransferIntegrityError` (and records ``transfer.mismatch``) if the hashes differ - but the
    check that stops the commit is :func:`check_integrity`, called before committing.

    Example:
        >>> record_cdc_commit(log, plane="eu-onprem", table="clinic.patients", snapshot_id=7,
        ...                   source="postgres://db:5432/clinic", source_position="0/16B3748", rows=10,
        ...                   bytes=800, source_sha256=h, target_sha256=h, actor="cdc:patients").kind
        'cdc.commit'
    """
    details: dict[str, Any] = {
        "plane": plane,
        "table": table,
        "snapshot_id": snapshot_id,
        "source": source,
        "source_position": source_position,
        "rows": rows,
        "bytes": bytes,
        "source_sha256": source_sha256,
        "target_sha256": target_sha256,
        "hashes_match": source_sha256 == target_sha256,
    }
    if source_jurisdiction and target_jurisdiction:
        details["route"] = route_name(source_jurisdiction, target_jurisdiction)
        details["legal_basis"] = legal_basis
    if source_sha256 != target_sha256:
        log.append(MISMATCH_KIND, actor=actor, plane=plane, run_id=run_id, details=details)
        check_integrity(expected_sha256=source_sha256, staged_sha256=target_sha256, what=f"{plane}.{table}")
    return log.append(CDC_COMMIT_KIND, actor=actor, plane=plane, run_id=run_id, details=details)


@dataclass(frozen=True)
class VolumeAnomaly:
    """A transfer whose volume is above ``median + k * MAD`` of its route's earlier transfers."""

    route: str
    seq: int
    bytes: int
    median: float
    mad: float
    threshold: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def volume_anomalies(
    records: Iterable[AuditRecord], *, k: float = 5.0, min_history: int = 5, measure: str = "bytes"
) -> list[VolumeAnomaly]:
    """Transfers whose ``measure`` exceeds ``median + k * MAD`` of the same route's earlier transfers.

    The median absolute deviation (MAD) is robust: one earlier outlier does not hide the next. Routes with
    fewer than ``min_history`` earlier transfers are not judged. A MAD of 0 (identical history) is floored
    at 1% of the median so that tiny wobbles are not flagged.

    Example:
        >>> [a.seq for a in volume_anomalies(ledger.transfers())]
        [12]
    """
    history: dict[str, list[float]] = {}
    anomalies: list[VolumeAnomaly] = []
    for record in records:
        route = str(record.details.get("route"))
        value = float(record.details.get(measure) or 0)
        past = history.setdefault(route, [])
        if len(past) >= min_history:
            median = statistics.median(past)
            mad = statistics.median(abs(v - median) for v in past)
            threshold = median + k * max(mad, 0.01 * median)
            if value > threshold:
                anomalies.append(VolumeAnomaly(route, record.seq, int(value), median, mad, threshold))
        past.append(value)
    return anomalies
