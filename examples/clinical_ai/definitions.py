"""Meridian Health: CDC of the EU clinical database, features, aggregates and a cross-border benchmark.

EU (eu-onprem, eu-cloud): patient data is captured from the operational PostgreSQL database into Iceberg
on-prem; lab features for model training go to the EU cloud plane; ward occupancy is de-identified
before anything leaves the EU. US (us-onprem, us-cloud): claims stay on-prem; the group benchmark in the
US cloud combines US claims totals with the EU aggregate along the declared SCC route.

Load with ``dagster dev -m examples.clinical_ai.definitions``; check with
``hybrid-dagster validate -m examples.clinical_ai.definitions``.
"""

import dagster as dg

from examples.clinical_ai.planes import (
    EU_CLOUD,
    EU_DB_DSN_ENV,
    EU_ONPREM,
    PLANES,
    POLICY,
    US_CLOUD,
    US_ONPREM,
)
from hybrid_dagster.assets.cdc_tables import CdcTable, cdc_table_assets
from hybrid_dagster.cdc.sources.config import PostgresCdcSource
from hybrid_dagster.pinning import pinned
from hybrid_dagster.residency import ResidencyPolicy
from hybrid_dagster.resources import DataPlane
from hybrid_dagster.validation import enforce_residency

OWNERS = ["team:clinical-data"]

clinical_cdc = cdc_table_assets(
    name="eu_clinical_cdc",
    source=PostgresCdcSource(dsn_env=EU_DB_DSN_ENV, slot_name="meridian_eu", decoder="pgoutput"),
    plane=EU_ONPREM,
    source_jurisdiction="EU",  # the clinical database is in Frankfurt
    tables=[
        CdcTable("public.patients", "restricted", description="Patient master data (PHI)."),
        CdcTable("public.encounters", "restricted", description="Admissions and discharges (PHI)."),
        CdcTable("public.lab_results", "restricted", description="Laboratory results (PHI)."),
    ],
    namespace="clinical",
    key_prefix=["clinical"],
    group_name="eu_clinical",
    owners=OWNERS,
)

WORK = "examples.clinical_ai.work"


@dg.asset(
    key=["analytics", "eu_ward_occupancy"],
    deps=[dg.AssetKey(["clinical", "encounters"])],
    group_name="eu_clinical",
    owners=OWNERS,
    description="Admissions per ward and month; cells under k=10 suppressed. Safe to share group-wide.",
    **pinned(
        EU_ONPREM,
        "confidential",
        kinds={"iceberg", "pyarrow"},
        declassified="de-identified aggregate: admissions per ward per month, cells under 10 suppressed",
    ),
)
def eu_ward_occupancy(context: dg.AssetExecutionContext, eu_onprem: DataPlane) -> dg.MaterializeResult:
    return eu_onprem.run(
        context, module=f"{WORK}.ward_occupancy", allowed_metadata_keys=["suppressed_below_k"]
    ).get_materialize_result()


@dg.asset(
    key=["features", "eu_lab_features"],
    deps=[dg.AssetKey(["clinical", "lab_results"]), dg.AssetKey(["clinical", "encounters"])],
    group_name="eu_ml",
    owners=["team:ml-platform"],
    description="Per-patient lab features for the readmission model; trained on in the EU cloud plane.",
    **pinned(EU_CLOUD, "restricted", kinds={"iceberg", "pyarrow"}),
)
def eu_lab_features(
    context: dg.AssetExecutionContext, eu_cloud: DataPlane, eu_onprem: DataPlane
) -> dg.MaterializeResult:
    return eu_cloud.run(context, module=f"{WORK}.lab_features").get_materialize_result()


@dg.asset(
    key=["us", "claims"],
    group_name="us_claims",
    owners=["team:us-revenue-cycle"],
    description="Synthetic insurance claims of the US hospitals (PHI).",
    **pinned(US_ONPREM, "restricted", kinds={"iceberg", "pyarrow"}),
)
def us_claims(context: dg.AssetExecutionContext, us_onprem: DataPlane) -> dg.MaterializeResult:
    return us_onprem.run(context, module=f"{WORK}.us_claims").get_materialize_result()


@dg.asset(
    key=["us", "claims_by_ward"],
    deps=[us_claims],
    group_name="us_claims",
    owners=["team:us-revenue-cycle"],
    description="Claim counts and totals per ward; no patient identifiers.",
    **pinned(
        US_ONPREM,
        "internal",
        kinds={"iceberg", "pyarrow"},
        declassified="totals per ward, no identifiers, cells with fewer than 10 claims suppressed",
    ),
)
def us_claims_by_ward(context: dg.AssetExecutionContext, us_onprem: DataPlane) -> dg.MaterializeResult:
    return us_onprem.run(context, module=f"{WORK}.claims_by_ward").get_materialize_result()


@dg.asset(
    key=["analytics", "group_ward_benchmark"],
    deps=[eu_ward_occupancy, us_claims_by_ward],
    group_name="group_analytics",
    owners=["team:group-analytics"],
    description="Group-wide ward benchmark: EU occupancy (via the SCC route) beside US claims.",
    **pinned(US_CLOUD, "confidential", kinds={"iceberg", "pyarrow"}),
)
def group_ward_benchmark(
    context: dg.AssetExecutionContext,
    us_cloud: DataPlane,
    eu_onprem: DataPlane,
    us_onprem: DataPlane,
    residency_policy: ResidencyPolicy,  # the declared EU->US route this transfer relies on
) -> dg.MaterializeResult:
    return us_cloud.run(context, module=f"{WORK}.ward_benchmark").get_materialize_result()


eu_clinical_cdc_job = dg.define_asset_job(
    "stream_eu_clinical",
    selection=dg.AssetSelection.groups("eu_clinical"),
    description="Stream the EU clinical DB.",
)

defs = enforce_residency(
    dg.Definitions(
        jobs=[eu_clinical_cdc_job],
        schedules=[dg.ScheduleDefinition(job=eu_clinical_cdc_job, cron_schedule="*/5 * * * *")],
        assets=[
            clinical_cdc,
            eu_ward_occupancy,
            eu_lab_features,
            us_claims,
            us_claims_by_ward,
            group_ward_benchmark,
        ],
        resources={
            **{plane.name.replace("-", "_"): plane for plane in PLANES},
            "residency_policy": POLICY,
        },
    )
)

__all__ = ["EU_CLOUD", "US_CLOUD", "US_ONPREM", "defs"]
