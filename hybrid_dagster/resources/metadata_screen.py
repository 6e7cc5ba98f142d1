"""Screens what a plane's work reports, so that no row values of regulated data reach the orchestrator."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import dagster as dg

from hybrid_dagster.residency import ResidencyViolation

SAFE_VALUE_TYPES: tuple[type, ...] = (
    dg.IntMetadataValue,
    dg.FloatMetadataValue,
    dg.BoolMetadataValue,
    dg.TimestampMetadataValue,
    dg.TableSchemaMetadataValue,
    dg.PathMetadataValue,
    dg.UrlMetadataValue,
    dg.NullMetadataValue,
    dg.TableColumnLineageMetadataValue,
)
"""Metadata types that describe data without containing it: counts, times, schemas, locations."""

STANDARD_TEXT_KEYS = frozenset(
    {
        "dagster/table_name",
        "dagster/uri",
        "dagster/relation_identifier",
        "hybrid/plane",
        "hybrid/jurisdiction",
        "hybrid/classification",
        "hybrid/data_jurisdictions",
        "hybrid/watermark",
        "hybrid/source",
        "hybrid/decoder",
        "hybrid/schema_changes",
        "hybrid/transfer_routes",
    }
)
"""Text metadata keys whose values are identifiers or positions, never row values."""


def screen_reported_results(
    results: Iterable[dg.MaterializeResult | dg.AssetCheckResult],
    *,
    plane: str,
    allowed_text_keys: Sequence[str] = (),
) -> None:
    """Raise :class:`ResidencyViolation` if regulated work reported metadata that could hold row values.

    Example:
        >>> screen_reported_results([dg.MaterializeResult(metadata={"rows": 3})], plane="eu-onprem")
    """
    allowed = STANDARD_TEXT_KEYS | set(allowed_text_keys)
    for result in results:
        for key, value in (result.metadata or {}).items():
            normalized = value if isinstance(value, dg.MetadataValue) else dg.MetadataValue.text(str(value))
            if isinstance(normalized, SAFE_VALUE_TYPES):
                continue
            if isinstance(normalized, dg.TextMetadataValue) and key in allowed:
                continue
            subject = getattr(result, "asset_key", None)
            raise ResidencyViolation(
                f"plane {plane!r} reported metadata {key!r} ({type(normalized).__name__}) for regulated "
                f"asset {subject.to_user_string() if subject else '?'}: only counts, timestamps, schemas, "
                "paths and declared text keys may leave the plane (pass allowed_text_metadata= to declare "
                "an identifier key)"
            )
