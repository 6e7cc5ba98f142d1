"""The run-time write guard: unit checks and real runs that bypass the static check."""

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from hybrid_dagster.pinning import pinned
from hybrid_dagster.residency import (
    Classification,
    ResidencyError,
    ResidencyPolicy,
    ResidencyViolation,
    TransferRoute,
)
from hybrid_dagster.residency.guard import WriteIntent, check_write, write_intent_for
from hybrid_dagster.resources.data_plane import DataPlane
from hybrid_dagster.resources.iceberg_io_manager import PlaneIcebergIOManager
from hybrid_dagster.validation import validate_definitions
from tests.defs.common import plane

EU_US_RESTRICTED = TransferRoute(
    source="EU", target="US", legal_basis="GDPR Art. 46 SCCs", classifications=["restricted"]
)


@pytest.fixture
def planes(tmp_path: Path) -> dict[str, DataPlane]:
    return {
        "eu": plane("eu-onprem", "EU", str(tmp_path)),
        "uk": plane("uk-onprem", "UK", str(tmp_path)),
        "us": plane("us-cloud", "US", str(tmp_path)),
    }


def _tables(p: DataPlane) -> list[tuple[str, ...]]:
    catalog = p.load_catalog()
    return [t for ns in catalog.list_namespaces() for t in catalog.list_tables(ns)]


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    failures = result.get_step_failure_events()
    assert failures, "expected a failed step"
    error = failures[0].step_failure_data.error
    assert error is not None
    return error.to_string()


def test_check_write_blocks_regulated_data_leaving_its_jurisdiction(planes: dict[str, DataPlane]) -> None:
    intent = WriteIntent("patients", Classification.RESTRICTED, "eu-onprem", frozenset({"EU"}))

    with pytest.raises(ResidencyViolation) as raised:
        check_write(intent, planes["us"], ResidencyPolicy())

    message = str(raised.value)
    assert "asset 'patients'" in message
    assert "plane 'us-cloud' (US)" in message
    assert "data in EU" in message
    assert "restricted data may not move from EU to US" in message


def test_check_write_allows_home_jurisdiction_unregulated_data_and_declared_routes(
    planes: dict[str, DataPlane],
) -> None:
    restricted = WriteIntent("patients", Classification.RESTRICTED, "eu-onprem", frozenset({"EU"}))
    internal = WriteIntent("counts", Classification.INTERNAL, "eu-onprem", frozenset({"EU"}))

    assert check_write(restricted, plane("eu-cloud", "EU"), ResidencyPolicy()) == []
    assert check_write(internal, planes["us"], ResidencyPolicy()) == []
    assert check_write(restricted, planes["us"], ResidencyPolicy(routes=[EU_US_RESTRICTED])) == [
        EU_US_RESTRICTED
    ]


def test_check_write_needs_a_route_from_every_data_jurisdiction(planes: dict[str, DataPlane]) -> None:
    intent = WriteIntent("joined", Classification.CONFIDENTIAL, "eu-onprem", frozenset({"EU", "UK"}))
    only_eu = ResidencyPolicy(
        routes=[TransferRoute(source="EU", target="US", legal_basis="SCCs", classifications=["confidential"])]
    )

    with pytest.raises(ResidencyViolation, match="data in UK"):
        check_write(intent, planes["us"], only_eu)


def test_confidential_write_refused_on_a_route_for_internal_only(planes: dict[str, DataPlane]) -> None:
    intent = WriteIntent("claims", Classification.CONFIDENTIAL, "eu-onprem", frozenset({"EU"}))
    internal_only = ResidencyPolicy(
        routes=[TransferRoute(source="EU", target="US", legal_basis="SCCs", classifications=["internal"])]
    )

    with pytest.raises(ResidencyViolation, match="covers only internal"):
        check_write(intent, planes["us"], internal_only)


def _misconfigured(planes: dict[str, DataPlane], policy: ResidencyPolicy) -> dg.Definitions:
    @dg.asset(key_prefix="clinical", **pinned("eu-onprem", "restricted"))
    def patients() -> pa.Table:
        return pa.table({"patient_id": [1, 2, 3], "diagnosis": ["J45", "E11", "I10"]})

    io_manager = PlaneIcebergIOManager(
        planes=list(planes.values()),
        regulated_rows_in_step_process=True,
        policy=policy,
        target_plane="us-cloud",
    )
    return dg.Definitions(assets=[patients], resources={"io_manager": io_manager})


