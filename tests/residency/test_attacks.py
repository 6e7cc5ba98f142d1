"""Residency under attack: each hole class of issue 7, reproduced and shown refused.

After every attack the canary row value is searched for in the event log, Dagster's storage (the
instance's folder: event log, runs, compute logs), what the orchestrator process printed, and the other
jurisdiction's warehouse.
"""

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest

from hybrid_dagster.errors import ResidencyError, ResidencyViolation
from hybrid_dagster.pinning import pinned
from hybrid_dagster.plane.config import CatalogConfig
from hybrid_dagster.residency import Classification, ResidencyPolicy, TransferRoute
from hybrid_dagster.residency.labels import label_for_write
from hybrid_dagster.resources import DataPlane
from hybrid_dagster.resources.iceberg_io_manager import PlaneIcebergIOManager
from hybrid_dagster.validation import ViolationKind, enforce_residency, validate_definitions
from tests.planes import make_plane

ATTACK = [sys.executable, str(Path(__file__).parent / "work" / "attack.py")]
CANARY = "CANARY-7f3a Ingrid Solberg-Vance"
SCC = TransferRoute(
    source="EU", target="US", legal_basis="GDPR Art. 46(2)(c) SCCs", classifications=["confidential"]
)


class World:
    def __init__(self, tmp_path: Path, instance: dg.DagsterInstance) -> None:
        self.tmp_path = tmp_path
        self.instance = instance
        self.eu = make_plane(tmp_path / "eu-onprem", "eu-onprem", "EU")
        self.us = make_plane(tmp_path / "us-cloud", "us-cloud", "US", location="cloud")
        self.policy = ResidencyPolicy(routes=[SCC])
        catalog = self.eu.load_catalog()  # an operator seeding data: outside any step
        catalog.create_namespace("clinic")
        rows = pa.table({"patient_id": [1], "full_name": [CANARY]})
        label = label_for_write("clinic/patients", Classification.RESTRICTED, frozenset({"EU"}), self.eu)
        catalog.create_table("clinic.patients", schema=rows.schema, properties=label.properties()).append(
            rows
        )

    @property
    def resources(self) -> dict[str, Any]:
        return {"eu_onprem": self.eu, "us_cloud": self.us, "residency_policy": self.policy}

    def materialize(self, assets: list[Any], **kwargs: Any) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            assets, resources=self.resources, instance=self.instance, raise_on_error=False, **kwargs
        )

    def leaks(self, captured: str) -> list[str]:
        found = []
        runs = self.instance.get_runs()
        for run in runs:
            if any(CANARY in dg.serialize_value(r) for r in self.instance.all_logs(run.run_id)):
                found.append(f"event log of run {run.run_id}")
        for root, where in [
            (self.tmp_path / "dagster_home", "Dagster storage"),
            (self.tmp_path / "us-cloud", "US warehouse"),
        ]:
            for path in root.rglob("*"):
                if path.is_file() and CANARY.encode() in path.read_bytes():
                    found.append(f"{where}: {path}")
        if CANARY in captured:
            found.append("orchestrator stdout/stderr (compute logs)")
        return found


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        _INSTANCES.append(instance)
        yield World(tmp_path, instance)


def _out(capfd: pytest.CaptureFixture[str]) -> str:
    out, err = capfd.readouterr()
    return out + err


def _failure(result: dg.ExecuteInProcessResult, step: str) -> str:
    """The step's failure chain plus the run's events (plane errors arrive as Pipes engine events)."""
    failure = result.failure_data_for_node(step)
    assert failure is not None and failure.error is not None
    error = failure.error
    parts = []
    while error is not None:
        parts.append(f"{error.cls_name}: {error.message}")
        error = error.cause
    records = result.dagster_run and _INSTANCES[-1].all_logs(result.run_id)
    return "\n".join(parts) + "\n" + "\n".join(dg.serialize_value(r) for r in records or [])


