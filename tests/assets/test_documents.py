"""The document asset factory, materialized for real: a folder -> Iceberg inside a plane, via Pipes."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from hybrid_dagster.assets.documents import document_assets
from hybrid_dagster.documents.linking import PathLink
from hybrid_dagster.documents.sources import LocalFolderConfig
from hybrid_dagster.pinning import pinned
from hybrid_dagster.residency import ResidencyPolicy
from hybrid_dagster.resources import DataPlane
from hybrid_dagster.validation import validate_definitions
from tests.documents.files import LOG, PAGES, VTT, make_pdf
from tests.planes import make_plane

DOCUMENTS = dg.AssetKey(["clinical", "documents"])
CHUNKS = dg.AssetKey(["clinical", "document_chunks"])
ENCOUNTERS = dg.AssetKey(["clinical", "encounters"])


def documents_defs(folder: Path, eu: DataPlane, target: DataPlane | None = None) -> dg.Definitions:
    assets = document_assets(
        name="clinical_documents",
        source=LocalFolderConfig(path=str(folder)),
        plane=eu,
        namespace="clinical_documents",
        link_rules=[PathLink(pattern=r"encounter-(\d+)", column="encounter_id")],
        deps=[ENCOUNTERS],
        key_prefix=["clinical"],
        group_name="eu_clinical",
        owners=["team:clinical-data"],
        min_linked_fraction=0.5,
    )
    encounters = dg.AssetSpec(ENCOUNTERS, **pinned("eu-onprem", "restricted", kinds={"iceberg"}))
    return dg.Definitions(
        assets=[encounters, assets],
        resources={"eu_onprem": target or eu, "residency_policy": ResidencyPolicy()},
    )


def folder_with_files(tmp_path: Path) -> Path:
    folder = tmp_path / "documents"
    (folder / "encounter-12").mkdir(parents=True)
    (folder / "encounter-12" / "letter.pdf").write_bytes(make_pdf(PAGES))
    (folder / "encounter-12" / "call.vtt").write_text(VTT)
    (folder / "ward.log").write_text(LOG)
    (folder / "fax.pdf").write_bytes(b"%PDF-1.4 cut off")
    return folder


def test_specs_carry_kinds_tags_owners_table_names_and_checks(tmp_path: Path) -> None:
    eu = make_plane(tmp_path / "eu")
    defs = documents_defs(tmp_path, eu)
    graph = defs.resolve_asset_graph()
    documents, chunks = graph.get(DOCUMENTS), graph.get(CHUNKS)
    where = {"eu-onprem", "EU"}  # plane and jurisdiction, shown on the lineage graph's nodes
    assert documents.kinds == {"iceberg", "pdf", "file"} | where
    assert chunks.kinds == {"iceberg", "pyarrow"} | where
    for node in (documents, chunks):
        assert node.tags["hybrid/plane"] == "eu-onprem" and node.tags["hybrid/classification"] == "restricted"
        assert node.owners == ["team:clinical-data"] and node.group_name == "eu_clinical"
    assert documents.metadata["dagster/table_name"] == "eu-onprem.clinical_documents.documents"
    assert ENCOUNTERS in documents.parent_keys and DOCUMENTS in chunks.parent_keys
    assert {(c.asset_key, c.name) for c in graph.asset_check_keys} == {
        (DOCUMENTS, "no_dead_letters"),
        (DOCUMENTS, "documents_linked"),
        (CHUNKS, "chunks_point_to_documents"),
    }
    assert validate_definitions(defs).ok


def test_materialization_reports_counts_schemas_checks_and_never_text(tmp_path: Path) -> None:
    folder = folder_with_files(tmp_path)
    eu = make_plane(tmp_path / "eu")
    defs = documents_defs(folder, eu)
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, asset_selection=[DOCUMENTS, CHUNKS])
    assert result.success
    by_key = {m.asset_key: m.metadata for m in result.asset_materializations_for_node("clinical_documents")}
    documents, chunks = by_key[DOCUMENTS], by_key[CHUNKS]
    assert documents["dagster/table_name"].value == "eu-onprem.clinical_documents.documents"
    assert documents["dagster/row_count"].value == 3 + 3 + 4
    assert "text" in [c.name for c in documents["dagster/column_schema"].schema.columns]
    assert (documents["documents"].value, documents["dead_letters"].value) == (3, 1)
    assert documents["linked_fraction"].value == 2 / 3
    assert documents["hybrid/classification"].value == "restricted"
    assert chunks["dagster/row_count"].value > 0 and chunks["orphan_chunks"].value == 0
    checks = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }
    assert checks == {"no_dead_letters": False, "documents_linked": True, "chunks_point_to_documents": True}

    stored = eu.load_catalog().load_table("clinical_documents.documents").scan().to_arrow()
    assert "Łukasz Çelik" in "\n".join(stored["text"].to_pylist())
    log = "\n".join(dg.serialize_value(r) for r in instance.all_logs(result.run_id))
    for secret in ("Łukasz", "Zoë", "Troponin", "ward code not mapped", "encounter-12", "letter.pdf"):
        assert secret not in log, f"{secret!r} reached the orchestrator"

    (folder / "fax.pdf").unlink()
    again = job.execute_in_process(instance=instance, asset_selection=[DOCUMENTS, CHUNKS])
    by_key = {m.asset_key: m.metadata for m in again.asset_materializations_for_node("clinical_documents")}
    assert (by_key[DOCUMENTS]["files_unchanged"].value, by_key[DOCUMENTS]["files_deleted"].value) == (3, 1)
    assert by_key[DOCUMENTS]["dead_letters"].value == 0


def test_runtime_guard_stops_restricted_documents_in_a_plane_of_another_jurisdiction(tmp_path: Path) -> None:
    folder = folder_with_files(tmp_path)
    eu = make_plane(tmp_path / "eu")
    us = make_plane(tmp_path / "us", "us-cloud", "US")
    defs = documents_defs(folder, eu, target=us)
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        raise_on_error=False, asset_selection=[DOCUMENTS, CHUNKS]
    )
    assert not result.success
    failure = result.failure_data_for_node("clinical_documents")
    assert failure is not None and failure.error is not None
    assert "ResidencyViolation" in str(failure.error) or "ResidencyViolation" in str(failure.error.cause)
    assert not us.load_catalog().table_exists("clinical_documents.documents")
