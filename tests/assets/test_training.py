"""Training assets end to end: real scikit-learn training inside the pool's plane through dg.materialize,
burst to the cloud pool of the same jurisdiction, version parity, and the static residency check."""

import json
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pytest

from examples.clinical_ai.training import (
    EU_MODEL_KEY,
    US_MODEL_KEY,
    GpuFleet,
    gpu_fleet,
    model_assets,
    synthetic_clinical_inputs,
)
from examples.clinical_ai.work.readmission_features import FEATURES, readmission_dataset
from hybrid_dagster.assets.training import TrainingInput, training_asset
from hybrid_dagster.plane.models import load_model
from hybrid_dagster.resources import DataPlane
from hybrid_dagster.validation import validate_definitions
from tests.planes import make_plane

WORK = "examples.clinical_ai.work"


@dataclass
class Site:
    planes: dict[str, DataPlane]
    fleet: GpuFleet
    instance: dg.DagsterInstance


def _us_claims(plane: DataPlane) -> dg.AssetsDefinition:
    @dg.asset(key=["us", "claims"], tags={"hybrid/plane": plane.name, "hybrid/classification": "restricted"})
    def claims(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        return plane.run(context, module=f"{WORK}.us_claims").get_materialize_result()

    return claims


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("gpu-site")
    planes = {
        "eu-onprem": make_plane(root / "eu-onprem"),
        "eu-cloud": make_plane(root / "eu-cloud", name="eu-cloud", region="eu-central-1", location="cloud"),
        "us-onprem": make_plane(root / "us-onprem", name="us-onprem", jurisdiction="US", region="bos-dc1"),
        "us-cloud": make_plane(root / "us-cloud", name="us-cloud", jurisdiction="US", location="cloud"),
    }
    fleet = gpu_fleet(planes, f"sqlite:///{root / 'leases.db'}")
    with dg.instance_for_test() as instance:
        yield Site(planes, fleet, instance)


def _resources(site: Site) -> dict[str, DataPlane]:
    return {name.replace("-", "_"): plane for name, plane in site.planes.items()}


def _metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, object]:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_both_models_train_in_their_jurisdictions(site: Site) -> None:
    assets = [
        synthetic_clinical_inputs(site.planes["eu-onprem"]),
        _us_claims(site.planes["us-onprem"]),
        *model_assets(site.fleet),
    ]
    result = dg.materialize(assets, instance=site.instance, resources=_resources(site))
    assert result.success

    eu = _metadata(result, EU_MODEL_KEY)
    assert (eu["hybrid/gpu_pool"], eu["hybrid/jurisdiction"], eu["hybrid/placement"]) == (
        "eu-onprem-a100",
        "EU",
        "on-prem",
    )
    assert isinstance(eu["metric/roc_auc"], float) and eu["metric/roc_auc"] > 0.55  # real signal learned
    assert eu["hybrid/registry_table"] == "eu-onprem.models.registry"
    us = _metadata(result, US_MODEL_KEY)
    assert (us["hybrid/gpu_pool"], us["hybrid/jurisdiction"]) == ("us-onprem-l40s", "US")
    assert 0.0 <= float(us["metric/roc_auc"]) <= 1.0  # type: ignore[arg-type]

    # the artifact is a skops file in the EU plane's warehouse, loadable there, and it predicts
    eu_plane = site.planes["eu-onprem"]
    path = str(eu["model_path"])
    assert path.startswith(str(eu_plane.warehouse_path)) and path.endswith(".skops")
    model = load_model(eu_plane.spec(), path)
    catalog = eu_plane.load_catalog()
    X, _ = readmission_dataset(
        catalog.load_table("clinical.encounters").scan().to_arrow(),
        catalog.load_table("clinical.lab_results").scan().to_arrow(),
    )
    assert X.shape[1] == len(FEATURES)
    assert np.all((model.predict_proba(X)[:, 1] >= 0) & (model.predict_proba(X)[:, 1] <= 1))

    # the registry holds metadata only: metrics, input snapshot ids, pool, versions, code version
    (row,) = catalog.load_table("models.registry").scan().to_arrow().to_pylist()
    assert row["pool"] == "eu-onprem-a100" and row["jurisdiction"] == "EU"
    assert (row["driver_version"], row["cuda_version"], row["code_version"]) == ("550.54.15", "12.4", "1")
    assert row["cuda_visible_devices"] == "0"  # from the lease
    snapshots = {s["table"]: s["snapshot_id"] for s in json.loads(row["input_snapshots"])}
    assert (
        snapshots["clinical.encounters"]
        == catalog.load_table("clinical.encounters").current_snapshot().snapshot_id
    )
    assert json.loads(row["metrics"])["roc_auc"] == pytest.approx(eu["metric/roc_auc"])
    assert not any(p.suffix in {".pkl", ".pickle", ".joblib"} for p in eu_plane.warehouse_path.rglob("*"))
    # the US warehouse holds no EU data or model, and leases were released
    assert not (site.planes["us-onprem"].warehouse_path / "models" / "models__eu_readmission_risk").exists()
    assert site.fleet.eu_onprem.store().live_leases() == []


