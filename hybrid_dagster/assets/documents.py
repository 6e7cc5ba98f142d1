"""Asset factory: documents, transcripts and logs of one source, ingested into Iceberg inside a plane.

Correctness rules: the ingest runs inside the plane (``DataPlane.run``, Dagster Pipes); the orchestrator
receives counts, table names, schemas and check results only, screened like any regulated work; both
assets carry the ``hybrid/plane`` and ``hybrid/classification`` tags, and the work's table writes pass
the run-time write guard.
"""

from collections.abc import Sequence

import dagster as dg

from hybrid_dagster.documents.chunking import ChunkingConfig
from hybrid_dagster.documents.embedding import EmbeddingConfig
from hybrid_dagster.documents.ingest import IngestConfig
from hybrid_dagster.documents.linking import MetadataLink, PathLink, TextLink
from hybrid_dagster.documents.sources import LocalFolderConfig, S3PrefixConfig
from hybrid_dagster.documents.worker import EXTRAS_KEY
from hybrid_dagster.pinning import pinned
from hybrid_dagster.residency import Classification, Jurisdiction, ResidencyPolicy
from hybrid_dagster.resources.data_plane import DataPlane

DOCUMENT_TEXT_METADATA = ("dagster/table_name", "hybrid/dead_letter_table")
"""Text metadata keys the ingest reports: table identifiers only."""

DOCUMENT_METADATA_KEYS = (
    "files_seen",
    "files_unchanged",
    "files_added",
    "files_changed",
    "files_deleted",
    "dead_letters_new",
    "bytes_read",
    "iceberg_batches",
    "documents",
    "linked_documents",
    "linked_fraction",
    "dead_letters",
    "units_written",
    "dead_letter_columns",
    "chunks_written",
    "orphan_chunks",
    "min_linked_fraction",
)
"""Numeric metadata the ingest reports; declared so that regulated ingests may report them."""


