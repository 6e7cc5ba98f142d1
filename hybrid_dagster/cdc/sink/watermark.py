"""Where a CDC source stands in an Iceberg table: the position kept in the snapshot summaries.

Every snapshot the applier commits carries ``hybrid.cdc.source`` and ``hybrid.cdc.position``. The
watermark of a source is the position in the newest snapshot of the current ancestry that carries
that source, so snapshots written by other writers (compaction, another source) do not hide it.
"""

from __future__ import annotations

from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of

from hybrid_dagster.cdc.changes import Position

SOURCE_PROPERTY = "hybrid.cdc.source"
POSITION_PROPERTY = "hybrid.cdc.position"
EVENTS_PROPERTY = "hybrid.cdc.events"
INSERTED_PROPERTY = "hybrid.cdc.inserted"
UPDATED_PROPERTY = "hybrid.cdc.updated"
DELETED_PROPERTY = "hybrid.cdc.deleted"
TRUNCATED_PROPERTY = "hybrid.cdc.truncated"
SNAPSHOT_SUFFIX = "#snapshot"
"""``hybrid.cdc.source`` of a table copy's chunk commits: the source id and this (:mod:`..snapshots`)."""


def read_watermark(table: Table, source_id: str) -> Position | None:
    """The last position of ``source_id`` applied to ``table``, or None if it never wrote to it.

    Example:
        >>> read_watermark(catalog.load_table("crm.patients"), "postgres://db#slot")  # doctest: +SKIP
        Position(commit=24023128, event=24023200)
    """
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        summary = snapshot.summary
        if summary is None or summary[SOURCE_PROPERTY] != source_id:
            continue
        encoded = summary[POSITION_PROPERTY]
        if encoded:
            return Position.decode(encoded)
    return None


def position_properties(source_id: str, position: Position) -> dict[str, str]:
    """Snapshot summary properties that record ``position`` of ``source_id``."""
    return {SOURCE_PROPERTY: source_id, POSITION_PROPERTY: position.encode()}