_INSTANCES: list[dg.DagsterInstance] = []


def copier(classification: str, action: str = "copy", **pin: Any) -> dg.AssetsDefinition:
    @dg.asset(name="us_copy", **pinned("us-cloud", classification, **pin))
    def us_copy(
        context: dg.AssetExecutionContext,
        us_cloud: DataPlane,
        eu_onprem: DataPlane,
        residency_policy: ResidencyPolicy,
    ) -> dg.MaterializeResult:
        extras = {"action": action, "asset": "us_copy", "source_plane": "eu-onprem"}
        return us_cloud.run(context, command=ATTACK, extras=extras).get_materialize_result()

    return us_copy


# -- 1. the route is checked against the table's label, not the step's declaration -------------------------


@pytest.mark.parametrize("classification", ["public", "internal", "confidential"])
def test_a_step_declared_lower_cannot_read_a_restricted_table(
    world: World, capfd: pytest.CaptureFixture[str], classification: str
) -> None:
    result = world.materialize([copier(classification)])
    assert not result.success
    text = _failure(result, "us_copy")
    assert "table clinic.patients of plane 'eu-onprem' (labelled restricted)" in text
    assert "clearance" in text
    assert not (world.tmp_path / "us-cloud" / "copies").exists()
    assert world.leaks(_out(capfd)) == []


def test_an_unlabelled_table_counts_as_restricted(world: World, capfd: pytest.CaptureFixture[str]) -> None:
    catalog = world.eu.load_catalog()
    with catalog.load_table("clinic.patients").transaction() as txn:
        txn.remove_properties("hybrid.classification")
    result = world.materialize([copier("confidential")])
    assert not result.success
    assert "label missing or unreadable: counted as restricted" in _failure(result, "us_copy")
    assert world.leaks(_out(capfd)) == []


# -- 2. no path to rows around the guard -------------------------------------------------------------------


def test_load_catalog_inside_an_asset_is_refused(world: World, capfd: pytest.CaptureFixture[str]) -> None:
    @dg.asset(**pinned("us-cloud", "internal"))
    def sneaky(eu_onprem: DataPlane) -> None:
        rows = eu_onprem.load_catalog().load_table("clinic.patients").scan().to_arrow()
        print(rows.to_pylist())

    result = world.materialize([sneaky])
    assert not result.success
    assert "may not be opened inside a Dagster step" in _failure(result, "sneaky")
    assert world.leaks(_out(capfd)) == []


def test_load_catalog_in_a_plain_op_is_refused(world: World, capfd: pytest.CaptureFixture[str]) -> None:
    @dg.op
    def dump(eu_onprem: DataPlane) -> None:
        print(eu_onprem.load_catalog().load_table("clinic.patients").scan().to_arrow().to_pylist())

    @dg.job(resource_defs={"eu_onprem": world.eu})
    def dump_job() -> None:
        dump()

    result = dump_job.execute_in_process(instance=world.instance, raise_on_error=False)
    assert not result.success
    assert world.leaks(_out(capfd)) == []


def test_plane_work_cannot_open_another_planes_catalog(
    world: World, capfd: pytest.CaptureFixture[str]
) -> None:
    result = world.materialize([copier("restricted", action="open_other_catalog")])
    assert not result.success
    assert not (world.tmp_path / "us-cloud" / "copies").exists()
    assert world.leaks(_out(capfd)) == []


