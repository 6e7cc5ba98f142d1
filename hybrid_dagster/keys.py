"""Every tag, metadata, property, resource and environment key hybrid-dagster reads or writes.

One place, so that a renamed key is a one-line change and every part of the package agrees on it.

Example:
    >>> from hybrid_dagster.keys import PLANE_TAG, plane_resource_key
    >>> PLANE_TAG, plane_resource_key("eu-onprem")
    ('hybrid/plane', 'eu_onprem')
"""

from __future__ import annotations

PLANE_TAG = "hybrid/plane"
"""Asset (and op) tag: the name of the DataPlane the asset lives in."""

CLASSIFICATION_TAG = "hybrid/classification"
"""Asset (and op) tag: public < internal < confidential < restricted."""

GPU_POOL_TAG = "hybrid/gpu_pool"
"""Asset tag: the GPU pool a training asset runs on."""

DECLASSIFIED_METADATA_KEY = "hybrid/declassified"
"""Asset metadata: the written justification of a declassification (a non-empty string)."""

DATA_JURISDICTIONS_METADATA_KEY = "hybrid/data_jurisdictions"
"""Materialization metadata: comma-separated jurisdictions the written data legally lives in."""

SOURCE_JURISDICTION_METADATA_KEY = "hybrid/source_jurisdiction"
"""Asset metadata: the jurisdiction of an external source the asset reads (e.g. a CDC database)."""

JURISDICTION_METADATA_KEY = "hybrid/jurisdiction"
TRANSFER_ROUTES_METADATA_KEY = "hybrid/transfer_routes"

POLICY_RESOURCE_KEY = "residency_policy"
"""Resource key of the one ResidencyPolicy of a Definitions."""

RESIDENCY_EXTRAS_KEY = "hybrid_residency"
"""Dagster Pipes extras key under which DataPlane.run passes the residency contract to the plane."""

PLANE_CONFIG_ENV = "HYBRID_DAGSTER_PLANE"
"""Environment variable carrying the plane's secret-free configuration into the plane's work."""

REFUSED_KEY = "hybrid_dagster_refused"
"""Pipes custom-message key under which the in-plane launcher tells the orchestrator why it refused."""

LABEL_PREFIX = "hybrid."
"""Prefix of the Iceberg table properties that label data at rest."""

LABEL_PLANE = "hybrid.plane"
LABEL_JURISDICTION = "hybrid.jurisdiction"
LABEL_CLASSIFICATION = "hybrid.classification"
LABEL_DATA_JURISDICTIONS = "hybrid.data_jurisdictions"
LABEL_ASSET = "hybrid.asset"


def plane_resource_key(plane_name: str) -> str:
    """The conventional resource key of a plane: its name with ``-`` replaced by ``_``.

    Example:
        >>> plane_resource_key("us-cloud")
        'us_cloud'
    """
    return plane_name.replace("-", "_")
