"""A clean graph: restricted data stays in the EU; only a declassified aggregate reaches the US."""

import dagster as dg

from hybrid_dagster.pinning import pinned
from tests.defs.common import PLANES, POLICY

patients = dg.AssetSpec("patients", **pinned("eu-onprem", "restricted"))


@dg.asset(deps=[patients], **pinned("eu-cloud", "restricted"))
def cohort() -> None: ...


@dg.asset(deps=[cohort], **pinned("eu-cloud", "internal", declassified="counts per ward, k >= 10"))
def ward_counts() -> None: ...


@dg.asset(deps=[ward_counts], **pinned("us-cloud", "internal"))
def global_dashboard() -> None: ...


defs = dg.Definitions(
    assets=[patients, cohort, ward_counts, global_dashboard],
    resources={**PLANES, "residency_policy": POLICY},
)
