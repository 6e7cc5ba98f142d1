"""The documents, chunks and dead-letter Iceberg tables, and the exactly-once batch commit.

Correctness rules:

- Each table changes by one Iceberg transaction per batch: the rows of the batch's replaced and removed
  documents are deleted and the new rows appended in ONE commit, whose snapshots carry the batch
  number (``hybrid.documents.batch``) in their summary.
- The documents table is the commit point: the chunks and dead-letter tables are committed first, the
  documents table last (always, even with no rows, so the batch number advances). A batch is done
  when the documents table's snapshot carries its number.
- Recovery at start: the chunks and dead-letter tables are rolled back to the newest snapshot whose batch
  is at most the documents table's (a table with no such snapshot is emptied), so a SIGKILL between the
  commits of one batch leaves no trace and the rerun redoes the batch: exactly once, with no duplicates.
- One ingest writes a set of tables at a time (the asset's run); a concurrent second writer is refused
  by the catalog's optimistic commit, not merged.
- Every table write first calls the residency guard (``before_write``) with the table's identifier;
  each table carries its residency label (plane, jurisdiction, classification, asset) in its properties.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.expressions import AlwaysTrue, In
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot, ancestors_of

BATCH_PROPERTY = "hybrid.documents.batch"

_FILE_FIELDS = [
    pa.field("document_id", pa.string(), nullable=False),
    pa.field("source_uri", pa.string(), nullable=False),
    pa.field("media_type", pa.string(), nullable=False),
    pa.field("sha256", pa.string(), nullable=False),
    pa.field("size_bytes", pa.int64(), nullable=False),
    pa.field("modified_at", pa.timestamp("us", tz="UTC")),
]

DOCUMENTS_SCHEMA = pa.schema(
    [
        *_FILE_FIELDS,
        pa.field("unit_kind", pa.string(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("line_start", pa.int32()),
        pa.field("line_end", pa.int32()),
        pa.field("speaker", pa.string()),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("logged_at", pa.timestamp("us", tz="UTC")),
        pa.field("level", pa.string()),
        pa.field("text", pa.string(), nullable=False),
        pa.field("link_column", pa.string()),
        pa.field("link_key", pa.string()),
    ]
)
"""One row per unit (page, turn, log record) of every readable document."""

CHUNKS_SCHEMA = pa.schema(
    [
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("document_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("media_type", pa.string(), nullable=False),
        pa.field("chunk_index", pa.int32(), nullable=False),
        pa.field("position_start", pa.int32(), nullable=False),
        pa.field("position_end", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("link_column", pa.string()),
        pa.field("link_key", pa.string()),
        pa.field("embedding", pa.list_(pa.float32())),
    ]
)
"""One row per chunk; ``embedding`` is null unless embeddings are configured."""

DEAD_LETTERS_SCHEMA = pa.schema([*_FILE_FIELDS, pa.field("reason", pa.string(), nullable=False)])
"""One row per file that could not be read, with a value-free reason."""


@dataclass(frozen=True)
class Known:
    """What the tables hold for one source URI."""

    document_id: str
    sha256: str
    dead: bool


@dataclass(frozen=True)
class TableNames:
    """Identifiers of the three tables.

    Example:
        >>> TableNames("docs.documents", "docs.document_chunks", "docs._document_dead_letters")
    """

    documents: str
    chunks: str
    dead_letters: str


def batch_of(snapshot: Snapshot | None) -> int | None:
    """The batch number a snapshot was written by, or None (not written by the ingest)."""
    if snapshot is None or snapshot.summary is None:
        return None
    value = snapshot.summary.additional_properties.get(BATCH_PROPERTY)
    return int(value) if value is not None else None


class DocumentTables:
    """The three tables of one document source in a plane's catalog.

    Example:
        >>> tables = DocumentTables(catalog, TableNames("docs.documents", "docs.chunks", "docs._dead"))
        >>> committed = tables.recover()
        >>> tables.commit(committed + 1, removed={"doc-1"}, documents=rows, chunks=chunks, dead_letters=dead)
    """

    def __init__(
        self,
        catalog: Catalog,
        names: TableNames,
        *,
        before_write: Callable[[str], None],
        labels: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.catalog = catalog
        self.names = names
        self.before_write = before_write
        self.labels = {identifier: dict(props) for identifier, props in (labels or {}).items()}

    # -- tables -----------------------------------------------------------------------------------------

    def ensure(self) -> tuple[Table, Table, Table]:
        """Load the three tables, creating missing ones (after the guard)."""
        return (
            self._ensure(self.names.documents, DOCUMENTS_SCHEMA),
            self._ensure(self.names.chunks, CHUNKS_SCHEMA),
            self._ensure(self.names.dead_letters, DEAD_LETTERS_SCHEMA),
        )

    def _ensure(self, identifier: str, schema: pa.Schema) -> Table:
        labels = self.labels.get(identifier, {})
        try:
            table = self.catalog.load_table(identifier)
        except NoSuchTableError:
            self.before_write(identifier)
            with contextlib.suppress(NamespaceAlreadyExistsError):
                self.catalog.create_namespace(identifier.rsplit(".", 1)[0])
            try:
                return self.catalog.create_table(identifier, schema=schema, properties=labels)
            except TableAlreadyExistsError:
                table = self.catalog.load_table(identifier)
        if any(table.properties.get(key) != value for key, value in labels.items()):
            self.before_write(identifier)
            with table.transaction() as txn:
                txn.set_properties(labels)
            table = self.catalog.load_table(identifier)
        return table

    # -- recovery ---------------------------------------------------------------------------------------

    def committed_batch(self) -> int:
        """The last batch the documents table (the commit point) holds; 0 before the first."""
        documents = self.catalog.load_table(self.names.documents)
        for snapshot in ancestors_of(documents.current_snapshot(), documents.metadata):
            batch = batch_of(snapshot)
            if batch is not None:
                return batch
        return 0

    def recover(self) -> int:
        """Undo the side-table commits of a batch the documents table never committed; return the last
        committed batch."""
        self.ensure()
        committed = self.committed_batch()
        for identifier in (self.names.chunks, self.names.dead_letters):
            table = self.catalog.load_table(identifier)
            ancestry = list(ancestors_of(table.current_snapshot(), table.metadata))
            written = [s for s in ancestry if batch_of(s) is not None]
            if not written or (batch_of(written[0]) or 0) <= committed:
                continue
            self.before_write(identifier)
            target = next((s for s in written if (batch_of(s) or 0) <= committed), None)
            if target is not None:
                table.manage_snapshots().rollback_to_snapshot(target.snapshot_id).commit()
            else:  # nothing of this table was ever committed: empty it
                table.delete(AlwaysTrue(), snapshot_properties={BATCH_PROPERTY: str(committed)})
        return committed

    def known(self) -> dict[str, Known]:
        """Source URI -> what the tables hold for it (documents and dead letters)."""
        found: dict[str, Known] = {}
        for identifier, dead in ((self.names.documents, False), (self.names.dead_letters, True)):
            table = self.catalog.load_table(identifier)
            if table.current_snapshot() is None:
                continue
            rows = table.scan(selected_fields=("source_uri", "document_id", "sha256")).to_arrow()
            if identifier == self.names.documents:
                rows = rows.group_by(["source_uri", "document_id", "sha256"]).aggregate([])
            for uri, document_id, sha in zip(
                rows["source_uri"].to_pylist(),
                rows["document_id"].to_pylist(),
                rows["sha256"].to_pylist(),
                strict=True,
            ):
                found[uri] = Known(document_id, sha, dead)
        return found

    # -- the batch commit -------------------------------------------------------------------------------

    def commit(
        self,
        batch: int,
        *,
        removed: Iterable[str],
        removed_dead: Iterable[str],
        documents: pa.Table,
        chunks: pa.Table,
        dead_letters: pa.Table,
    ) -> None:
        """Replace the rows of ``removed`` documents (and ``removed_dead`` dead letters) by the new rows,
        one transaction per table, the documents table last."""
        removed_ids = sorted(set(removed))
        removed_dead_ids = sorted(set(removed_dead))
        self._replace(self.names.chunks, batch, removed_ids, chunks, always=False)
        self._replace(self.names.dead_letters, batch, removed_dead_ids, dead_letters, always=False)
        self._replace(self.names.documents, batch, removed_ids, documents, always=True)

    def _replace(
        self, identifier: str, batch: int, removed: list[str], rows: pa.Table, *, always: bool
    ) -> None:
        if not removed and rows.num_rows == 0 and not always:
            return
        self.before_write(identifier)
        table = self.catalog.load_table(identifier)
        properties = {BATCH_PROPERTY: str(batch)}
        with table.transaction() as txn:
            if removed:
                # pyiceberg's predicates are pydantic models whose constructors mypy does not see.
                txn.delete(In("document_id", removed), snapshot_properties=properties)  # type: ignore[call-arg, arg-type]
            if rows.num_rows:
                txn.append(rows, snapshot_properties=properties)
            elif always:  # the commit point advances even when the batch wrote no document rows
                with txn.update_snapshot(snapshot_properties=properties).fast_append():
                    pass


def row_count(table: Table) -> int:
    """Rows in the table's current snapshot (from its summary; a scan when the summary lacks it)."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return 0
    total = snapshot.summary.additional_properties.get("total-records") if snapshot.summary else None
    return int(total) if total is not None else table.scan().to_arrow().num_rows
