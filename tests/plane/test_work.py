"""Plane-side guards: errors of regulated work stay in the plane, reads across jurisdictions need a
route, and work sent to the wrong plane is stopped before it starts."""

import sys
from pathlib import Path

import dagster as dg
import pyarrow as pa

from hybrid_dagster.pinning import pinned
from hybrid_dagster.residency import Classification, ResidencyPolicy, TransferRoute
from hybrid_dagster.residency.labels import label_for_write
from hybrid_dagster.resources import DataPlane
from tests.planes import make_plane

WORK = Path(__file__).parent / "work"


def plane(tmp_path: Path, name: str, jurisdiction: str) -> DataPlane:
    return make_plane(tmp_path / name, name, jurisdiction, location="cloud")


def event_log_text(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(dg.serialize_value(r) for r in instance.all_logs(run_id))


def failing_asset(classification: str) -> dg.AssetsDefinition:
    @dg.asset(name="cohort", **pinned("eu-onprem", classification))
    def cohort(context: dg.AssetExecutionContext, eu_onprem: DataPlane) -> dg.MaterializeResult:
        return eu_onprem.run(
            context, command=[sys.executable, str(WORK / "failing.py")]
        ).get_materialize_result()

    return cohort


def test_errors_of_regulated_work_stay_in_the_plane(tmp_path: Path) -> None:
    eu = plane(tmp_path, "eu-onprem", "EU")
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [failing_asset("restricted")], resources={"eu_onprem": eu}, instance=instance, raise_on_error=False
    )
    assert not result.success
    log = event_log_text(instance, result.run_id)
    assert "PlaneWorkError" in log and "ValueError in work on plane eu-onprem" in log
    assert "Ingrid" not in log
    assert "Ingrid Solberg-Vance" in eu.work_log_path(result.run_id, "cohort").read_text()


def test_errors_of_unregulated_work_are_shown_as_they_are(tmp_path: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [failing_asset("internal")],
        resources={"eu_onprem": plane(tmp_path, "eu-onprem", "EU")},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    assert "cannot parse birth date" in event_log_text(instance, result.run_id)


def copy_asset(classification: str, with_policy: bool) -> dg.AssetsDefinition:
    if with_policy:

        @dg.asset(name="us_copy", **pinned("us-cloud", classification))
        def us_copy(
            context: dg.AssetExecutionContext,
            us_cloud: DataPlane,
            eu_onprem: DataPlane,
            residency_policy: ResidencyPolicy,
        ) -> dg.MaterializeResult:
            command = [sys.executable, str(WORK / "read_eu.py")]
            return us_cloud.run(
                context, command=command, extras={"asset": "us_copy"}
            ).get_materialize_result()

        return us_copy

    @dg.asset(name="us_copy", **pinned("us-cloud", classification))
    def us_copy_without_policy(
        context: dg.AssetExecutionContext, us_cloud: DataPlane, eu_onprem: DataPlane
    ) -> dg.MaterializeResult:
        command = [sys.executable, str(WORK / "read_eu.py")]
        return us_cloud.run(context, command=command, extras={"asset": "us_copy"}).get_materialize_result()

    return us_copy_without_policy


def seed_eu_table(eu: DataPlane, classification: str = "confidential") -> None:
    """The EU table, labelled at rest (as every hybrid-dagster writer labels what it writes)."""
    catalog = eu.load_catalog()
    catalog.create_namespace("clinic")
    rows = pa.table({"patient_id": [1, 2], "full_name": ["Ingrid Solberg-Vance", "Tomasz Wyrzykowski"]})
    label = label_for_write("clinic/patients", Classification.parse(classification), frozenset({"EU"}), eu)
    catalog.create_table("clinic.patients", schema=rows.schema, properties=label.properties()).append(rows)


def test_reading_across_jurisdictions_needs_a_route_for_the_classification(tmp_path: Path) -> None:
    eu, us = plane(tmp_path, "eu-onprem", "EU"), plane(tmp_path, "us-cloud", "US")
    seed_eu_table(eu)
    route = TransferRoute(
        source="EU", target="US", legal_basis="GDPR Art. 46 SCCs", classifications=["confidential"]
    )
    resources = {"eu_onprem": eu, "us_cloud": us, "residency_policy": ResidencyPolicy(routes=[route])}

    instance = dg.DagsterInstance.ephemeral()
    blocked = dg.materialize(
        [copy_asset("restricted", with_policy=True)],
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert not blocked.success
    log = event_log_text(instance, blocked.run_id)
    # The confidential rows may cross on the route, but not into a restricted asset's US table.
    assert "write of asset 'us_copy' (restricted" in log and "restricted data may not move" in log
    assert not us.load_catalog().table_exists("copies.patients")

    allowed = dg.materialize([copy_asset("confidential", with_policy=True)], resources=resources)
    assert allowed.success
    assert us.load_catalog().load_table("copies.patients").scan().to_arrow().num_rows == 2


def test_work_sent_to_a_plane_of_another_jurisdiction_never_starts(tmp_path: Path) -> None:
    eu, us = plane(tmp_path, "eu-onprem", "EU"), plane(tmp_path, "us-cloud", "US")

    @dg.asset(name="cohort", **pinned("eu-onprem", "restricted"))
    def cohort(context: dg.AssetExecutionContext, eu_onprem: DataPlane, us_cloud: DataPlane) -> None:
        us_cloud.run(context, command=[sys.executable, str(WORK / "failing.py")])

    result = dg.materialize([cohort], resources={"eu_onprem": eu, "us_cloud": us}, raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("cohort")
    assert failure is not None and failure.error is not None and failure.error.cause is not None
    message = failure.error.cause.message
    assert (
        "ResidencyViolation" in message and "'us-cloud' (US)" in message and "no ResidencyPolicy" in message
    )
    assert not us.work_log_path(result.run_id, "cohort").exists()  # nothing was launched
