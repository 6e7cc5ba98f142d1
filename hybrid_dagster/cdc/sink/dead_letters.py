"""An append-only Iceberg table for events that could not be parsed or applied."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError, TableAlreadyExistsError
from pyiceberg.expressions import AlwaysFalse, BooleanExpression, In, IsNull, Or
from pyiceberg.table import Table

from hybrid_dagster.cdc._pyiceberg_compat import ensure_namespace
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
        """Append ``letters`` not already in the table; returns how many were written.

        Idempotent for replays: a letter whose (source, position, raw) is already in the table (a batch
        read again after a crash) is skipped, as is a repeat within ``letters``. No commit when nothing
        is new.
        """
        if not letters:
            return 0
        table = self.table()
        present = self._present(table, letters)
        fresh: list[DeadLetter] = []
        for letter in letters:
            identity = (letter.source, letter.position, letter.raw)
            if identity not in present:
                present.add(identity)
                fresh.append(letter)
        if not fresh:
            return 0
        letters = fresh
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
        table.append(rows)
        return rows.num_rows

    @staticmethod
    def _present(table: Table, letters: list[DeadLetter]) -> set[tuple[str, str | None, str]]:
        """(source, position, raw) of the stored letters at the positions of ``letters``."""
        if table.current_snapshot() is None:
            return set()
        positions = sorted({letter.position for letter in letters if letter.position is not None})
        # pyiceberg's predicates are pydantic models whose constructors mypy does not see.
        condition: BooleanExpression = (
            In("position", positions) if positions else AlwaysFalse()  # type: ignore[call-arg, arg-type]
        )
        if any(letter.position is None for letter in letters):
            condition = Or(condition, IsNull("position"))  # type: ignore[call-arg, arg-type]
        stored = table.scan(row_filter=condition, selected_fields=("source", "position", "raw")).to_arrow()
        return set(
            zip(
                stored["source"].to_pylist(),
                stored["position"].to_pylist(),
                stored["raw"].to_pylist(),
                strict=True,
            )
        )

    def table(self) -> Table:
        """The dead letter table, created if missing."""
        try:
            return self.catalog.load_table(self.identifier)
        except NoSuchTableError:
            pass
        namespace = self.identifier.rsplit(".", 1)[0]
        ensure_namespace(self.catalog, namespace)
        try:
            return self.catalog.create_table(self.identifier, schema=DEAD_LETTER_SCHEMA)
        except TableAlreadyExistsError:
            return self.catalog.load_table(self.identifier)