def test_a_full_on_prem_pool_bursts_to_the_eu_cloud(site: Site) -> None:
    fleet = site.fleet
    blocker = fleet.eu_onprem.store().acquire("eu-onprem-a100", gpus=8, capacity=8, run_id="other-run")
    try:
        (eu_model, _) = model_assets(fleet)
        result = dg.materialize([eu_model], instance=site.instance, resources=_resources(site))
    finally:
        fleet.eu_onprem.store().release(blocker.lease_id, "done")
    assert result.success
    eu = _metadata(result, EU_MODEL_KEY)
    assert (eu["hybrid/gpu_pool"], eu["hybrid/placement"], eu["hybrid/jurisdiction"]) == (
        "eu-cloud-h100",
        "burst (cloud)",
        "EU",
    )
    assert eu["hybrid/registry_table"] == "eu-cloud.models.registry"
    assert str(eu["model_path"]).startswith(str(site.planes["eu-cloud"].warehouse_path))


def test_a_lineage_on_other_versions_is_refused(site: Site) -> None:
    fleet = site.fleet
    site.fleet.eu_onprem.store().record_lineage("legacy-lineage", ("470.82", "11.4"), "old-pool")
    asset = training_asset(
        key="models/legacy",
        module=f"{WORK}.train_readmission",
        pools=[fleet.eu_onprem, fleet.eu_cloud],
        inputs=[TrainingInput("clinical/encounters", site.planes["eu-onprem"], "clinical.encounters")],
        lineage="legacy-lineage",
    )
    result = dg.materialize([asset], instance=site.instance, resources=_resources(site), raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.error.to_string()
    assert "NoEligiblePool: no GPU pool may take training asset 'models/legacy'" in message
    assert "differ from model lineage 'legacy-lineage' (driver 470.82 / CUDA 11.4)" in message


def test_validate_refuses_a_us_pool_for_eu_data(site: Site) -> None:
    fleet = site.fleet
    misplaced = training_asset(
        key="models/eu_on_us_gpus",
        module=f"{WORK}.train_readmission",
        pools=[fleet.us_onprem],
        inputs=[TrainingInput("clinical/encounters", site.planes["eu-onprem"], "clinical.encounters")],
    )
    defs = dg.Definitions(
        assets=[synthetic_clinical_inputs(site.planes["eu-onprem"]), misplaced], resources=_resources(site)
    )
    report = validate_definitions(defs)
    assert not report.ok
    (line,) = [x for x in report.lines() if "models/eu_on_us_gpus" in x]
    assert "clinical/encounters (eu-onprem, EU) -> models/eu_on_us_gpus (us-onprem, US)" in line
    assert "restricted" in line
