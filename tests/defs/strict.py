"""A strict module: enforce_residency makes the import itself fail."""

import dagster as dg

from hybrid_dagster.pinning import pinned
from hybrid_dagster.validation import enforce_residency
from tests.defs.common import PLANES, POLICY

patients = dg.AssetSpec("patients", **pinned("eu-onprem", "restricted"))


@dg.asset(deps=[patients], **pinned("us-cloud", "restricted"))
def us_copy() -> None: ...


defs = enforce_residency(
    dg.Definitions(assets=[patients, us_copy], resources={**PLANES, "residency_policy": POLICY})
)
