"""Pin assets to a data plane and a classification without writing the tags by hand.

Correctness rules:

* The tags ``hybrid/plane`` and ``hybrid/classification`` are the contract every residency check reads;
  the plane gives the jurisdiction.
* The plane's name and its jurisdiction code are also added as asset ``kinds``: Dagster draws kinds on
  every node of the lineage graph (tags only show on the asset page), so a reader of the graph sees
  where each asset lives. Kinds are for display; no check reads them. Given a plane object, the
  jurisdiction shown is the plane's own; given a name, it is the ``jurisdiction`` argument (or none).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypedDict

from hybrid_dagster.residency import (
    CLASSIFICATION_TAG,
    DECLASSIFIED_METADATA_KEY,
    PLANE_TAG,
    Classification,
    Jurisdiction,
)


class PlaneLike(Protocol):
    """What :func:`pinned` needs of a plane: a ``DataPlane`` (or anything with these two attributes)."""

    @property
    def name(self) -> str: ...

    @property
    def jurisdiction(self) -> str: ...


class PinnedAssetArgs(TypedDict):
    tags: dict[str, str]
    kinds: set[str]
    metadata: dict[str, Any]


def pinned(
    plane: str | PlaneLike,
    classification: str | Classification,
    *,
    jurisdiction: str | Jurisdiction | None = None,
    kinds: Iterable[str] = (),
    tags: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    declassified: str | None = None,
) -> PinnedAssetArgs:
    """Keyword arguments that pin an asset (or ``AssetSpec``) to a plane and a classification.

    ``plane`` is a :class:`~hybrid_dagster.resources.DataPlane` or its name. The plane's name and
    jurisdiction are added to ``kinds`` so the lineage graph shows them on the asset's node; pass
    ``jurisdiction`` when giving the plane by name (a plane object brings its own; both must agree).

    ``declassified`` is the written justification for publishing this asset at a lower classification
    than its inputs (e.g. an aggregate with k-anonymity >= 10); without it, the asset inherits the most
    sensitive classification of its upstream assets.

    Example:
        .. code-block:: python

            import dagster as dg
            from hybrid_dagster import DataPlane, pinned

            eu = DataPlane(name="eu-onprem", jurisdiction="EU", region="fra-dc2", location="on_prem",
                           warehouse="file:///srv/eu/warehouse")

            @dg.asset(**pinned(eu, "restricted", kinds={"iceberg"}))  # kinds: iceberg, eu-onprem, EU
            def patients() -> None: ...

            @dg.asset(
                deps=[patients],
                **pinned("eu-onprem", "internal", declassified="counts per ward, k >= 10"),
            )
            def ward_counts() -> None: ...
    """
    level = Classification.parse(classification)
    plane_name, where = _plane_and_jurisdiction(plane, jurisdiction)
    all_tags = {**(tags or {}), PLANE_TAG: plane_name, CLASSIFICATION_TAG: level.value}
    all_metadata: dict[str, Any] = dict(metadata or {})
    if declassified is not None:
        if not declassified.strip():
            raise ValueError(
                f"asset pinned to {plane_name!r}: a declassification needs a written justification"
            )
        all_metadata[DECLASSIFIED_METADATA_KEY] = declassified
    shown = {plane_name} if where is None else {plane_name, where.value}
    return PinnedAssetArgs(tags=all_tags, kinds={*kinds, *shown}, metadata=all_metadata)


def _plane_and_jurisdiction(
    plane: str | PlaneLike, jurisdiction: str | Jurisdiction | None
) -> tuple[str, Jurisdiction | None]:
    given = None if jurisdiction is None else Jurisdiction.parse(jurisdiction)
    if isinstance(plane, str):
        return plane, given
    own = Jurisdiction.parse(plane.jurisdiction)
    if given is not None and given != own:
        raise ValueError(
            f"pinned({plane.name!r}, jurisdiction={given.value!r}): the plane is in {own.value}; "
            "leave out `jurisdiction` when passing the plane itself"
        )
    return plane.name, own
