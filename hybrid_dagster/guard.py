"""Moved to :mod:`hybrid_dagster.residency.guard`; this module keeps the old import path working."""

from hybrid_dagster.keys import DATA_JURISDICTIONS_METADATA_KEY as DATA_JURISDICTIONS_METADATA_KEY
from hybrid_dagster.residency.guard import (
    StepResidency as StepResidency,
    WriteIntent as WriteIntent,
    asset_graph_of as asset_graph_of,
    check_write as check_write,
    intent_from_residency as intent_from_residency,
    recorded_residency_metadata as recorded_residency_metadata,
    write_intent_for as write_intent_for,
)