def test_plain_op_jobs_are_checked_statically_and_kept_in_the_plane_at_run_time(
    world: World, capfd: pytest.CaptureFixture[str]
) -> None:
    @dg.op
    def untagged(context: dg.OpExecutionContext, eu_onprem: DataPlane) -> None:
        eu_onprem.run(context, command=ATTACK, extras={"action": "print_only"})

    @dg.job
    def op_job() -> None:
        untagged()

    report = validate_definitions(dg.Definitions(jobs=[op_job], resources=world.resources))
    assert [v.kind for v in report.violations] == [ViolationKind.UNCHECKED_OP]
    result = op_job.execute_in_process(resources=world.resources, instance=world.instance)
    assert result.success  # the op ran, but as restricted: its output stayed in the plane
    assert world.leaks(_out(capfd)) == []

    @dg.op(tags=pinned("us-cloud", "restricted")["tags"])
    def cross(context: dg.OpExecutionContext, us_cloud: DataPlane, eu_onprem: DataPlane) -> None: ...

    @dg.job
    def cross_job() -> None:
        cross()

    report = validate_definitions(dg.Definitions(jobs=[cross_job], resources=world.resources))
    assert [v.kind for v in report.violations] == [ViolationKind.TRANSFER]


# -- 3. the effective classification at run time -----------------------------------------------------------


def test_a_step_declared_internal_downstream_of_restricted_data_is_screened(
    world: World, capfd: pytest.CaptureFixture[str]
) -> None:
    patients = dg.AssetSpec("patients", **pinned("eu-onprem", "restricted"))

    @dg.asset(deps=[patients], **pinned("eu-onprem", "internal"))
    def summary(context: dg.AssetExecutionContext, eu_onprem: DataPlane) -> dg.MaterializeResult:
        return eu_onprem.run(context, command=ATTACK, extras={"action": "print"}).get_materialize_result()

    result = world.materialize([patients, summary], selection=[summary])
    assert result.success
    assert world.leaks(_out(capfd)) == []
    log = world.eu.work_log_path(result.run_id, "summary").read_text()
    assert CANARY in log  # kept in the plane


def test_asset_checks_running_plane_work_are_screened(
    world: World, capfd: pytest.CaptureFixture[str]
) -> None:
    patients = dg.AssetSpec("patients", **pinned("eu-onprem", "restricted"))

    @dg.asset_check(asset="patients")
    def patients_ok(context: dg.AssetCheckExecutionContext, eu_onprem: DataPlane) -> dg.AssetCheckResult:
        eu_onprem.run(context.op_execution_context, command=ATTACK, extras={"action": "print"})
        return dg.AssetCheckResult(passed=True)

    defs = dg.Definitions(assets=[patients], asset_checks=[patients_ok], resources=world.resources)
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=world.instance, raise_on_error=False)
    assert world.leaks(_out(capfd)) == []
    del result


# -- 4. everything that crosses back is screened ----------------------------------------------------------


@pytest.mark.parametrize(
    "action",
    ["metadata_key", "path_value", "schema_description", "data_version", "exit_message", "raise"],
)
def test_row_values_cannot_cross_back(world: World, capfd: pytest.CaptureFixture[str], action: str) -> None:
    @dg.asset(**pinned("eu-onprem", "restricted"))
    def patients(context: dg.AssetExecutionContext, eu_onprem: DataPlane) -> dg.MaterializeResult:
        return eu_onprem.run(context, command=ATTACK, extras={"action": action}).get_materialize_result()

    result = world.materialize([patients])
    assert not result.success
    assert world.leaks(_out(capfd)) == []


@pytest.mark.parametrize("action", ["raw_log", "custom_message", "print"])
def test_logs_and_custom_messages_stay_in_the_plane(
    world: World, capfd: pytest.CaptureFixture[str], action: str
) -> None:
    @dg.asset(**pinned("eu-onprem", "restricted"))
    def patients(context: dg.AssetExecutionContext, eu_onprem: DataPlane) -> dg.MaterializeResult:
        return eu_onprem.run(context, command=ATTACK, extras={"action": action}).get_materialize_result()

    result = world.materialize([patients])
    assert result.success
    assert world.leaks(_out(capfd)) == []
    assert CANARY in world.eu.work_log_path(result.run_id, "patients").read_text()


# -- 5. rows of regulated assets never land in the orchestrator's storage ----------------------------------


