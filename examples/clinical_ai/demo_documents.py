"""Demo step: discharge letters, call transcripts and logs of the EU plane into Iceberg, linked to encounters.

``run_demo(home)`` writes the synthetic documents into the EU on-prem plane's document folder (linked to
the encounters of the clinical Iceberg table when the CDC step ran, else to synthetic ones), runs the
document assets through Dagster (the ingest runs inside the plane, via Pipes) and returns the counts
the orchestrator received. Standalone: ``python -m examples.clinical_ai.demo_documents --home DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from examples.clinical_ai.document_corpus import Encounter, synthetic_encounters, write_corpus
from examples.clinical_ai.documents import ENCOUNTERS, clinical_document_assets, encounter_context
from hybrid_dagster.pinning import pinned
from hybrid_dagster.residency import ResidencyPolicy
from hybrid_dagster.resources import DataPlane

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
DOCUMENTS = dg.AssetKey(["clinical", "documents"])
CHUNKS = dg.AssetKey(["clinical", "document_chunks"])


def eu_plane(home: Path) -> DataPlane:
    """The EU on-prem plane of the example, with its warehouse under ``home``."""
    return DataPlane(
        name="eu-onprem",
        jurisdiction="EU",
        region="fra-dc2",
        location="on_prem",
        warehouse=f"file://{home / 'planes' / 'eu-onprem' / 'warehouse'}",
        owners=["team:platform"],
    )


def encounters_of(plane: DataPlane, limit: int = 60) -> list[Encounter]:
    """Encounters of the clinical table when CDC filled it (ids only), else synthetic ones."""
    catalog = plane.load_catalog()
    if catalog.table_exists("clinical.encounters"):
        rows = catalog.load_table("clinical.encounters").scan(
            selected_fields=("encounter_id", "patient_id"), limit=limit
        )
        found = [Encounter(int(r["encounter_id"]), int(r["patient_id"])) for r in rows.to_arrow().to_pylist()]
        if found:
            return found
    return synthetic_encounters(limit // 2)


def run_demo(home: Path) -> dict[str, Any]:
    """Ingest the example's documents under ``home``; the summary.json section ``documents``.

    Example:
        >>> run_demo(Path(".demo"))["documents"]["files"]
        82
    """
    home = home.resolve()
    plane = eu_plane(home)
    folder = home / "planes" / "eu-onprem" / "documents"
    if not folder.is_dir():
        encounters = encounters_of(plane)
        write_corpus(folder, encounters, letters=min(40, len(encounters)), transcripts=30, logs=12)
    encounters_spec = dg.AssetSpec(ENCOUNTERS, **pinned(plane.name, "restricted", kinds={"iceberg"}))
    defs = dg.Definitions(
        assets=[encounters_spec, clinical_document_assets(plane, folder)],
        resources={"eu_onprem": plane, "residency_policy": ResidencyPolicy()},
    )
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[DOCUMENTS, CHUNKS], run_config=QUIET
    )
    by_key = {
        m.asset_key: m.metadata for m in result.asset_materializations_for_node("eu_clinical_documents")
    }
    documents, chunks = by_key[DOCUMENTS], by_key[CHUNKS]
    files = int(documents["documents"].value) + int(documents["dead_letters"].value)  # type: ignore[arg-type]
    return {
        "documents": {
            "files": files,
            "chunks": int(chunks["dagster/row_count"].value),  # type: ignore[arg-type]
            "dead_letters": int(documents["dead_letters"].value),  # type: ignore[arg-type]
            "linked_fraction": round(float(documents["linked_fraction"].value), 4),  # type: ignore[arg-type]
        }
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.clinical_ai.demo_documents")
    parser.add_argument("--home", default=".demo", help="Folder of the demo's planes and Dagster instance.")
    args = parser.parse_args(argv)
    home = Path(args.home)
    summary = run_demo(home)
    print(json.dumps(summary, indent=2))
    # Retrieval runs inside the plane (it returns text): here, only how much context one encounter has.
    plane = eu_plane(home.resolve())
    first = encounters_of(plane)[0]
    context = encounter_context(plane, first.encounter_id)
    sources = sorted({c["source_uri"].rsplit("/", 1)[-1] for c in context})
    print(f"encounter {first.encounter_id}: {len(context)} chunks from {len(sources)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
