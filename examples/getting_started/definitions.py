"""Getting started: one EU plane and two assets pinned to it, checked before anything runs."""

import os
from pathlib import Path

import dagster as dg

from hybrid_dagster import DataPlane, ResidencyPolicy, enforce_residency, pinned

HOME = Path(os.environ.get("HYBRID_DAGSTER_HOME", ".getting-started")).resolve()

eu_onprem = DataPlane(
    name="eu-onprem",
    jurisdiction="EU",
    region="fra-dc2",
    location="on_prem",
    warehouse=f"file://{HOME / 'planes' / 'eu-onprem' / 'warehouse'}",
)


@dg.asset(
    key=["clinic", "admissions"],
    description="Admissions with patient ids (PHI): generated and kept inside eu-onprem.",
    **pinned(eu_onprem, "restricted", kinds={"iceberg"}),
)
def admissions(context: dg.AssetExecutionContext, eu_onprem: DataPlane) -> dg.MaterializeResult:
    work = eu_onprem.run(context, module="examples.getting_started.work.admissions")
    return work.get_materialize_result()


@dg.asset(
    key=["clinic", "admissions_per_ward"],
    deps=[admissions],
    description="Admissions per ward; wards with fewer than 10 admissions are left out.",
    **pinned(
        eu_onprem,
        "internal",
        kinds={"iceberg"},
        declassified="counts per ward, no patient ids, counts under 10 suppressed",
    ),
)
def admissions_per_ward(context: dg.AssetExecutionContext, eu_onprem: DataPlane) -> dg.MaterializeResult:
    work = eu_onprem.run(context, module="examples.getting_started.work.admissions_per_ward")
    return work.get_materialize_result()


defs = enforce_residency(
    dg.Definitions(
        assets=[admissions, admissions_per_ward],
        resources={"eu_onprem": eu_onprem, "residency_policy": ResidencyPolicy()},
    )
)
