"""Meridian Health's four data planes and its residency policy."""

from __future__ import annotations

import os
from pathlib import Path

from hybrid_dagster.residency import ResidencyPolicy, TransferRoute
from hybrid_dagster.resources import DataPlane

HOME = Path(os.environ.get("HYBRID_DAGSTER_HOME", ".demo")).resolve()
EU_DB_DSN_ENV = "MERIDIAN_EU_CLINICAL_DSN"


def _plane(name: str, jurisdiction: str, region: str, location: str) -> DataPlane:
    return DataPlane(
        name=name,
        jurisdiction=jurisdiction,
        region=region,
        location=location,  # type: ignore[arg-type]
        warehouse=f"file://{HOME / 'planes' / name / 'warehouse'}",
        owners=["team:platform"],
    )


EU_ONPREM = _plane("eu-onprem", "EU", "fra-dc2", "on_prem")
EU_CLOUD = _plane("eu-cloud", "EU", "eu-central-1", "cloud")
US_ONPREM = _plane("us-onprem", "US", "bos-dc1", "on_prem")
US_CLOUD = _plane("us-cloud", "US", "us-east-1", "cloud")
PLANES = [EU_ONPREM, EU_CLOUD, US_ONPREM, US_CLOUD]

POLICY = ResidencyPolicy(
    routes=[
        TransferRoute(
            source="EU",
            target="US",
            legal_basis="GDPR Art. 46(2)(c) standard contractual clauses",
            classifications=["confidential"],
            description="De-identified aggregates only (k >= 10), for the group-wide ward benchmark.",
            egress_usd_per_gb=0.09,
        )
    ],
    strict=True,
)


def resource_key(plane: DataPlane) -> str:
    return plane.name.replace("-", "_")
