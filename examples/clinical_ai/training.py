"""Meridian Health's GPU pools, its two models (EU readmission risk, US high-cost claims), the cost
teardown sensor and the GPU cost report.

Each model is trained on its own jurisdiction's data, on a pool of that jurisdiction: the EU model on EU
encounters and lab results, on-prem in Frankfurt first and bursting to the EU cloud region; the US model on
US claims, on-prem in Boston first, bursting to us-east-1. Wire it into a code location with::

    from examples.clinical_ai.training import gpu_assets, gpu_sensors
    defs = dg.Definitions(assets=[..., *gpu_assets], sensors=[*gpu_sensors], resources={...planes...})
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import dagster as dg

from examples.clinical_ai.planes import EU_CLOUD, EU_ONPREM, HOME, US_CLOUD, US_ONPREM
from hybrid_dagster.assets.gpu_cost import gpu_cost_report_asset
from hybrid_dagster.assets.training import TrainingInput, training_asset
from hybrid_dagster.pinning import pinned
from hybrid_dagster.resources import DataPlane, Ec2GpuSettings, GpuPool
from hybrid_dagster.sensors import gpu_teardown_sensor

WORK = "examples.clinical_ai.work"
EU_MODEL_KEY = dg.AssetKey(["models", "eu_readmission_risk"])
US_MODEL_KEY = dg.AssetKey(["models", "us_high_cost_claims"])


@dataclass(frozen=True)
class GpuFleet:
    """The example's four pools (one per plane), built for given planes and one lease store."""

    eu_onprem: GpuPool
    eu_cloud: GpuPool
    us_onprem: GpuPool
    us_cloud: GpuPool

    @property
    def pools(self) -> list[GpuPool]:
        return [self.eu_onprem, self.eu_cloud, self.us_onprem, self.us_cloud]


def gpu_fleet(
    planes: Mapping[str, DataPlane], lease_store: str, *, ec2_endpoint: str | None = None
) -> GpuFleet:
    """Pools in the planes named eu-onprem, eu-cloud, us-onprem and us-cloud."""
    return GpuFleet(
        eu_onprem=GpuPool(
            name="eu-onprem-a100",
            plane=planes["eu-onprem"],
            location="on_prem",
            accelerator="A100-80GB",
            capacity_gpus=8,
            price_per_gpu_hour=1.10,  # amortised hardware, power and cooling
            driver_version="550.54.15",
            cuda_version="12.4",
            idle_minutes=60,
            max_lifetime_hours=None,
            protected=True,  # the on-prem rack is never powered down by the sensor
            team="clinical-ml",
            lease_store=lease_store,
        ),
        eu_cloud=GpuPool(
            name="eu-cloud-h100",
            plane=planes["eu-cloud"],
            location="cloud",
            accelerator="H100",
            capacity_gpus=16,
            price_per_gpu_hour=3.20,
            driver_version="550.54.15",
            cuda_version="12.4",
            idle_minutes=20,
            max_lifetime_hours=24,
            team="clinical-ml",
            backend="ec2",
            ec2=Ec2GpuSettings(region="eu-central-1", endpoint_url=ec2_endpoint, instance_type="p5.48xlarge"),
            lease_store=lease_store,
        ),
        us_onprem=GpuPool(
            name="us-onprem-l40s",
            plane=planes["us-onprem"],
            location="on_prem",
            accelerator="L40S",
            capacity_gpus=4,
            price_per_gpu_hour=0.90,
            driver_version="535.104.05",
            cuda_version="12.2",
            idle_minutes=60,
            max_lifetime_hours=None,
            protected=True,
            team="us-revenue-cycle",
            lease_store=lease_store,
        ),
        us_cloud=GpuPool(
            name="us-cloud-a10g",
            plane=planes["us-cloud"],
            location="cloud",
            accelerator="A10G",
            capacity_gpus=16,
            price_per_gpu_hour=1.25,
            driver_version="535.104.05",
            cuda_version="12.2",
            idle_minutes=30,
            max_lifetime_hours=72,
            team="us-revenue-cycle",
            backend="ec2",
            ec2=Ec2GpuSettings(region="us-east-1", endpoint_url=ec2_endpoint, instance_type="g5.12xlarge"),
            lease_store=lease_store,
        ),
    )


def model_assets(fleet: GpuFleet) -> list[dg.AssetsDefinition]:
    """The EU readmission model and the US high-cost-claims model."""
    eu_plane, us_plane = fleet.eu_onprem.plane, fleet.us_onprem.plane
    eu = training_asset(
        key=EU_MODEL_KEY,
        module=f"{WORK}.train_readmission",
        pools=[fleet.eu_onprem, fleet.eu_cloud],
        inputs=[
            TrainingInput(["clinical", "encounters"], eu_plane, "clinical.encounters"),
            TrainingInput(["clinical", "lab_results"], eu_plane, "clinical.lab_results"),
        ],
        lineage="eu-readmission-risk",
        group_name="eu_ml",
        owners=["team:clinical-ml"],
        description="30-day readmission risk (logistic regression) on EU encounters and lab results.",
    )
    us = training_asset(
        key=US_MODEL_KEY,
        module=f"{WORK}.train_claims_cost",
        pools=[fleet.us_onprem, fleet.us_cloud],
        inputs=[TrainingInput(["us", "claims"], us_plane, "claims.claims")],
        lineage="us-high-cost-claims",
        group_name="us_ml",
        owners=["team:us-revenue-cycle"],
        description="Which claims land in the top cost quartile (random forest) on US claims.",
    )
    return [eu, us]


def synthetic_clinical_inputs(plane: DataPlane) -> dg.AssetsDefinition:
    """Stand-ins for the CDC tables ``clinical/encounters`` and ``clinical/lab_results`` (tests and the
    standalone GPU demo; the full example streams them from PostgreSQL instead)."""
    args = pinned(plane.name, "restricted", kinds={"iceberg", "pyarrow"})

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                ["clinical", "encounters"], tags=args["tags"], kinds=args["kinds"], group_name="eu_clinical"
            ),
            dg.AssetSpec(
                ["clinical", "lab_results"], tags=args["tags"], kinds=args["kinds"], group_name="eu_clinical"
            ),
        ],
        name="synthetic_clinical_tables",
    )
    def _synthetic(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
        for result in plane.run(context, module=f"{WORK}.synthetic_clinical").get_results():
            if isinstance(result, dg.MaterializeResult):
                yield result

    return _synthetic


_planes = {p.name: p for p in (EU_ONPREM, EU_CLOUD, US_ONPREM, US_CLOUD)}
FLEET = gpu_fleet(_planes, f"sqlite:///{HOME / 'gpu' / 'leases.db'}")
gpu_assets: list[dg.AssetsDefinition] = [
    *model_assets(FLEET),
    gpu_cost_report_asset(FLEET.pools, plane=EU_ONPREM.name),
]
gpu_sensors: list[dg.SensorDefinition] = [gpu_teardown_sensor(FLEET.pools, dry_run=True)]