def test_guard_stops_a_wrong_write_when_the_static_check_is_bypassed(planes: dict[str, DataPlane]) -> None:
    defs = _misconfigured(planes, ResidencyPolicy())
    # The graph itself is clean (the asset is pinned to the EU): only the IO manager's target is wrong.
    plain = PlaneIcebergIOManager(planes=list(planes.values()), regulated_rows_in_step_process=True)
    assert validate_definitions(
        dg.Definitions(assets=defs.assets, resources={**planes, "io_manager": plain})
    ).ok

    result = dg.materialize(defs.assets, resources=defs.resources, raise_on_error=False)  # type: ignore[arg-type]

    assert not result.success
    text = _failure_text(result)
    assert "ResidencyViolation" in text
    assert "write of asset 'clinical/patients' (restricted, home plane 'eu-onprem', data in EU)" in text
    assert "into plane 'us-cloud' (US) blocked" in text
    assert _tables(planes["us"]) == []
    assert _tables(planes["eu"]) == []


def test_guard_allows_the_same_write_on_a_declared_route(planes: dict[str, DataPlane]) -> None:
    defs = _misconfigured(planes, ResidencyPolicy(routes=[EU_US_RESTRICTED]))

    result = dg.materialize(defs.assets, resources=defs.resources)  # type: ignore[arg-type]

    assert result.success
    assert _tables(planes["us"]) == [("clinical", "patients")]
    [materialization] = result.asset_materializations_for_node("clinical__patients")
    assert materialization.metadata["hybrid/transfer_routes"].value == "EU->US (GDPR Art. 46 SCCs)"


def test_guard_follows_regulated_data_into_a_subset_run(planes: dict[str, DataPlane]) -> None:
    """A US asset tagged internal but fed by restricted EU data is refused, even materialized alone."""

    @dg.asset(**pinned("eu-onprem", "restricted"))
    def patients() -> pa.Table:
        return pa.table({"patient_id": [1, 2]})

    @dg.asset(**pinned("eu-onprem", "internal"))
    def visits(patients: pa.Table) -> pa.Table:
        return patients

    @dg.asset(**pinned("us-cloud", "internal"))
    def us_copy(visits: pa.Table) -> pa.Table:
        return visits

    resources = {
        "io_manager": PlaneIcebergIOManager(planes=list(planes.values()), regulated_rows_in_step_process=True)
    }
    assets = [patients, visits, us_copy]
    instance = dg.DagsterInstance.ephemeral()
    upstream = dg.materialize(
        assets, resources=resources, selection=["patients", "visits"], instance=instance
    )
    assert upstream.success
    [visits_written] = upstream.asset_materializations_for_node("visits")
    assert visits_written.metadata["hybrid/classification"].value == "restricted"
    assert visits_written.metadata["hybrid/data_jurisdictions"].value == "EU"

    result = dg.materialize(
        assets, resources=resources, selection=["us_copy"], instance=instance, raise_on_error=False
    )

    assert not result.success
    text = _failure_text(result)
    assert "write of asset 'us_copy' (restricted, home plane 'us-cloud', data in EU)" in text
    assert _tables(planes["us"]) == []

    # Without a recorded classification for 'visits' (a fresh instance) the guard fails closed: the IO
    # manager refuses even to load the input, whose sensitivity it cannot tell.
    unknown = dg.materialize(assets, resources=resources, selection=["us_copy"], raise_on_error=False)
    assert not unknown.success
    assert "the write guard cannot tell how sensitive the data of 'visits' is" in _failure_text(unknown)


def test_write_intent_from_an_asset_context(planes: dict[str, DataPlane]) -> None:
    seen: list[WriteIntent] = []
    uk_source = dg.AssetSpec("uk_registry", **pinned("uk-onprem", "confidential"))

    @dg.asset(deps=[uk_source], **pinned("eu-onprem", "internal"))
    def merged(context: dg.AssetExecutionContext) -> None:
        seen.append(write_intent_for(context, planes))

    assert dg.materialize([uk_source, merged]).success

    assert seen == [WriteIntent("merged", Classification.CONFIDENTIAL, "eu-onprem", frozenset({"EU", "UK"}))]


def test_guard_fails_closed_on_unpinned_or_unknown_planes(planes: dict[str, DataPlane]) -> None:
    @dg.asset
    def untagged() -> pa.Table:
        return pa.table({"a": [1]})

    @dg.asset(**pinned("mars-base", "public"))
    def martian() -> pa.Table:
        return pa.table({"a": [1]})

    io_manager = PlaneIcebergIOManager(planes=list(planes.values()), regulated_rows_in_step_process=True)
    for asset, expected in [
        (untagged, "asset 'untagged' has no 'hybrid/plane' tag"),
        (martian, "plane 'mars-base', unknown here"),
    ]:
        result = dg.materialize([asset], resources={"io_manager": io_manager}, raise_on_error=False)
        assert not result.success
        text = _failure_text(result)
        assert ResidencyError.__name__ in text
        assert expected in text
