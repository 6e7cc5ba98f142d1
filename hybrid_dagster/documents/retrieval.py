"""Retrieval inside the plane: the chunks of one structured row, with their sources.

Correctness rule: this returns document text, so it runs inside the plane that holds the tables (plane
work, a notebook on the plane's machines); nothing here reports to the orchestrator.
"""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, BooleanExpression, EqualTo

RETRIEVAL_COLUMNS = (
    "chunk_id",
    "document_id",
    "source_uri",
    "media_type",
    "chunk_index",
    "position_start",
    "position_end",
    "text",
    "link_column",
    "link_key",
)


def chunks_for(
    catalog: Catalog, chunks_table: str, link_key: str | int, *, link_column: str | None = None
) -> pa.Table:
    """The chunks linked to ``link_key`` (optionally only through ``link_column``), in document order.

    Example:
        >>> catalog = plane.load_catalog()
        >>> chunks_for(catalog, "clinical_documents.document_chunks", 12, link_column="encounter_id")
        pyarrow.Table  chunk_id: string, document_id: string, source_uri: string, ... text: string ...
    """
    # pyiceberg's predicates are pydantic models whose constructors mypy does not see.
    condition: BooleanExpression = EqualTo("link_key", str(link_key))  # type: ignore[call-arg, arg-type]
    if link_column is not None:
        condition = And(condition, EqualTo("link_column", link_column))  # type: ignore[call-arg, arg-type]
    table = catalog.load_table(chunks_table)
    rows = table.scan(row_filter=condition, selected_fields=RETRIEVAL_COLUMNS).to_arrow()
    return rows.sort_by([("source_uri", "ascending"), ("chunk_index", "ascending")])
