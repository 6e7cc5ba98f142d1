"""How far a secondary is behind its primary: in seconds and in source changes.

Correctness rules:

- RPO in seconds = commit time of the primary's newest snapshot minus that of the newest snapshot
  readable at the secondary (0 when they are the same snapshot).
- RPO in changes counts, along the primary's current ancestry, every snapshot newer than the one the
  secondary can read: its CDC change count (``hybrid.cdc.events`` in the snapshot summary) when it has
  one, else 1. Source positions (``hybrid.cdc.position``) of both ends are reported beside it.
- A secondary snapshot that is not in the primary's ancestry (or none at all) counts the whole ancestry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import ancestors_of

CHANGES_PROPERTY = "hybrid.cdc.events"
"""Change events a CDC snapshot applied (written by :mod:`hybrid_dagster.cdc.sink`)."""
POSITION_PROPERTY = "hybrid.cdc.position"
"""Source position a CDC snapshot reached (written by :mod:`hybrid_dagster.cdc.sink`)."""


@dataclass(frozen=True)
class AncestryEntry:
    snapshot_id: int
    timestamp_ms: int
    changes: int
    position: str | None


def ancestry(metadata: TableMetadata, limit: int = 100_000) -> list[AncestryEntry]:
    """The current snapshot's ancestry, newest first, with change counts and positions.

    Example:
        >>> ancestry(table.metadata)[0].position
        '24023128:24023200'
    """
    found: list[AncestryEntry] = []
    for snapshot in ancestors_of(metadata.current_snapshot(), metadata):
        summary = snapshot.summary.additional_properties if snapshot.summary is not None else {}
        raw = summary.get(CHANGES_PROPERTY)
        changes = int(raw) if raw is not None and str(raw).isdigit() else 1
        found.append(
            AncestryEntry(
                snapshot.snapshot_id, snapshot.timestamp_ms, changes, summary.get(POSITION_PROPERTY)
            )
        )
        if len(found) >= limit:
            break
    return found


@dataclass(frozen=True)
class TableLag:
    """One table's recovery point at the secondary."""

    identifier: str
    primary_snapshot_id: int | None
    secondary_snapshot_id: int | None
    rpo_s: float
    rpo_changes: int
    snapshots_behind: int
    primary_position: str | None
    secondary_position: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def table_lag(identifier: str, primary: list[AncestryEntry], secondary_snapshot_id: int | None) -> TableLag:
    """Compare the primary's ancestry (newest first) with the snapshot readable at the secondary.

    Example:
        >>> table_lag("clinical.patients", ancestry(primary.metadata), 4711).rpo_changes
        3
    """
    head = primary[0] if primary else None
    behind: list[AncestryEntry] = []
    reached: AncestryEntry | None = None
    for entry in primary:
        if entry.snapshot_id == secondary_snapshot_id:
            reached = entry
            break
        behind.append(entry)
    secondary_position = None
    if reached is not None:
        index = primary.index(reached)
        secondary_position = next((e.position for e in primary[index:] if e.position), None)
    if head is None:
        rpo_s = 0.0
    elif reached is None:
        rpo_s = (head.timestamp_ms - primary[-1].timestamp_ms) / 1000.0 if behind else 0.0
    else:
        rpo_s = max(0.0, (head.timestamp_ms - reached.timestamp_ms) / 1000.0)
    return TableLag(
        identifier=identifier,
        primary_snapshot_id=None if head is None else head.snapshot_id,
        secondary_snapshot_id=secondary_snapshot_id,
        rpo_s=rpo_s,
        rpo_changes=sum(e.changes for e in behind),
        snapshots_behind=len(behind),
        primary_position=next((e.position for e in primary if e.position), None),
        secondary_position=secondary_position,
    )
