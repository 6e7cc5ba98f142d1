"""Dagster component: documents, transcripts and logs of one source into Iceberg in a plane, in YAML."""

from __future__ import annotations

from typing import Annotated

import dagster as dg
from pydantic import Field, field_validator

from hybrid_dagster.assets.documents import document_assets
from hybrid_dagster.components.data_planes import ResolvedDataPlane, config_resolver
from hybrid_dagster.documents.chunking import ChunkingConfig
from hybrid_dagster.documents.embedding import EmbeddingConfig
from hybrid_dagster.documents.linking import MetadataLink, PathLink, TextLink
from hybrid_dagster.documents.sources import LocalFolderConfig, S3PrefixConfig
from hybrid_dagster.residency import Classification

ResolvedDocumentSource = Annotated[
    LocalFolderConfig | S3PrefixConfig,
    config_resolver(LocalFolderConfig, S3PrefixConfig, discriminator="kind"),
]
"""A document source in component YAML, told apart by ``kind``: folder or s3."""

ResolvedLinkRule = Annotated[
    PathLink | MetadataLink | TextLink,
    config_resolver(PathLink, MetadataLink, TextLink, discriminator="kind"),
]
"""A link rule in component YAML, told apart by ``kind``: path, metadata or text."""


class DocumentsComponent(dg.Component, dg.Model, dg.Resolvable):
    """Ingests PDFs, transcripts and logs into a documents and a chunks table inside one data plane.

    Builds the multi-asset of :func:`~hybrid_dagster.assets.documents.document_assets`. The plane's
    resource (key: its name with ``-`` replaced by ``_``) and ``residency_policy`` come from elsewhere,
    typically a :class:`~hybrid_dagster.components.DataPlanesComponent`.

    Example:
        .. code-block:: yaml

            # defs/eu_clinical_documents/defs.yaml
            type: hybrid_dagster.components.DocumentsComponent
            attributes:
              name: eu_clinical_documents
              plane: "{{ context.load_component('planes').plane('eu-onprem') }}"
              source: {kind: folder, path: /srv/eu/documents}
              namespace: clinical_documents
              classification: restricted
              link_rules:
                - {kind: path, pattern: "encounters/(\\\\d+)/", column: encounter_id}
                - {kind: metadata, field: patient_id, column: patient_id}
              chunk_size: 800
              chunk_overlap: 120
              deps: [clinical/encounters]
              key_prefix: [clinical]
              group_name: eu_clinical
              owners: ["team:clinical-data"]
    """

    name: str = Field(description="Name of the multi-asset (the op that runs the ingest).")
    plane: ResolvedDataPlane = Field(
        description=(
            "The data plane the ingest runs in and writes to: a template such as "
            "\"{{ context.load_component('planes').plane('eu-onprem') }}\" or the plane's attributes."
        )
    )
    source: ResolvedDocumentSource = Field(description="kind: folder (path) or s3 (uri, endpoint_url).")
    namespace: str = Field(description="Iceberg namespace of the documents, chunks and dead-letter tables.")
    classification: str = Field(
        default="restricted", description="public, internal, confidential or restricted (both assets)."
    )
    link_rules: list[ResolvedLinkRule] = Field(
        default_factory=list, description="Rules tying a document to its structured row; first match wins."
    )
    chunk_size: int = Field(default=1000, gt=0, description="Largest chunk, in characters.")
    chunk_overlap: int = Field(
        default=150, ge=0, description="Characters of whole sentences or turns repeated at a chunk's start."
    )
    embedding_dimensions: int | None = Field(
        default=None,
        ge=8,
        le=4096,
        description="Embed chunks with the local hashing model into this many floats; off when unset.",
    )
    deps: list[str] = Field(
        default_factory=list,
        description="Structured assets the documents belong to, e.g. clinical/encounters.",
    )
    key_prefix: list[str] = Field(default_factory=list, description="Asset key prefix of both assets.")
    documents_name: str = Field(default="documents", description="Documents table and asset name.")
    chunks_name: str = Field(default="document_chunks", description="Chunks table and asset name.")
    group_name: str | None = Field(default=None, description="Asset group.")
    owners: list[str] = Field(default_factory=list, description="Asset owners (team:... or e-mail).")
    batch_files: int = Field(default=200, gt=0, description="Changed files per Iceberg commit.")
    workers: int = Field(default=1, ge=1, description="Processes extracting text inside the plane.")
    min_linked_fraction: float = Field(
        default=0.0, ge=0, le=1, description="The documents_linked check warns below this share."
    )

    @field_validator("classification")
    @classmethod
    def _valid_classification(cls, value: str) -> str:
        return Classification.parse(value).value

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        assets = document_assets(
            name=self.name,
            source=self.source,
            plane=self.plane,
            namespace=self.namespace,
            classification=self.classification,
            link_rules=self.link_rules,
            chunking=ChunkingConfig(size=self.chunk_size, overlap=self.chunk_overlap),
            embedding=(
                EmbeddingConfig(dimensions=self.embedding_dimensions)
                if self.embedding_dimensions is not None
                else None
            ),
            key_prefix=self.key_prefix,
            documents_name=self.documents_name,
            chunks_name=self.chunks_name,
            deps=[dg.AssetKey.from_user_string(d) for d in self.deps],
            group_name=self.group_name,
            owners=self.owners,
            batch_files=self.batch_files,
            workers=self.workers,
            min_linked_fraction=self.min_linked_fraction,
        )
        return dg.Definitions(assets=[assets])
