"""One access declaration for the tests: an EU and a US plane with the default tiers."""

from __future__ import annotations

import uuid

from hybrid_dagster.access import AccessTiers, PlaneAccess
from hybrid_dagster.residency import Classification

CLASSES = list(Classification)


def declaration(suffix: str | None = None) -> AccessTiers:
    """EU and US planes; ``suffix`` makes the names unique on a shared server."""
    tag = suffix or uuid.uuid4().hex[:6]
    return AccessTiers(
        planes=[
            PlaneAccess(
                plane=f"eu-{tag}",
                jurisdiction="EU",
                namespace=f"clinical-eu-{tag}",
                bucket="meridian-warehouse",
                bucket_prefix=f"eu-{tag}",
            ),
            PlaneAccess(
                plane=f"us-{tag}",
                jurisdiction="US",
                namespace=f"clinical-us-{tag}",
                bucket="meridian-warehouse",
                bucket_prefix=f"us-{tag}",
            ),
        ]
    )
