"""The document ingest that runs inside a data plane.

Started by :func:`hybrid_dagster.assets.documents.document_assets` through ``DataPlane.run`` (Dagster
Pipes): it reads the job spec from the Pipes extras, ingests the source into the plane's catalog after
the residency guard, and reports only counts, the table names and schemas, and asset checks. Also
runnable by hand (``python -m hybrid_dagster.documents.worker --spec job.json --plane plane.json``),
which prints the report as JSON; the crash tests SIGKILL this process.

Correctness rules: every table write is preceded by :func:`hybrid_dagster.guard.check_write` with the
write intent of the asset that owns the table (the documents asset owns the dead letters); under Pipes
the intents computed from the run's asset graph replace the spec's own; nothing reported carries
document text, file names or link keys.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster_pipes import open_dagster_pipes
from pydantic import BaseModel, Field

from hybrid_dagster.documents.errors import DocumentError
from hybrid_dagster.documents.ingest import IngestConfig, IngestReport, ingest
from hybrid_dagster.documents.tables import CHUNKS_SCHEMA, DEAD_LETTERS_SCHEMA, DOCUMENTS_SCHEMA
from hybrid_dagster.plane.contract import ResidencyExtras
from hybrid_dagster.plane.errors import errors_kept_in_plane
from hybrid_dagster.residency import Classification, ResidencyPolicy, TransferRoute
from hybrid_dagster.residency.guard import WriteIntent, check_write, recorded_residency_metadata
from hybrid_dagster.residency.labels import label_for_write
from hybrid_dagster.resources.data_plane import DataPlane

EXTRAS_KEY = "documents"


class AssetTarget(BaseModel):
    """The asset a table belongs to, and its residency."""

    asset_key: str = Field(description="User string of the asset key, e.g. 'clinical/documents'.")
    classification: str = Field(description="public, internal, confidential or restricted.")
    home_plane: str = Field(description="The plane the asset is pinned to.")
    data_jurisdictions: list[str] = Field(description="Jurisdictions the documents legally live in.")

    def intent(self) -> WriteIntent:
        return WriteIntent(
            asset=self.asset_key,
            classification=Classification.parse(self.classification),
            home_plane=self.home_plane,
            data_jurisdictions=frozenset(self.data_jurisdictions),
        )


class DocumentJobSpec(BaseModel):
    """Everything the plane-side ingest needs; no secrets (S3 credentials come from the plane)."""

    ingest: IngestConfig
    documents: AssetTarget
    chunks: AssetTarget
    routes: list[dict[str, Any]] = Field(default_factory=list)
    min_linked_fraction: float = 0.0


def run_job(
    spec: DocumentJobSpec, plane: DataPlane, intents: Mapping[str, WriteIntent] | None = None
) -> IngestReport:
    """Ingest ``spec`` into ``plane`` with the write guard on every table."""
    if not spec.documents.data_jurisdictions or not spec.chunks.data_jurisdictions:
        raise DocumentError("document job spec gives no data_jurisdictions: the guard refuses to guess")
    policy = ResidencyPolicy(routes=[TransferRoute(**r) for r in spec.routes])
    given = intents or {}
    documents_intent = given.get(spec.documents.asset_key) or spec.documents.intent()
    chunks_intent = given.get(spec.chunks.asset_key) or spec.chunks.intent()
    names = spec.ingest.names
    by_table = {
        names.documents: documents_intent,
        names.dead_letters: documents_intent,
        names.chunks: chunks_intent,
    }

    def guard(identifier: str) -> None:
        intent = by_table.get(identifier)
        if intent is None:
            raise DocumentError(f"no write intent for table {identifier}: refusing to write")
        check_write(intent, plane, policy)

    labels = {identifier: residency_label(intent, plane) for identifier, intent in by_table.items()}
    return ingest(spec.ingest, plane.load_catalog(), before_write=guard, labels=labels)


def residency_label(intent: WriteIntent, plane: DataPlane) -> dict[str, str]:
    """Iceberg table properties that label a table with its plane, jurisdiction and classification.

    Example:
        >>> residency_label(intent, eu_plane)["hybrid.classification"]
        'restricted'
    """
    label = label_for_write(intent.asset, intent.classification, intent.data_jurisdictions, plane)
    return label.properties()


def _columns(schema: Any) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": str(f.type), "constraints": {"nullable": f.nullable}} for f in schema]


def report_to_pipes(pipes: Any, spec: DocumentJobSpec, report: IngestReport, plane: DataPlane) -> None:
    """Materializations and checks for the two assets: counts, table names and schemas only."""
    names, counts = spec.ingest.names, report.tables
    linked = counts["linked_documents"] / counts["documents"] if counts["documents"] else 0.0
    run_counts: dict[str, Any] = {
        "files_seen": report.files_seen,
        "files_unchanged": report.files_unchanged,
        "files_added": report.files_added,
        "files_changed": report.files_changed,
        "files_deleted": report.files_deleted,
        "dead_letters_new": report.dead_letters_new,
        "bytes_read": report.bytes_read,
        "iceberg_batches": report.batches,
    }
    for target, identifier, schema, rows, extra in (
        (
            spec.documents,
            names.documents,
            DOCUMENTS_SCHEMA,
            counts["document_rows"],
            {
                "documents": counts["documents"],
                "linked_documents": counts["linked_documents"],
                "linked_fraction": float(linked),
                "dead_letters": counts["dead_letters"],
                "units_written": report.units_written,
                "hybrid/dead_letter_table": f"{plane.name}.{names.dead_letters}",
                "dead_letter_columns": {"columns": _columns(DEAD_LETTERS_SCHEMA)},
            },
        ),
        (
            spec.chunks,
            names.chunks,
            CHUNKS_SCHEMA,
            counts["chunk_rows"],
            {"chunks_written": report.chunks_written, "orphan_chunks": counts["orphan_chunks"]},
        ),
    ):
        residency = recorded_residency_metadata(
            Classification.parse(target.classification), {*target.data_jurisdictions, plane.jurisdiction}
        )
        metadata: dict[str, Any] = {
            **{key: {"raw_value": value, "type": "text"} for key, value in residency.items()},
            "dagster/table_name": {"raw_value": f"{plane.name}.{identifier}", "type": "text"},
            "dagster/row_count": {"raw_value": rows, "type": "int"},
            "dagster/column_schema": {"raw_value": {"columns": _columns(schema)}, "type": "table_schema"},
            **{k: _typed(v) for k, v in {**run_counts, **extra}.items()},
        }
        pipes.report_asset_materialization(metadata=metadata, asset_key=target.asset_key)
    pipes.report_asset_check(
        check_name="no_dead_letters",
        passed=counts["dead_letters"] == 0,
        severity="WARN",
        asset_key=spec.documents.asset_key,
        metadata={"dead_letters": {"raw_value": counts["dead_letters"], "type": "int"}},
    )
    pipes.report_asset_check(
        check_name="documents_linked",
        passed=linked >= spec.min_linked_fraction,
        severity="WARN",
        asset_key=spec.documents.asset_key,
        metadata={
            "linked_fraction": {"raw_value": float(linked), "type": "float"},
            "min_linked_fraction": {"raw_value": float(spec.min_linked_fraction), "type": "float"},
        },
    )
    pipes.report_asset_check(
        check_name="chunks_point_to_documents",
        passed=counts["orphan_chunks"] == 0,
        asset_key=spec.chunks.asset_key,
        metadata={"orphan_chunks": {"raw_value": counts["orphan_chunks"], "type": "int"}},
    )


def _typed(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"raw_value": value, "type": "bool"}
    if isinstance(value, int):
        return {"raw_value": value, "type": "int"}
    if isinstance(value, float):
        return {"raw_value": value, "type": "float"}
    if isinstance(value, dict):
        return {"raw_value": value, "type": "table_schema"}
    return {"raw_value": str(value), "type": "text"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybrid_dagster.documents.worker")
    parser.add_argument("--spec", help="JSON job spec file (standalone mode); without it, read Pipes extras.")
    parser.add_argument("--plane", help="JSON plane config file (standalone; default: from environment).")
    args = parser.parse_args(argv)
    if args.spec:
        spec = DocumentJobSpec.model_validate_json(Path(args.spec).read_text())
        plane = (
            DataPlane.from_config(json.loads(Path(args.plane).read_text()))
            if args.plane
            else DataPlane.from_env()
        )
        json.dump(run_job(spec, plane).as_dict(), sys.stdout)
        sys.stdout.write("\n")
        return 0

    with open_dagster_pipes() as pipes:
        spec = DocumentJobSpec.model_validate(pipes.get_extra(EXTRAS_KEY))
        plane = DataPlane.from_env()
        contract = ResidencyExtras.from_extras(pipes.extras)
        regulated = contract.clearance.is_regulated or any(
            Classification.parse(t.classification).is_regulated for t in (spec.documents, spec.chunks)
        )
        intents = {key: i.to_intent() for key, i in contract.intents.items()}
        with errors_kept_in_plane(regulated, where=f"document ingest on plane {plane.name}"):
            report = run_job(spec, plane, intents)
        pipes.log.info(
            f"documents: {report.files_seen} files seen, {report.files_added} added, "
            f"{report.files_changed} changed, {report.files_deleted} deleted, "
            f"{report.dead_letters_new} new dead letters, {report.batches} batches"
        )
        report_to_pipes(pipes, spec, report, plane)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
