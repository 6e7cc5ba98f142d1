"""Planes and policies shared by the test Definitions modules."""

from __future__ import annotations

from hybrid_dagster.residency import ResidencyPolicy, TransferRoute
from hybrid_dagster.resources.data_plane import DataPlane


def plane(name: str, jurisdiction: str, root: str = "/tmp/hybrid-dagster-tests") -> DataPlane:
    return DataPlane(
        name=name,
        jurisdiction=jurisdiction,
        region=f"{jurisdiction.lower()}-1",
        location="on_prem" if name.endswith("onprem") else "cloud",
        warehouse=f"file://{root}/{name}",
    )


EU_ONPREM = plane("eu-onprem", "EU")
EU_CLOUD = plane("eu-cloud", "EU")
US_CLOUD = plane("us-cloud", "US")

SCC_INTERNAL = TransferRoute(
    source="EU", target="US", legal_basis="GDPR Art. 46 SCCs", classifications=["internal"]
)
POLICY = ResidencyPolicy(routes=[SCC_INTERNAL])
PLANES = {"eu_onprem": EU_ONPREM, "eu_cloud": EU_CLOUD, "us_cloud": US_CLOUD}