def test_returned_rows_of_a_regulated_asset_are_refused(
    world: World, capfd: pytest.CaptureFixture[str]
) -> None:
    @dg.asset(**pinned("eu-onprem", "restricted"))
    def typed() -> pa.Table:
        return pa.table({"full_name": [CANARY]})

    @dg.asset(**pinned("eu-onprem", "restricted"))
    def untyped():  # type: ignore[no-untyped-def]
        return pa.table({"full_name": [CANARY]})

    static = validate_definitions(dg.Definitions(assets=[typed], resources=world.resources))
    assert [v.kind for v in static.violations] == [ViolationKind.ROWS_IN_ORCHESTRATOR]

    defs = enforce_residency(dg.Definitions(assets=[untyped], resources=world.resources))
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=world.instance, raise_on_error=False
    )
    assert not result.success
    assert "would be pickled into the orchestrator's storage" in _failure(result, "untyped")
    assert world.leaks(_out(capfd)) == []


# -- 6. static gaps ----------------------------------------------------------------------------------------


def test_asset_check_additional_deps_are_walked(world: World) -> None:
    patients = dg.AssetSpec("patients", **pinned("eu-onprem", "restricted"))
    dashboard = dg.AssetSpec("dashboard", **pinned("us-cloud", "internal"))

    @dg.asset_check(asset="dashboard", additional_deps=["patients"])
    def matches_patients() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    report = validate_definitions(
        dg.Definitions(
            assets=[patients, dashboard], asset_checks=[matches_patients], resources=world.resources
        )
    )
    assert [v.kind for v in report.violations] == [ViolationKind.TRANSFER]
    assert "asset check dashboard:matches_patients" in report.violations[0].message


def test_cdc_source_jurisdiction_is_part_of_the_check(world: World) -> None:
    from hybrid_dagster.assets.cdc_tables import CdcTable, cdc_table_assets
    from hybrid_dagster.cdc.sources.config import PostgresCdcSource

    def defs(**kwargs: Any) -> dg.Definitions:
        assets = cdc_table_assets(
            name="cdc",
            source=PostgresCdcSource(dsn_env="X", slot_name="s"),
            plane=world.us,
            tables=[CdcTable("public.patients", "restricted")],
            namespace="clinic",
            **kwargs,
        )
        return dg.Definitions(assets=[assets], resources=world.resources)

    eu_source = validate_definitions(defs(source_jurisdiction="EU"))
    assert [v.kind for v in eu_source.violations] == [ViolationKind.TRANSFER]
    undeclared = validate_definitions(defs())
    assert "a source database must have one" in undeclared.violations[0].message
    assert validate_definitions(defs(source_jurisdiction="US")).ok


# -- 7. fail-closed parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize("justification", [False, True, None, "", "   ", 0])
def test_a_declassification_must_be_a_written_justification(world: World, justification: object) -> None:
    patients = dg.AssetSpec("patients", **pinned("eu-onprem", "restricted"))
    counts = dg.AssetSpec(
        "counts",
        deps=[patients],
        tags=pinned("us-cloud", "internal")["tags"],
        metadata={"hybrid/declassified": justification},
    )
    report = validate_definitions(dg.Definitions(assets=[patients, counts], resources=world.resources))
    kinds = {v.kind for v in report.violations}
    assert ViolationKind.DECLASSIFICATION in kinds and ViolationKind.TRANSFER in kinds


@pytest.mark.parametrize("tags", [{"hybrid/classification": "restriced"}, {}])
def test_an_upstream_with_a_bad_or_missing_classification_counts_as_restricted(
    world: World, capfd: pytest.CaptureFixture[str], tags: dict[str, str]
) -> None:
    patients = dg.AssetSpec("patients", tags={"hybrid/plane": "eu-onprem", **tags})

    @dg.asset(deps=[patients], **pinned("eu-onprem", "internal"))
    def summary(context: dg.AssetExecutionContext, eu_onprem: DataPlane) -> dg.MaterializeResult:
        return eu_onprem.run(context, command=ATTACK, extras={"action": "print"}).get_materialize_result()

    result = world.materialize([patients, summary], selection=[summary])
    assert result.success
    assert world.leaks(_out(capfd)) == []


