"""CdcTablesComponent: CDC tables from YAML, beside the planes component, checked and materialized."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from hybrid_dagster.cdc.sources.config import DebeziumFileCdcSource, SqlTriggerCdcSource
from hybrid_dagster.components import CdcTablesComponent, DataPlanesComponent
from hybrid_dagster.resources import DataPlane
from hybrid_dagster.validation import validate_definitions
from tests.components import defs_tree, error_chain, example_tree

CLINICAL = [dg.AssetKey(["clinical", t]) for t in ("patients", "encounters", "lab_results")]

PLANES_YAML = """
type: hybrid_dagster.components.DataPlanesComponent
attributes:
  planes:
    - {name: eu-onprem, jurisdiction: EU, region: fra-dc2, location: on_prem,
       warehouse: "file://{{ context.project_root }}/planes/eu-onprem"}
    - {name: us-cloud, jurisdiction: US, region: us-east-1, location: cloud,
       warehouse: "file://{{ context.project_root }}/planes/us-cloud"}
"""

SQLITE_CDC_YAML = """
type: hybrid_dagster.components.CdcTablesComponent
attributes:
  name: clinic_cdc
  plane: "{{ context.load_component('planes').plane('eu-onprem') }}"
  source: {kind: sql_triggers, url: "sqlite:///{{ context.project_root }}/ops.db", consumer: eu-onprem}
  source_jurisdiction: EU
  tables:
    - {source_table: patients, classification: restricted, key_columns: [id], description: Patients (PHI).}
    - {source_table: wards, classification: internal}
  namespace: clinic
  key_prefix: [clinic]
  group_name: clinic
  owners: ["team:clinical-data"]
  dead_letter_policy: stop
  batch_events: 2
  max_lag_seconds: 60
"""

INLINE_PLANE_CDC_YAML = """
type: hybrid_dagster.components.CdcTablesComponent
attributes:
  name: inventory_cdc
  plane: {name: us-cloud, jurisdiction: us, region: us-east-1, location: cloud,
          warehouse: "file:///srv/us-cloud/warehouse", owners: ["team:platform"]}
  source: {kind: debezium, path: /data/cdc/inventory, pattern: "*.jsonl"}
  source_jurisdiction: US
  tables:
    - {source_table: inventory.customers, classification: {classification}, name: customers}
  namespace: inventory
