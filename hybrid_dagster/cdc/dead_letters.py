"""An append-only Iceberg table for events that could not be parsed or applied."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.table import Table

from hybrid_dagster.cdc.changes import DeadLetter

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("table", pa.string()),
        pa.field("position", pa.string()),
        pa.field("raw", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("received_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


class DeadLetterTable:
    """Dead letters of CDC sources, kept with their raw payload; the table is created on first write.

    Example:
        >>> letters = DeadLetterTable(catalog, "cdc.dead_letters")  # doctest: +SKIP
        >>> letters.write([DeadLetter(source="pg", raw="{not json", reason="invalid JSON")])  # doctest: +SKIP
        1
    """

    def __init__(self, catalog: Catalog, identifier: str) -> None:
        self.catalog = catalog
        self.identifier = identifier

    def write(self, letters: list[DeadLetter]) -> int:
        """Append ``letters``; returns how many were written (no commit when there are none)."""
        if not letters:
            return 0
        received_at = datetime.now(UTC)
        rows = pa.Table.from_pylist(
            [
                {
                    "source": letter.source,
                    "table": letter.table,
                    "position": letter.position,
                    "raw": letter.raw,
                    "reason": letter.reason,
                    "received_at": received_at,
                }
                for letter in letters
            ],
            schema=DEAD_LETTER_SCHEMA,
        )
        self.table().append(rows)
        return rows.num_rows

    def table(self) -> Table:
        """The dead letter table, created if missing."""
        try:
            return self.catalog.load_table(self.identifier)
        except NoSuchTableError:
            pass
        namespace = self.identifier.rsplit(".", 1)[0]
        with contextlib.suppress(NamespaceAlreadyExistsError):
            self.catalog.create_namespace(namespace)
        try:
            return self.catalog.create_table(self.identifier, schema=DEAD_LETTER_SCHEMA)
        except TableAlreadyExistsError:
            return self.catalog.load_table(self.identifier)
