"""The contract every CDC source implements (the same layout for postgres, debezium and sql triggers)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pyarrow as pa

from hybrid_dagster.cdc.changes import ChangeBatch, Position, TableChanges


@dataclass(frozen=True)
class SourceTable:
    """A table captured by a source. ``key_columns`` empty means: discover the primary key."""

    name: str
    key_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class CopyChunk:
    """One key range of a copied table: its rows as ``r`` changes and its last key in text form."""

    changes: TableChanges
    last_key: tuple[str, ...] | None


class ConsistentCopy(ABC):
    """The rows of captured tables as of one position of the change stream (the initial copy).

    Correctness rule: ``position`` is exact. The copy holds every change the stream carries at or below
    ``position`` and none after it, so the copied table's watermark is ``position``, the stream applies
    exactly the changes after it, and a value carried forward from the copied table (an unchanged TOAST
    value) is that row's own value at that position. A copy read at some later moment, labelled with an
    earlier position, breaks all three.

    Example:
        >>> with source.open_copy() as copy:  # doctest: +SKIP
        ...     chunks = list(copy.rows(SourceTable("public.patients"), chunk_rows=100_000))
        ...     hand_off = copy.position
    """

    position: Position

    @abstractmethod
    def rows(self, table: SourceTable, chunk_rows: int) -> Iterator[TableChanges]:
        """The rows of ``table`` as ``r`` changes at :attr:`position`, ``chunk_rows`` at a time.

        Yields at least one chunk, an empty one for an empty table, so that its schema is known.
        """

    chunked: bool = False
    """Whether :meth:`chunks` reads key ranges (then the copy commits chunk by chunk and resumes)."""

    def chunks(
        self,
        table: SourceTable,
        chunk_rows: int,
        *,
        after_key: tuple[str, ...] | None = None,
        first_sequence: int = 0,
    ) -> Iterator[CopyChunk]:
        """Key ranges of ``table`` after ``after_key`` in key order, ``chunk_rows`` rows each.

        The n-th chunk's rows are at ``Position(position.commit, first_sequence + n)``; each chunk names
        its last key (PostgreSQL text form), from which a later copy resumes. Only where ``chunked``.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot read key ranges")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the copy holds (connections, temporary slots)."""

    def __enter__(self) -> ConsistentCopy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True)
class CommitHooks:
    """Per-batch apply hooks of a source that keeps its offsets in the tables (Kafka partitions).

    Both are called with the table as loaded for each commit attempt, so a concurrent commit (another
    consumer of the group, after a rebalance) is seen before this one lands.
    """

    pending_filter: Callable[[Any, pa.Table], pa.Table]
    """The changes of the batch the table does not hold yet."""
    properties: Callable[[Any], dict[str, str]]
    """Snapshot summary properties recording the offsets the table holds after this batch."""


class ChangeSource(ABC):
    """A log of changes that can be read without consuming it and acknowledged after a commit.

    Sources are at-least-once: ``read`` returns everything after the last acknowledged position, so a
    batch read again after a crash comes back again; the apply skips what the table already holds.
    """

    kind: str
    """Dagster kind of the source system: 'postgres', 'debezium' or 'sqlite'."""

    copies_tables: bool = False
    """Whether :meth:`open_copy` can copy a table's current rows. Debezium snapshots arrive in the
    stream itself (``r`` events), so its sources leave this False."""

    @property
    @abstractmethod
    def source_id(self) -> str:
        """Stable identity written into Iceberg snapshot summaries, e.g. 'postgres://h:5432/db#slot'."""

    @abstractmethod
    def setup(self) -> Position | None:
        """Create what the source needs (slot, publication, triggers) if missing.

        Returns the position of a newly created stream, or None if it already existed. (The initial
        copy does not hand off there: :meth:`open_copy` gives its own exact position.)
        """

    @abstractmethod
    def read(self, max_events: int) -> ChangeBatch:
        """Read up to about ``max_events`` changes after the acknowledged position, without consuming."""

    def follow_read(self, max_events: int, max_wait_s: float) -> ChangeBatch:
        """The long-running mode's read: changes that arrived, waiting at most about ``max_wait_s``.

        An empty batch means nothing new yet (the follow loop goes on). Sources that can wait for new
        changes override it; this default reads and, when there is nothing, sleeps ``max_wait_s``.
        """
        batch = self.read(max_events)
        if batch.empty and batch.ack_position is None:
            time.sleep(max_wait_s)
        return batch

    @abstractmethod
    def ack(self, position: Position) -> None:
        """Acknowledge everything up to ``position``; called only after the Iceberg commit succeeded."""

    def open_copy(self) -> ConsistentCopy:
        """Start reading the current rows of captured tables at one exact stream position.

        Only sources with ``copies_tables``; see :class:`ConsistentCopy` for the rule it must keep.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot copy tables (copies_tables is False)")

    def bind_applied(self, loader: Callable[[], dict[str, Any]]) -> None:  # noqa: B027
        """How to load the Iceberg tables (only sources with ``offsets_in_tables``).

        ``loader()`` gives ``{source_table: pyiceberg Table or None}``; the source reads where each table
        stands from their snapshots when partitions are assigned, and starts each partition there.
        """

    offsets_in_tables: bool = False
    """Whether the source records its input offsets in the Iceberg snapshots (:meth:`commit_hooks`) and
    skips applied events by them, instead of by a position of the source database."""

    def commit_hooks(self, ack_position: Position) -> CommitHooks | None:
        """What the apply of the batch read up to ``ack_position`` filters and records (see
        :class:`CommitHooks`); None for sources ordered by one position."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
