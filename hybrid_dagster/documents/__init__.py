"""Unstructured context beside the structured rows: PDFs, transcripts and logs into Iceberg, in a plane.

Readers (:mod:`~hybrid_dagster.documents.readers`) turn a file into units (pages, speaker turns, log
records); link rules tie a document to its structured row; chunking cuts units for retrieval; the
ingest (:func:`~hybrid_dagster.documents.ingest.ingest`) keeps the documents, chunks and dead-letter
tables in line with a folder or an ``s3://`` prefix, incrementally and exactly once; the worker runs it
inside a plane under Dagster Pipes.

Example:
    .. code-block:: python

        from hybrid_dagster.documents import IngestConfig, PathLink, ingest

        config = IngestConfig(
            source={"kind": "folder", "path": "/srv/eu/documents"},
            namespace="clinical_documents",
            link_rules=[PathLink(pattern=r"encounter-(\\d+)", column="encounter_id")],
        )
        report = ingest(config, plane.load_catalog(), before_write=guard)
"""

from hybrid_dagster.documents.chunking import Chunk as Chunk, ChunkingConfig as ChunkingConfig
from hybrid_dagster.documents.embedding import EmbeddingConfig as EmbeddingConfig
from hybrid_dagster.documents.errors import (
    DocumentError as DocumentError,
    UnreadableDocument as UnreadableDocument,
)
from hybrid_dagster.documents.ingest import (
    IngestConfig as IngestConfig,
    IngestReport as IngestReport,
    ingest as ingest,
)
from hybrid_dagster.documents.linking import (
    MetadataLink as MetadataLink,
    PathLink as PathLink,
    TextLink as TextLink,
)
from hybrid_dagster.documents.model import ExtractedDocument as ExtractedDocument, Unit as Unit
from hybrid_dagster.documents.readers import DocumentReader as DocumentReader, reader_for as reader_for
from hybrid_dagster.documents.retrieval import chunks_for as chunks_for
from hybrid_dagster.documents.sources import (
    LocalFolderConfig as LocalFolderConfig,
    S3PrefixConfig as S3PrefixConfig,
)