# -- 8. one set of planes, one policy -------------------------------------------------------------------


def test_an_io_manager_with_its_own_planes_is_refused(world: World) -> None:
    impostor = make_plane(world.tmp_path / "elsewhere", "eu-onprem", "EU")
    io_manager = PlaneIcebergIOManager(planes=[impostor, world.us])
    report = validate_definitions(dg.Definitions(resources={**world.resources, "io_manager": io_manager}))
    assert ViolationKind.INCONSISTENT_PLANE in {v.kind for v in report.violations}


def test_overlapping_warehouses_are_refused(world: World) -> None:
    sneaky = make_plane(world.tmp_path / "eu-onprem" / ".." / "us-cloud", "us-2", "US")
    report = validate_definitions(dg.Definitions(resources={**world.resources, "us_2": sneaky}))
    assert ViolationKind.OVERLAPPING_PLANES in {v.kind for v in report.violations}


def test_one_policy_per_definitions(world: World) -> None:
    lax = ResidencyPolicy(
        routes=[TransferRoute(source="EU", target="US", legal_basis="none", classifications=["restricted"])]
    )
    report = validate_definitions(dg.Definitions(resources={**world.resources, "lax_policy": lax}))
    assert ViolationKind.POLICY in {v.kind for v in report.violations}

    @dg.asset(**pinned("us-cloud", "restricted"))
    def copy(
        context: dg.AssetExecutionContext,
        us_cloud: DataPlane,
        residency_policy: ResidencyPolicy,
        lax_policy: ResidencyPolicy,
    ) -> dg.MaterializeResult:
        return us_cloud.run(context, command=ATTACK, extras={"action": "print"}).get_materialize_result()

    result = dg.materialize(
        [copy],
        resources={**world.resources, "lax_policy": lax},
        instance=world.instance,
        raise_on_error=False,
    )
    assert not result.success
    assert "several ResidencyPolicy resources" in _failure(result, "copy")


# -- 9. no secrets in configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "properties",
    [
        {"s3.secret-access-key": "wJalrXUtnFEMI"},
        {"credential": "client:secret"},
        {"token": "hvs.123"},
    ],
)
def test_literal_secrets_in_catalog_properties_are_refused(properties: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="looks like a credential") as raised:
        CatalogConfig(properties=properties)
    assert next(iter(properties.values())) not in str(raised.value)
    assert CatalogConfig(properties={k: "{env:EU_SECRET}" for k in properties})


def test_literal_passwords_in_catalog_uris_and_env_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="literal password") as raised:
        CatalogConfig(uri="postgresql://iceberg:hunter2@db/catalog")
    assert "hunter2" not in str(raised.value)
    assert CatalogConfig(uri="postgresql://iceberg:{env:CATALOG_PASSWORD}@db/catalog")
    with pytest.raises(ValueError, match="looks like a credential"):
        make_plane(tmp_path, env={"DB_PASSWORD": "hunter2"})


def test_plane_work_gets_only_secret_free_specs(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("US_CATALOG_PASSWORD", "hunter2-us")
    us = world.us.model_copy(
        update={"catalog": CatalogConfig(properties={"s3.secret-access-key": "{env:US_CATALOG_PASSWORD}"})}
    )
    env = us.plane_env()
    assert "hunter2-us" not in str(env) and "{env:US_CATALOG_PASSWORD}" in str(env)
    assert "executor" not in env["HYBRID_DAGSTER_PLANE"]


def test_residency_errors_are_value_free() -> None:
    assert issubclass(ResidencyViolation, ResidencyError)
