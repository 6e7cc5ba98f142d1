"""The contract every CDC source implements (the same layout for postgres, debezium and sql triggers)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from hybrid_dagster.cdc.changes import ChangeBatch, Position, TableChanges


@dataclass(frozen=True)
class SourceTable:
    """A table captured by a source. ``key_columns`` empty means: discover the primary key."""

    name: str
    key_columns: tuple[str, ...] = ()


class ChangeSource(ABC):
    """A log of changes that can be read without consuming it and acknowledged after a commit.

    Sources are at-least-once: ``read`` returns everything after the last acknowledged position, so a
    batch read again after a crash comes back again; the apply skips what the table already holds.
    """

    kind: str
    """Dagster kind of the source system: 'postgres', 'debezium' or 'sqlite'."""

    copies_tables: bool = False
    """Whether :meth:`snapshot` can copy a table's current rows. Debezium snapshots arrive in the
    stream itself (``r`` events), so its sources leave this False."""

    @property
    @abstractmethod
    def source_id(self) -> str:
        """Stable identity written into Iceberg snapshot summaries, e.g. 'postgres://h:5432/db#slot'."""

    @abstractmethod
    def setup(self) -> Position | None:
        """Create what the source needs (slot, publication, triggers) if missing.

        Returns the consistent point of a newly created stream (the position a snapshot hands off at),
        or None if it already existed.
        """

    @abstractmethod
    def read(self, max_events: int) -> ChangeBatch:
        """Read up to about ``max_events`` changes after the acknowledged position, without consuming."""

    @abstractmethod
    def ack(self, position: Position) -> None:
        """Acknowledge everything up to ``position``; called only after the Iceberg commit succeeded."""

    def snapshot(self, table: SourceTable, position: Position, chunk_rows: int) -> Iterator[TableChanges]:
        """Copy the current contents of ``table`` as ``r`` changes at ``position`` (initial load).

        Yields at least one chunk, an empty one for an empty table, so that its schema is known.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot copy tables (copies_tables is False)")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
