"""The CDC asset factory, materialized for real: SQLite trigger capture -> Iceberg in a plane."""

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from hybrid_dagster.assets.cdc_tables import CdcTable, cdc_table_assets
from hybrid_dagster.cdc.sources.config import SqlTriggerCdcSource
from hybrid_dagster.residency import ResidencyPolicy
from hybrid_dagster.resources import DataPlane, ExecutorConfig
from hybrid_dagster.validation import validate_definitions
from tests.planes import make_plane

NAMES = ["Oksana Hrytsenko", "Gwenaëlle Le Goff", "Søren Kierkegaard-Holm"]


@pytest.fixture
def ops_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    with sa.create_engine(url).begin() as conn:
        conn.exec_driver_sql("CREATE TABLE patients (id INTEGER PRIMARY KEY, name TEXT NOT NULL, ward TEXT)")
        for i, name in enumerate(NAMES, start=1):
            conn.exec_driver_sql("INSERT INTO patients VALUES (?, ?, 'icu')", (i, name))
    return url


def plane(tmp_path: Path, name: str = "eu-onprem", jurisdiction: str = "EU") -> DataPlane:
    return make_plane(tmp_path / name, name, jurisdiction)


def cdc_defs(url: str, eu: DataPlane, target: DataPlane | None = None) -> dg.Definitions:
    assets = cdc_table_assets(
        name="clinic_cdc",
        source=SqlTriggerCdcSource(url=url, consumer="eu-onprem"),
        plane=eu,
        source_jurisdiction="EU",
        tables=[CdcTable("patients", "restricted", description="Patients (PHI).")],
        namespace="clinic",
        key_prefix=["clinic"],
        owners=["team:clinical-data"],
    )
    return dg.Definitions(
        assets=[assets], resources={"eu_onprem": target or eu, "residency_policy": ResidencyPolicy()}
    )


def test_factory_specs_carry_kinds_tags_owners_and_checks(ops_db: str, tmp_path: Path) -> None:
    defs = cdc_defs(ops_db, plane(tmp_path))
    node = defs.resolve_asset_graph().get(dg.AssetKey(["clinic", "patients"]))
    assert node.kinds == {"sqlite", "iceberg", "eu-onprem", "EU"}
    assert node.tags["hybrid/plane"] == "eu-onprem" and node.tags["hybrid/classification"] == "restricted"
    assert node.owners == ["team:clinical-data"]
    check_names = {c.name for c in defs.resolve_asset_graph().asset_check_keys}
    assert check_names == {"primary_key_unique", "cdc_lag"}
    assert validate_definitions(defs).ok


def test_materialization_reports_metadata_checks_and_no_row_values(ops_db: str, tmp_path: Path) -> None:
    eu = plane(tmp_path)
    defs = cdc_defs(ops_db, eu)
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_implicit_global_asset_job_def()

    first = job.execute_in_process(instance=instance)
    assert first.success
    md = first.asset_materializations_for_node("clinic_cdc")[0].metadata
    assert md["dagster/table_name"].value == "clinic.patients"
    assert md["dagster/row_count"].value == 3
    assert [c.name for c in md["dagster/column_schema"].schema.columns] == ["id", "name", "ward"]
    assert md["snapshot_rows"].value == 3
    assert md["hybrid/classification"].value == "restricted"

    with sa.create_engine(ops_db).begin() as conn:
        conn.exec_driver_sql("INSERT INTO patients VALUES (4, 'Ada Lovelace-Byron', 'oncology')")
        conn.exec_driver_sql("UPDATE patients SET ward = 'cardiology' WHERE id = 1")
        conn.exec_driver_sql("DELETE FROM patients WHERE id = 2")
    second = job.execute_in_process(instance=instance)
    assert second.success
    md = second.asset_materializations_for_node("clinic_cdc")[0].metadata
    assert (md["events_inserted"].value, md["events_updated"].value, md["events_deleted"].value) == (1, 1, 1)
    assert md["dagster/row_count"].value == 3
    assert md["hybrid/watermark"].value
    checks = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in second.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }
    assert checks == {"primary_key_unique": True, "cdc_lag": True}

    table = eu.load_catalog().load_table("clinic.patients").scan().to_arrow()
    assert sorted(table.column("name").to_pylist()) == sorted([NAMES[0], NAMES[2], "Ada Lovelace-Byron"])
    log = "\n".join(dg.serialize_value(r) for run in (first, second) for r in instance.all_logs(run.run_id))
    for name in [*NAMES, "Ada Lovelace-Byron"]:
        assert name not in log


def test_runtime_guard_stops_cdc_into_a_plane_of_another_jurisdiction(ops_db: str, tmp_path: Path) -> None:
    eu = plane(tmp_path)
    us = plane(tmp_path, "us-cloud", "US")
    defs = cdc_defs(ops_db, eu, target=us)  # the resource key says eu_onprem, the plane is in the US
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("clinic_cdc")
    assert failure is not None and failure.error is not None and failure.error.cause is not None
    # Stopped in the orchestrator, before the plane's work started: no data moved.
    message = failure.error.cause.message
    assert message.startswith("hybrid_dagster.errors.ResidencyViolation")
    assert "'clinic/patients'" in message and "'us-cloud' (US)" in message and "data in EU" in message
    assert not us.load_catalog().table_exists("clinic.patients")


def test_literal_connection_strings_never_travel_to_a_kubernetes_plane(ops_db: str, tmp_path: Path) -> None:
    eu = plane(tmp_path)
    k8s = DataPlane(
        name="eu-onprem",
        jurisdiction="EU",
        region="fra-dc2",
        location="on_prem",
        warehouse=f"file://{tmp_path / 'k8s'}",
        executor=ExecutorConfig(kind="kubernetes", image="registry.example.org/plane:1"),
    )
    defs = cdc_defs(ops_db, eu, target=k8s)
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(raise_on_error=False)
    assert not result.success
    error = result.failure_data_for_node("clinic_cdc").error  # type: ignore[union-attr]
    assert "gives url literally" in str(error) and "url_env" in str(error)
