"""PlaneIcebergIOManager against real SQLite-backed Iceberg catalogs in temporary warehouses."""

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from hybrid_dagster.pinning import pinned
from hybrid_dagster.residency import ResidencyError
from hybrid_dagster.resources.data_plane import DataPlane
from hybrid_dagster.resources.iceberg_io_manager import PlaneIcebergIOManager
from tests.defs.common import plane


@pytest.fixture
def eu(tmp_path: Path) -> DataPlane:
    return plane("eu-onprem", "EU", str(tmp_path))


@pytest.fixture
def eu_replica(tmp_path: Path) -> DataPlane:
    return plane("eu-replica", "EU", str(tmp_path))


def test_stores_and_loads_tables_in_the_pinned_plane(eu: DataPlane) -> None:
    @dg.asset(key_prefix="clinical", **pinned("eu-onprem", "restricted", kinds={"iceberg"}))
    def admissions() -> pa.Table:
        return pa.table({"patient_id": [1, 2, 3], "ward": ["A", "B", "A"]})

    @dg.asset(key_prefix="clinical", **pinned("eu-onprem", "restricted"))
    def ward_a(admissions: pa.Table) -> pa.Table:
        return admissions.filter(pa.compute.equal(admissions["ward"], "A"))

    result = dg.materialize(
        [admissions, ward_a],
        resources={"io_manager": PlaneIcebergIOManager(planes=[eu], regulated_rows_in_step_process=True)},
    )

    assert result.success
    catalog = eu.load_catalog()
    assert catalog.load_table("clinical.ward_a").scan().to_arrow().column("patient_id").to_pylist() == [1, 3]
    [written] = result.asset_materializations_for_node("clinical__admissions")
    metadata = written.metadata
    assert metadata["dagster/table_name"].value == "eu-onprem.clinical.admissions"
    assert metadata["dagster/row_count"].value == 3
    schema = metadata["dagster/column_schema"].value
    assert isinstance(schema, dg.TableSchema)
    assert [(c.name, c.type) for c in schema.columns] == [("patient_id", "int64"), ("ward", "string")]
    assert metadata["hybrid/plane"].value == "eu-onprem"
    assert metadata["hybrid/jurisdiction"].value == "EU"
    assert metadata["hybrid/classification"].value == "restricted"
    snapshot = catalog.load_table("clinical.admissions").current_snapshot()
    assert snapshot is not None
    assert metadata["iceberg/snapshot_id"].value == snapshot.snapshot_id


def test_rematerializing_overwrites_and_evolves_the_schema(eu: DataPlane) -> None:
    rows = {"n": 2}

    @dg.asset(**pinned("eu-onprem", "internal"))
    def beds() -> pa.Table:
        table = pa.table({"ward": ["A", "B", "C"][: rows["n"]]})
        if rows["n"] == 3:
            table = table.append_column("free", pa.array([1, 0, 4]))
        return table

    resources = {"io_manager": PlaneIcebergIOManager(planes=[eu], regulated_rows_in_step_process=True)}
    assert dg.materialize([beds], resources=resources).success
    rows["n"] = 3
    assert dg.materialize([beds], resources=resources).success

    table = eu.load_catalog().load_table("default.beds")
    assert table.scan().to_arrow().to_pydict() == {"ward": ["A", "B", "C"], "free": [1, 0, 4]}
    assert [f.name for f in table.schema().fields] == ["ward", "free"]


def test_namespace_and_table_identifier(eu: DataPlane) -> None:
    key = dg.AssetKey(["raw", "ehr", "patients"])
    assert PlaneIcebergIOManager(planes=[eu]).table_identifier(key) == (
        "raw_ehr",
        "patients",
    )
    assert PlaneIcebergIOManager(planes=[eu]).table_identifier(dg.AssetKey("x")) == ("default", "x")
    assert PlaneIcebergIOManager(
        planes=[eu], regulated_rows_in_step_process=True, namespace="lake"
    ).table_identifier(key) == ("lake", "patients")


def test_target_plane_in_the_same_jurisdiction_is_allowed(eu: DataPlane, eu_replica: DataPlane) -> None:
    @dg.asset(**pinned("eu-onprem", "restricted"))
    def patients() -> pa.Table:
        return pa.table({"patient_id": [7]})

    @dg.asset(**pinned("eu-onprem", "restricted"))
    def patient_ids(patients: pa.Table) -> pa.Table:
        return patients

    io_manager = PlaneIcebergIOManager(
        planes=[eu, eu_replica], regulated_rows_in_step_process=True, target_plane="eu-replica"
    )
    assert dg.materialize([patients, patient_ids], resources={"io_manager": io_manager}).success

    assert eu_replica.load_catalog().load_table("default.patient_ids").scan().to_arrow().num_rows == 1
    assert not (eu.warehouse_path / "catalog.db").exists()


def test_rejects_non_tables_unknown_target_planes_and_skips_none(eu: DataPlane) -> None:
    @dg.asset(**pinned("eu-onprem", "public"))
    def not_a_table() -> list[int]:
        return [1, 2]

    @dg.asset(**pinned("eu-onprem", "public"))
    def nothing() -> None:
        return None

    io_manager = PlaneIcebergIOManager(planes=[eu], regulated_rows_in_step_process=True)
    failed = dg.materialize([not_a_table], resources={"io_manager": io_manager}, raise_on_error=False)
    assert not failed.success
    error = failed.get_step_failure_events()[0].step_failure_data.error
    assert error is not None
    assert "asset 'not_a_table': PlaneIcebergIOManager stores pyarrow Tables, got list" in error.to_string()

    assert dg.materialize([nothing], resources={"io_manager": io_manager}).success

    with pytest.raises(ResidencyError, match="plane 'us-cloud' is not among its planes \\(eu-onprem\\)"):
        PlaneIcebergIOManager(planes=[eu], regulated_rows_in_step_process=True)._plane("us-cloud")


def test_regulated_rows_are_refused_unless_steps_run_inside_the_plane(eu: DataPlane) -> None:
    @dg.asset(**pinned("eu-onprem", "confidential"))
    def referrals() -> pa.Table:
        return pa.table({"referral_id": [1]})

    result = dg.materialize(
        [referrals], resources={"io_manager": PlaneIcebergIOManager(planes=[eu])}, raise_on_error=False
    )
    assert not result.success
    failure = result.failure_data_for_node("referrals")
    assert failure is not None and failure.error is not None
    assert "asset 'referrals' is confidential" in str(failure.error)
    assert "regulated_rows_in_step_process" in str(failure.error)
    assert not eu.load_catalog().table_exists("default.referrals")
