"""The normalized change batch every CDC source produces and the Iceberg apply consumes.

A source turns its native events (pgoutput messages, wal2json JSON, Debezium envelopes, trigger rows)
into one Arrow table per source table. Each row is one change, with these system columns first and the
row's after-image (or, for deletes, its key) in the data columns after them:

=================  ==========================  ==========================================================
column             type                        meaning
=================  ==========================  ==========================================================
``__op``           string                      ``c`` insert, ``u`` update, ``d`` delete, ``r`` snapshot
                                               read, ``t`` truncate (no data columns set)
``__commit_pos``   int64                       commit position of the transaction (e.g. commit LSN)
``__event_pos``    int64                       position of the event inside the commit (e.g. its LSN)
``__tx_id``        int64 (nullable)            source transaction id
``__commit_ts``    timestamp[us, UTC] (null.)  commit time at the source
``__old_key``      struct of the key columns   the previous key when an update changed the primary key
                   (nullable)
``__unchanged``    list<string> (nullable)     columns the source did not send (unchanged TOAST values):
                                               their previous value must be carried forward
=================  ==========================  ==========================================================

Ordering is ``(__commit_pos, __event_pos)``; the last change per key wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import total_ordering
from typing import Any

import pyarrow as pa

OP_INSERT = "c"
OP_UPDATE = "u"
OP_DELETE = "d"
OP_READ = "r"
OP_TRUNCATE = "t"
OPS = (OP_INSERT, OP_UPDATE, OP_DELETE, OP_READ, OP_TRUNCATE)

OP_COL = "__op"
COMMIT_POS_COL = "__commit_pos"
EVENT_POS_COL = "__event_pos"
TX_ID_COL = "__tx_id"
COMMIT_TS_COL = "__commit_ts"
OLD_KEY_COL = "__old_key"
UNCHANGED_COL = "__unchanged"
SYSTEM_COLUMNS = (OP_COL, COMMIT_POS_COL, EVENT_POS_COL, TX_ID_COL, COMMIT_TS_COL, OLD_KEY_COL, UNCHANGED_COL)


@total_ordering
@dataclass(frozen=True)
class Position:
    """A totally ordered source position: (commit position, event position within the commit).

    Example:
        >>> Position.decode(Position(24023128, 24023200).encode())
        Position(commit=24023128, event=24023200)
    """

    commit: int
    event: int = 0

    def encode(self) -> str:
        return f"{self.commit}:{self.event}"

    @classmethod
    def decode(cls, text: str) -> Position:
        try:
            commit, _, event = text.partition(":")
            return cls(int(commit), int(event or 0))
        except ValueError:
            raise ValueError(f"not a source position: {text!r} (expected 'COMMIT:EVENT')") from None

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Position):
            return NotImplemented
        return (self.commit, self.event) < (other.commit, other.event)

    def __str__(self) -> str:
        return self.encode()


def system_fields(key_schema: pa.Schema) -> list[pa.Field]:
    """The system columns of a change table whose primary key has ``key_schema``."""
    return [
        pa.field(OP_COL, pa.string(), nullable=False),
        pa.field(COMMIT_POS_COL, pa.int64(), nullable=False),
        pa.field(EVENT_POS_COL, pa.int64(), nullable=False),
        pa.field(TX_ID_COL, pa.int64()),
        pa.field(COMMIT_TS_COL, pa.timestamp("us", tz="UTC")),
        pa.field(OLD_KEY_COL, pa.struct(list(key_schema))),
        pa.field(UNCHANGED_COL, pa.list_(pa.string())),
    ]


def change_schema(data_schema: pa.Schema, key_columns: list[str]) -> pa.Schema:
    """Full schema of a change table: system columns, then the row's data columns."""
    missing = [k for k in key_columns if k not in data_schema.names]
    if missing:
        raise ValueError(f"key columns {missing} are not in the data schema {data_schema.names}")
    key_schema = pa.schema([data_schema.field(k) for k in key_columns])
    return pa.schema([*system_fields(key_schema), *data_schema])


@dataclass
class TableChanges:
    """The changes of one source table in one batch.

    ``rows`` follows :func:`change_schema`; ``data_schema`` is the row schema the source declares now
    (it drives schema evolution of the Iceberg table).
    """

    table: str
    key_columns: list[str]
    data_schema: pa.Schema
    rows: pa.Table
    column_defaults: dict[str, Any] = field(default_factory=dict)
    """Per column added after rows existed: the value those rows hold at the source (PostgreSQL's
    ``attmissingval`` after ``ADD COLUMN ... DEFAULT``). It becomes the Iceberg column's initial default,
    so rows written before the column read it, as in PostgreSQL."""

    @property
    def count(self) -> int:
        return self.rows.num_rows

    @classmethod
    def from_rows(
        cls, table: str, key_columns: list[str], data_schema: pa.Schema, rows: list[dict[str, Any]]
    ) -> TableChanges:
        """Build from Python dicts holding system and data columns (convenient for small sources/tests)."""
        schema = change_schema(data_schema, key_columns)
        return cls(table, key_columns, data_schema, pa.Table.from_pylist(rows, schema=schema))


@dataclass(frozen=True)
class DeadLetter:
    """An event that could not be parsed or applied, kept with its raw payload and the reason."""

    source: str
    raw: str
    reason: str
    table: str | None = None
    position: str | None = None


@dataclass
class ChangeBatch:
    """What a source read in one go: changes per table, dead letters, and where to acknowledge to.

    ``ack_position`` is what the source must be acknowledged up to once every table's changes are
    committed (for PostgreSQL the end LSN of the last transaction in the batch).
    """

    source: str
    tables: dict[str, TableChanges] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    ack_position: Position | None = None
    source_position: Position | None = None
    """The newest position the source knows about (for lag); None if unknown."""

    @property
    def event_count(self) -> int:
        return sum(t.count for t in self.tables.values())

    @property
    def empty(self) -> bool:
        return not self.tables and not self.dead_letters
