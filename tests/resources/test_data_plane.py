import sys
from pathlib import Path

import dagster as dg
import pytest

from hybrid_dagster.pinning import pinned
from hybrid_dagster.residency import ResidencyViolation
from hybrid_dagster.resources import DataPlane
from tests.planes import make_plane

PATIENTS_CSV = "id,name,diagnosis\n1,Ingrid Solberg-Vance,E11.9\n2,Tomasz Wyrzykowski,I10\n"
WORK = [sys.executable, str(Path(__file__).parent / "work" / "count_patients.py")]


def clinic_plane(warehouse: Path) -> DataPlane:
    return make_plane(warehouse, jurisdiction="eu", env={"CLINICAL_SITE": "fra-dc2"})


def patients_asset(csv_path: Path, *, leak: bool = False) -> dg.AssetsDefinition:
    @dg.asset(name="patients", **pinned("eu-onprem", "restricted", kinds={"python"}))
    def patients(context: dg.AssetExecutionContext, eu_onprem: DataPlane) -> dg.MaterializeResult:
        invocation = eu_onprem.run(
            context,
            command=WORK,
            extras={"path": str(csv_path), "leak": leak},
            allowed_metadata_keys=["plane_env_seen"],
        )
        return invocation.get_materialize_result()

    return patients


def test_plane_fields_are_validated(warehouse: Path) -> None:
    plane = clinic_plane(warehouse)
    assert plane.jurisdiction == "EU"
    with pytest.raises(ValueError, match="unknown jurisdiction 'Mars'"):
        DataPlane(name="x", jurisdiction="Mars", region="r", location="cloud", warehouse="s3://b/p")
    with pytest.raises(ValueError, match="must be a file:// or s3:// URI"):
        DataPlane(name="x", jurisdiction="EU", region="r", location="cloud", warehouse="/tmp/w")


def test_run_executes_pipes_work_in_plane_and_keeps_rows_out_of_event_log(
    tmp_path: Path, warehouse: Path
) -> None:
    csv_path = tmp_path / "patients.csv"
    csv_path.write_text(PATIENTS_CSV)
    plane = clinic_plane(warehouse)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([patients_asset(csv_path)], resources={"eu_onprem": plane}, instance=instance)
    assert result.success

    mat = result.asset_materializations_for_node("patients")[0]
    assert mat.metadata["dagster/row_count"] == dg.IntMetadataValue(2)
    assert mat.metadata["plane_env_seen"] == dg.BoolMetadataValue(True)

    records = instance.all_logs(result.run_id)
    serialized = "\n".join(dg.serialize_value(r) for r in records)
    assert "Ingrid" not in serialized and "Wyrzykowski" not in serialized
    # The work's own output stayed in the plane, in its warehouse.
    log_file = plane.work_log_path(result.run_id, "patients")
    assert "Ingrid Solberg-Vance" in log_file.read_text()


def test_run_refuses_row_values_in_regulated_metadata(tmp_path: Path, warehouse: Path) -> None:
    csv_path = tmp_path / "patients.csv"
    csv_path.write_text(PATIENTS_CSV)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [patients_asset(csv_path, leak=True)],
        resources={"eu_onprem": clinic_plane(warehouse)},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    failure = result.failure_data_for_node("patients")
    assert failure is not None and failure.error is not None
    cause = failure.error.cause
    assert cause is not None and cause.cls_name == "ResidencyViolation"
    assert "reported a metadata key that is not declared" in cause.message and "sample" not in cause.message
    assert "regulated asset patients" in cause.message
    serialized = "\n".join(dg.serialize_value(r) for r in instance.all_logs(result.run_id))
    assert "Ingrid" not in serialized


def test_run_requires_exactly_one_of_command_or_module(warehouse: Path) -> None:
    plane = clinic_plane(warehouse)
    with pytest.raises(ValueError, match="exactly one of command= or module="):
        plane.launcher.argv(command=None, module=None, args=())


def test_from_env_round_trips_plane_config(warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plane = clinic_plane(warehouse)
    for key, value in plane.plane_env().items():
        monkeypatch.setenv(key, value)
    # The work learns its plane's secret-free spec, nothing more (no executor, no env values).
    assert DataPlane.from_env().spec() == plane.spec()


def test_catalog_defaults_to_sqlite_under_file_warehouse(warehouse: Path) -> None:
    catalog = clinic_plane(warehouse).load_catalog()
    catalog.create_namespace("clinical")
    assert ("clinical",) in catalog.list_namespaces()
    assert (warehouse / "catalog.db").exists()


def test_s3_warehouse_needs_explicit_catalog() -> None:
    plane = DataPlane(
        name="us-cloud", jurisdiction="US", region="us-east-1", location="cloud", warehouse="s3://b/w"
    )
    with pytest.raises(ValueError, match=r"needs catalog\.uri"):
        plane.catalog_properties()
    with pytest.raises(
        ValueError, match=r"regulated step .ingest. keeps its output in the plane.*work_log_dir"
    ):
        plane.work_log_path("run-1", "ingest")


def test_regulated_violation_type_is_residency_error() -> None:
    assert issubclass(ResidencyViolation, Exception)
