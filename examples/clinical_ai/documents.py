"""Meridian Health's unstructured context: discharge letters, call transcripts and application logs.

They live on the EU on-prem plane beside the clinical tables (restricted, like the rows they belong
to), are linked to their encounters (path, file metadata, then ``encounter_id=`` in the text), and are
chunked for retrieval. ``encounter_context`` is the retrieval helper: it runs inside the plane, since
it returns text.

Wire into a code location with ``dg.Definitions(assets=[clinical_documents, ...])`` beside the CDC assets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg

from examples.clinical_ai.document_corpus import LINK_RULES
from examples.clinical_ai.planes import EU_ONPREM, HOME
from hybrid_dagster.assets.documents import document_assets
from hybrid_dagster.documents.chunking import ChunkingConfig
from hybrid_dagster.documents.retrieval import chunks_for
from hybrid_dagster.documents.sources import LocalFolderConfig
from hybrid_dagster.resources import DataPlane

DOCUMENTS_DIR = Path(os.environ.get("MERIDIAN_EU_DOCUMENTS", HOME / "planes" / "eu-onprem" / "documents"))
"""The folder inside the EU on-prem plane where the document systems drop their files."""

NAMESPACE = "clinical_documents"
CHUNKS_TABLE = f"{NAMESPACE}.document_chunks"

ENCOUNTERS = dg.AssetKey(["clinical", "encounters"])


def clinical_document_assets(plane: DataPlane, folder: Path) -> dg.AssetsDefinition:
    """The example's document assets for ``folder`` inside ``plane`` (the demo builds its own home's)."""
    return document_assets(
        name="eu_clinical_documents",
        source=LocalFolderConfig(path=str(folder)),
        plane=plane,
        namespace=NAMESPACE,
        classification="restricted",
        link_rules=LINK_RULES,
        chunking=ChunkingConfig(size=800, overlap=120),
        deps=[ENCOUNTERS],
        key_prefix=["clinical"],
        group_name="eu_clinical",
        owners=["team:clinical-data"],
        min_linked_fraction=0.8,
    )


clinical_documents = clinical_document_assets(EU_ONPREM, DOCUMENTS_DIR)
"""Discharge letters, call transcripts and logs of the EU on-prem plane (``clinical/documents``,
``clinical/document_chunks``)."""


def encounter_context(plane: DataPlane, encounter_id: int) -> list[dict[str, Any]]:
    """The chunks of one encounter's documents with their sources (URI, media type, position), in order.

    Runs inside the plane (it returns text), e.g. in the plane work of a retrieval-augmented model.

    Example:
        >>> for chunk in encounter_context(EU_ONPREM, 12):
        ...     print(chunk["source_uri"], chunk["position_start"], chunk["text"][:60])
    """
    rows = chunks_for(plane.load_catalog(), CHUNKS_TABLE, encounter_id, link_column="encounter_id")
    return rows.to_pylist()
