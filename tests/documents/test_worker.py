"""The plane-side worker: residency labels on the tables and the write guard on every write."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_dagster.documents.worker import AssetTarget, DocumentJobSpec, run_job
from hybrid_dagster.errors import ResidencyViolation
from tests.documents.files import LOG, config_for
from tests.planes import make_plane


def spec_for(root: Path) -> DocumentJobSpec:
    def target(asset: str) -> AssetTarget:
        return AssetTarget(
            asset_key=asset, classification="restricted", home_plane="eu-onprem", data_jurisdictions=["EU"]
        )

    return DocumentJobSpec(
        ingest=config_for(root), documents=target("c/documents"), chunks=target("c/chunks")
    )


def test_tables_carry_their_residency_label(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text(LOG)
    plane = make_plane(tmp_path / "warehouse")
    report = run_job(spec_for(tmp_path), plane)
    assert report.tables["documents"] == 1
    catalog = plane.load_catalog()
    for identifier, asset in (
        ("docs.documents", "c/documents"),
        ("docs.document_chunks", "c/chunks"),
        ("docs._document_dead_letters", "c/documents"),
    ):
        properties = catalog.load_table(identifier).properties
        assert properties["hybrid.plane"] == "eu-onprem" and properties["hybrid.jurisdiction"] == "EU"
        assert properties["hybrid.classification"] == "restricted" and properties["hybrid.asset"] == asset


def test_the_guard_refuses_eu_documents_in_a_us_plane(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text(LOG)
    us = make_plane(tmp_path / "warehouse", name="us-cloud", jurisdiction="US")
    with pytest.raises(ResidencyViolation, match="'c/documents'"):
        run_job(spec_for(tmp_path), us)
    assert not us.load_catalog().table_exists("docs.documents")