def document_assets(
    *,
    name: str,
    source: LocalFolderConfig | S3PrefixConfig,
    plane: DataPlane,
    namespace: str,
    classification: str = "restricted",
    link_rules: Sequence[PathLink | MetadataLink | TextLink] = (),
    chunking: ChunkingConfig | None = None,
    embedding: EmbeddingConfig | None = None,
    key_prefix: Sequence[str] = (),
    documents_name: str = "documents",
    chunks_name: str = "document_chunks",
    deps: Sequence[dg.AssetKey | str] = (),
    group_name: str | None = None,
    owners: Sequence[str] = (),
    plane_resource_key: str | None = None,
    policy_resource_key: str | None = "residency_policy",
    source_jurisdiction: str | None = None,
    batch_files: int = 200,
    workers: int = 1,
    min_linked_fraction: float = 0.0,
) -> dg.AssetsDefinition:
    """A multi-asset: the documents table (one row per page, turn or log record, plus a dead-letter
    table) and the chunks table, both in ``plane``'s catalog under ``namespace``.

    Each run is incremental (unchanged files are skipped by their SHA-256, changed ones replaced, deleted
    ones removed; one Iceberg commit per table and batch, exactly once under a crash). Materializations
    carry ``dagster/table_name``, ``dagster/row_count``, ``dagster/column_schema`` and file counts; the
    checks ``no_dead_letters`` (warn), ``documents_linked`` (warn, share of documents linked to a row at
    least ``min_linked_fraction``) and ``chunks_point_to_documents`` run with it. ``deps`` names the
    structured assets the documents belong to (lineage; their classification flows into the documents).

    Example:
        .. code-block:: python

            letters = document_assets(
                name="eu_clinical_documents",
                source=LocalFolderConfig(path="/srv/eu/documents"),
                plane=eu_onprem,
                namespace="clinical_documents",
                link_rules=[PathLink(pattern=r"encounter-(\\d+)", column="encounter_id")],
                deps=[dg.AssetKey(["clinical", "encounters"])],
                key_prefix=["clinical"],
                owners=["team:clinical-data"],
            )
    """
    Classification.parse(classification)
    resource_key = plane_resource_key or plane.name.replace("-", "_")
    data_jurisdiction = Jurisdiction.parse(source_jurisdiction or plane.jurisdiction).value
    documents_key = dg.AssetKey([*key_prefix, documents_name])
    chunks_key = dg.AssetKey([*key_prefix, chunks_name])
    config = IngestConfig(
        source=source,
        namespace=namespace,
        documents_table=documents_name,
        chunks_table=chunks_name,
        dead_letter_table=f"_{documents_name}_dead_letters",
        link_rules=list(link_rules),
        chunking=chunking or ChunkingConfig(),
        embedding=embedding,
        batch_files=batch_files,
        workers=workers,
    )
    origin = "an s3:// prefix" if isinstance(source, S3PrefixConfig) else "a plane-local folder"
    kinds = {"iceberg", "pdf", "s3" if isinstance(source, S3PrefixConfig) else "file"}
    specs = [
        dg.AssetSpec(
            key=documents_key,
            description=(
                f"Text of the PDFs, transcripts and logs of {origin}, one row per page, turn or log "
                f"record, in Iceberg {namespace}.{documents_name} on {plane.name}; unreadable files in "
                f"{namespace}.{config.dead_letter_table}."
            ),
            deps=list(deps),
            group_name=group_name,
            owners=list(owners),
            **pinned(
                plane,
                classification,
                kinds=kinds,
                metadata={"dagster/table_name": f"{plane.name}.{namespace}.{documents_name}"},
            ),
        ),
        dg.AssetSpec(
            key=chunks_key,
            description=(
                f"Retrieval chunks of {documents_key.to_user_string()} "
                f"(Iceberg {namespace}.{chunks_name} on {plane.name}), each pointing to its document "
                "and position" + (f"; embeddings by {embedding.model_name}" if embedding else "") + "."
            ),
            deps=[documents_key],
            group_name=group_name,
            owners=list(owners),
            **pinned(
                plane,
                classification,
                kinds={"iceberg", "pyarrow"},
                metadata={"dagster/table_name": f"{plane.name}.{namespace}.{chunks_name}"},
            ),
        ),
    ]
    check_specs = [
        dg.AssetCheckSpec("no_dead_letters", asset=documents_key, description="Every file could be read."),
        dg.AssetCheckSpec(
            "documents_linked",
            asset=documents_key,
            description=f"At least {min_linked_fraction:.0%} of documents are linked to a structured row.",
        ),
        dg.AssetCheckSpec(
            "chunks_point_to_documents", asset=chunks_key, description="Every chunk's document exists."
        ),
    ]

    @dg.multi_asset(
        name=name,
        specs=specs,
        check_specs=check_specs,
        can_subset=False,
        required_resource_keys={resource_key} | ({policy_resource_key} if policy_resource_key else set()),
    )
    def _documents(context: dg.AssetExecutionContext):  # type: ignore[no-untyped-def]
        target: DataPlane = getattr(context.resources, resource_key)
        policy = _policy(context, policy_resource_key)
        spec = {
            "ingest": config.model_dump(mode="json"),
            "documents": _target(documents_key, classification, plane, data_jurisdiction),
            "chunks": _target(chunks_key, classification, plane, data_jurisdiction),
            "routes": [r.model_dump() for r in policy.routes],
            "min_linked_fraction": min_linked_fraction,
        }
        invocation = target.run(
            context,
            module="hybrid_dagster.documents.worker",
            extras={EXTRAS_KEY: spec},
            allowed_text_metadata=DOCUMENT_TEXT_METADATA,
            allowed_metadata_keys=DOCUMENT_METADATA_KEYS,
            known_planes=[plane],
        )
        yield from invocation.get_results()

    return _documents


def _target(key: dg.AssetKey, classification: str, plane: DataPlane, jurisdiction: str) -> dict[str, object]:
    return {
        "asset_key": key.to_user_string(),
        "classification": classification,
        "home_plane": plane.name,
        "data_jurisdictions": [jurisdiction],
    }


def _policy(context: dg.AssetExecutionContext, key: str | None) -> ResidencyPolicy:
    policy = getattr(context.resources, key, None) if key else None
    return policy if isinstance(policy, ResidencyPolicy) else ResidencyPolicy()
