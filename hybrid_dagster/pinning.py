"""Pin assets to a data plane and a classification without writing the tags by hand."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

from hybrid_dagster.residency import (
    CLASSIFICATION_TAG,
    DECLASSIFIED_METADATA_KEY,
    PLANE_TAG,
    Classification,
)


class PinnedAssetArgs(TypedDict):
    tags: dict[str, str]
    kinds: set[str]
    metadata: dict[str, Any]


def pinned(
    plane: str,
    classification: str | Classification,
    *,
    kinds: Iterable[str] = (),
    tags: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    declassified: str | None = None,
) -> PinnedAssetArgs:
    """Keyword arguments that pin an asset (or ``AssetSpec``) to a plane and a classification.

    ``declassified`` is the written justification for publishing this asset at a lower classification
    than its inputs (e.g. an aggregate with k-anonymity >= 10); without it, the asset inherits the most
    sensitive classification of its upstream assets.

    Example:
        .. code-block:: python

            import dagster as dg
            from hybrid_dagster import pinned

            @dg.asset(**pinned("eu-onprem", "restricted", kinds={"iceberg"}))
            def patients() -> None: ...

            @dg.asset(
                deps=[patients],
                **pinned("eu-onprem", "internal", declassified="counts per ward, k >= 10"),
            )
            def ward_counts() -> None: ...
    """
    level = Classification.parse(classification)
    all_tags = {**(tags or {}), PLANE_TAG: plane, CLASSIFICATION_TAG: level.value}
    all_metadata: dict[str, Any] = dict(metadata or {})
    if declassified is not None:
        if not declassified.strip():
            raise ValueError(f"asset pinned to {plane!r}: a declassification needs a written justification")
        all_metadata[DECLASSIFIED_METADATA_KEY] = declassified
    return PinnedAssetArgs(tags=all_tags, kinds=set(kinds), metadata=all_metadata)
