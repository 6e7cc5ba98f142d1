"""Residency: the model (jurisdictions, classifications, routes, policy), the static graph check, the
runtime guard, labels on data at rest and the screen on what crosses back. Depends on nothing else in
hybrid-dagster but its errors and keys.

Example:
    >>> from hybrid_dagster.residency import Classification, ResidencyPolicy, TransferRoute
    >>> ResidencyPolicy().transfer_allowed("EU", "US", Classification.RESTRICTED)
    False
"""

from hybrid_dagster.errors import ResidencyError as ResidencyError, ResidencyViolation as ResidencyViolation
from hybrid_dagster.keys import (
    CLASSIFICATION_TAG as CLASSIFICATION_TAG,
    DECLASSIFIED_METADATA_KEY as DECLASSIFIED_METADATA_KEY,
    PLANE_TAG as PLANE_TAG,
)
from hybrid_dagster.residency.model import (
    Classification as Classification,
    Jurisdiction as Jurisdiction,
    PlaneRef as PlaneRef,
    ResidencyPolicy as ResidencyPolicy,
    TransferRoute as TransferRoute,
)