"""


def test_example_yaml_gives_the_assets_of_the_python_example() -> None:
    from examples.clinical_ai.definitions import clinical_cdc

    tree = example_tree()
    graph = tree.build_defs().resolve_asset_graph()  # the CDC assets need the planes' resources
    assert set(graph.get_all_asset_keys()) == set(CLINICAL)
    for key in CLINICAL:
        node, spec = graph.get(key), clinical_cdc.specs_by_key[key]
        assert node.tags["hybrid/plane"] == "eu-onprem"
        assert node.tags["hybrid/classification"] == "restricted"
        assert node.kinds == {"postgres", "iceberg", "eu-onprem", "EU"}
        assert node.owners == ["team:clinical-data"] and node.group_name == "eu_clinical"
        assert (node.description, dict(node.tags), node.owners) == (spec.description, spec.tags, spec.owners)
        assert node.metadata["dagster/table_name"] == f"eu-onprem.clinical.{key.path[-1]}"
    assert {(c.asset_key, c.name) for c in graph.asset_check_keys} == {
        (key, name) for key in CLINICAL for name in ("primary_key_unique", "cdc_lag")
    }
    component = tree.load_component("eu_clinical_cdc", CdcTablesComponent)
    assert component.plane is tree.load_component("planes", DataPlanesComponent).plane("eu-onprem")


def test_merged_planes_and_cdc_components_validate_clean() -> None:
    defs = example_tree().build_defs()
    assert {key for key, r in (defs.resources or {}).items() if isinstance(r, DataPlane)} == {
        "eu_onprem",
        "eu_cloud",
        "us_onprem",
        "us_cloud",
    }
    report = validate_definitions(defs)
    assert report.ok, report.lines()
    assert "3 assets on 4 planes in 2 jurisdictions" in report.summary()


def test_inline_plane_attributes_and_another_source_kind(tmp_path: Path) -> None:
    text = INLINE_PLANE_CDC_YAML.replace("{classification}", "Confidential")
    component = defs_tree(tmp_path, {"cdc": text}).load_component("cdc", CdcTablesComponent)
    assert isinstance(component.source, DebeziumFileCdcSource) and component.source.pattern == "*.jsonl"
    assert (component.plane.name, component.plane.jurisdiction) == ("us-cloud", "US")
    (assets,) = dg.build_defs_for_component(component).assets or []
    assert isinstance(assets, dg.AssetsDefinition)
    spec = assets.specs_by_key[dg.AssetKey("customers")]
    assert spec.kinds == {"debezium", "iceberg", "us-cloud", "US"}
    assert spec.tags["hybrid/classification"] == "confidential"
    assert spec.tags["hybrid/plane"] == "us-cloud"
    assert {"us_cloud", "residency_policy"} <= assets.required_resource_keys


def test_unknown_classification_fails_naming_the_value(tmp_path: Path) -> None:
    text = INLINE_PLANE_CDC_YAML.replace("{classification}", "secret")
    with pytest.raises(Exception) as raised:
        defs_tree(tmp_path, {"cdc": text}).load_component("cdc")
    assert "unknown classification 'secret'" in error_chain(raised.value)


def test_unknown_source_kind_fails_naming_the_kinds(tmp_path: Path) -> None:
    text = INLINE_PLANE_CDC_YAML.replace("{classification}", "internal").replace(
        "kind: debezium", "kind: oracle"
    )
    with pytest.raises(Exception) as raised:
        defs_tree(tmp_path, {"cdc": text}).load_component("cdc")
    message = error_chain(raised.value)
    assert "'oracle'" in message and "'sql_triggers'" in message


@pytest.fixture
def project(tmp_path: Path) -> Path:
    with sa.create_engine(f"sqlite:///{tmp_path / 'ops.db'}").begin() as conn:
        conn.exec_driver_sql("CREATE TABLE patients (id INTEGER PRIMARY KEY, name TEXT NOT NULL, ward TEXT)")
        conn.exec_driver_sql("CREATE TABLE wards (code TEXT PRIMARY KEY, beds INTEGER)")
        conn.exec_driver_sql(
            "INSERT INTO patients VALUES (1, 'Oksana Hrytsenko', 'icu'), (2, 'Søren Holm', 'icu')"
        )
        conn.exec_driver_sql("INSERT INTO wards VALUES ('icu', 12), ('cardiology', 30)")
    return tmp_path


def test_sqlite_cdc_component_materializes_into_iceberg_with_the_planes_resources(project: Path) -> None:
    tree = defs_tree(project, {"planes": PLANES_YAML, "clinic_cdc": SQLITE_CDC_YAML})
    defs = tree.build_defs()
    assert validate_definitions(defs).ok
    component = tree.load_component("clinic_cdc", CdcTablesComponent)
    assert isinstance(component.source, SqlTriggerCdcSource)
    assert component.source.url == f"sqlite:///{project}/ops.db"

    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(instance=instance).success
    with sa.create_engine(f"sqlite:///{project / 'ops.db'}").begin() as conn:
        conn.exec_driver_sql("INSERT INTO patients VALUES (3, 'Ada Lovelace-Byron', 'oncology')")
        conn.exec_driver_sql("UPDATE patients SET ward = 'cardiology' WHERE id = 1")
        conn.exec_driver_sql("DELETE FROM patients WHERE id = 2")
    result = job.execute_in_process(instance=instance)
    assert result.success

    checks = {
        (e.asset_check_evaluation_data.asset_key, e.asset_check_evaluation_data.check_name)
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION and e.asset_check_evaluation_data.passed
    }
    assert len(checks) == 4
    eu = defs.resources["eu_onprem"] if defs.resources else None
    assert isinstance(eu, DataPlane) and eu.warehouse == f"file://{project}/planes/eu-onprem"
    catalog = eu.load_catalog()
    patients = catalog.load_table("clinic.patients").scan().to_arrow().sort_by("id").to_pylist()
    assert patients == [
        {"id": 1, "name": "Oksana Hrytsenko", "ward": "cardiology"},
        {"id": 3, "name": "Ada Lovelace-Byron", "ward": "oncology"},
    ]
    wards = catalog.load_table("clinic.wards").scan().to_arrow().sort_by("code").to_pylist()
    assert wards == [{"code": "cardiology", "beds": 30}, {"code": "icu", "beds": 12}]
