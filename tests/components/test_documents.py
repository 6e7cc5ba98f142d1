"""DocumentsComponent: a document source declared in YAML beside the planes component."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from hybrid_dagster.components import DataPlanesComponent, DocumentsComponent
from hybrid_dagster.documents.linking import MetadataLink, PathLink, TextLink
from hybrid_dagster.documents.sources import LocalFolderConfig, S3PrefixConfig
from hybrid_dagster.resources import DataPlane
from tests.components import defs_tree, error_chain
from tests.documents.files import LOG

PLANES_YAML = """
type: hybrid_dagster.components.DataPlanesComponent
attributes:
  planes:
    - {name: eu-onprem, jurisdiction: EU, region: fra-dc2, location: on_prem,
       warehouse: "file://{{ context.project_root }}/planes/eu-onprem"}
"""

DOCUMENTS_YAML = """
type: hybrid_dagster.components.DocumentsComponent
attributes:
  name: eu_documents
  plane: "{{ context.load_component('planes').plane('eu-onprem') }}"
  source: {kind: folder, path: "{{ context.project_root }}/documents"}
  namespace: clinical_documents
  classification: {classification}
  link_rules:
    - {kind: path, pattern: "encounter-(\\\\d+)", column: encounter_id}
    - {kind: metadata, field: encounter_id, column: encounter_id}
    - {kind: text, pattern: "encounter_id=(\\\\d+)", column: encounter_id}
  chunk_size: 400
  chunk_overlap: 50
  embedding_dimensions: 16
  deps: [clinical/encounters]
  key_prefix: [clinical]
  group_name: eu_clinical
  owners: ["team:clinical-data"]
  min_linked_fraction: 0.5
"""

S3_YAML = """
type: hybrid_dagster.components.DocumentsComponent
attributes:
  name: us_calls
  plane: {name: us-cloud, jurisdiction: US, region: us-east-1, location: cloud,
          warehouse: "file:///srv/us/warehouse"}
  source: {kind: s3, uri: "s3://us-calls/2026/", endpoint_url: "http://127.0.0.1:9000"}
  namespace: calls
  classification: confidential
"""


def test_yaml_builds_the_document_assets_and_materializes(tmp_path: Path) -> None:
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "app.log").write_text(LOG)
    text = DOCUMENTS_YAML.replace("{classification}", "restricted")
    tree = defs_tree(tmp_path, {"planes": PLANES_YAML, "documents": text})
    component = tree.load_component("documents", DocumentsComponent)
    assert component.plane is tree.load_component("planes", DataPlanesComponent).plane("eu-onprem")
    assert isinstance(component.source, LocalFolderConfig)
    assert [type(r) for r in component.link_rules] == [PathLink, MetadataLink, TextLink]
    assert (component.chunk_size, component.chunk_overlap, component.embedding_dimensions) == (400, 50, 16)

    encounters = dg.AssetSpec(
        ["clinical", "encounters"], tags={"hybrid/plane": "eu-onprem", "hybrid/classification": "restricted"}
    )
    defs = dg.Definitions.merge(tree.build_defs(), dg.Definitions(assets=[encounters]))
    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey(["clinical", "documents"]))
    assert node.tags["hybrid/classification"] == "restricted" and node.owners == ["team:clinical-data"]
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[dg.AssetKey(["clinical", "documents"]), dg.AssetKey(["clinical", "document_chunks"])]
    )
    assert result.success
    eu = defs.resources["eu_onprem"] if defs.resources else None
    assert isinstance(eu, DataPlane)
    chunks = eu.load_catalog().load_table("clinical_documents.document_chunks").scan().to_arrow()
    assert set(chunks["link_key"].to_pylist()) == {"12"}
    assert all(len(v) == 16 for v in chunks["embedding"].to_pylist())


def test_an_s3_source_and_an_inline_plane(tmp_path: Path) -> None:
    component = defs_tree(tmp_path, {"calls": S3_YAML}).load_component("calls", DocumentsComponent)
    assert isinstance(component.source, S3PrefixConfig)
    assert component.source.endpoint_url == "http://127.0.0.1:9000"
    (assets,) = dg.build_defs_for_component(component).assets or []
    assert isinstance(assets, dg.AssetsDefinition)
    spec = assets.specs_by_key[dg.AssetKey("documents")]
    assert spec.kinds == {"iceberg", "pdf", "s3", "us-cloud", "US"}
    assert spec.tags["hybrid/plane"] == "us-cloud"
    assert {"us_cloud", "residency_policy"} <= assets.required_resource_keys


def test_a_bad_classification_or_link_kind_fails_naming_it(tmp_path: Path) -> None:
    with pytest.raises(Exception) as raised:
        defs_tree(tmp_path, {"d": S3_YAML.replace("confidential", "secret")}).load_component("d")
    assert "unknown classification 'secret'" in error_chain(raised.value)
    text = S3_YAML + "  link_rules: [{kind: header, field: x, column: y}]\n"
    with pytest.raises(Exception) as raised:
        defs_tree(tmp_path, {"d": text}).load_component("d")
    assert "'header'" in error_chain(raised.value)
