"""Two violations: a direct restricted EU->US edge, and one two hops down through an internal-tagged asset."""

import dagster as dg

from hybrid_dagster.pinning import pinned
from tests.defs.common import PLANES, POLICY

patients = dg.AssetSpec("patients", **pinned("eu-onprem", "restricted"))


@dg.asset(deps=[patients], **pinned("us-cloud", "restricted"))
def us_copy() -> None: ...


@dg.asset(deps=[patients], **pinned("eu-cloud", "internal"))
def visit_stats() -> None: ...


@dg.asset(deps=[visit_stats], **pinned("us-cloud", "internal"))
def us_dashboard() -> None: ...


defs = dg.Definitions(
    assets=[patients, us_copy, visit_stats, us_dashboard],
    resources={**PLANES, "residency_policy": POLICY},
)
