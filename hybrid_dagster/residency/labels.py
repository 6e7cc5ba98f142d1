"""Labels on data at rest: every table hybrid-dagster writes carries its plane, jurisdictions and class.

Correctness rules:

- Every writer we own (plane work, the Iceberg IO manager, CDC, documents) sets the label in the Iceberg
  table properties (``hybrid.plane``, ``hybrid.jurisdiction``, ``hybrid.classification``,
  ``hybrid.data_jurisdictions``, ``hybrid.asset``).
- Reading trusts the label, never the reader's declaration: an unlabelled table, or one whose label is
  mistyped or unknown, counts as *restricted* data of the jurisdiction of the plane that stores it.
- A step may read nothing above its clearance; reading data whose jurisdictions differ from the reading
  plane's is a transfer and needs a declared route for the *table's* classification.
- A write may not lower the label of a table that another asset (or nobody known) wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hybrid_dagster.errors import ResidencyViolation
from hybrid_dagster.keys import (
    LABEL_ASSET,
    LABEL_CLASSIFICATION,
    LABEL_DATA_JURISDICTIONS,
    LABEL_JURISDICTION,
    LABEL_PLANE,
)
from hybrid_dagster.residency.model import (
    Classification,
    Jurisdiction,
    PlaneRef,
    ResidencyPolicy,
    TransferRoute,
)


@dataclass(frozen=True)
class TableLabel:
    """The residency label of one table at rest.

    Example:
        >>> label = TableLabel("eu-onprem", "EU", Classification.RESTRICTED, frozenset({"EU"}), "patients")
        >>> label.properties()["hybrid.classification"]
        'restricted'
    """

    plane: str
    jurisdiction: str
    classification: Classification
    data_jurisdictions: frozenset[str]
    asset: str | None = None
    trusted: bool = True
    """False when the label was missing or unreadable and the fail-closed default stands in."""

    def properties(self) -> dict[str, str]:
        """The Iceberg table properties that carry this label."""
        props = {
            LABEL_PLANE: self.plane,
            LABEL_JURISDICTION: self.jurisdiction,
            LABEL_CLASSIFICATION: self.classification.value,
            LABEL_DATA_JURISDICTIONS: ",".join(sorted(self.data_jurisdictions)),
        }
        if self.asset is not None:
            props[LABEL_ASSET] = self.asset
        return props


def label_for_write(
    asset: str, classification: Classification, data_jurisdictions: frozenset[str], plane: PlaneRef
) -> TableLabel:
    """The label a write of ``asset`` into ``plane`` gives its table.

    Example:
        >>> label_for_write("clinical/patients", Classification.RESTRICTED, frozenset({"EU"}), eu_plane)
    """
    places = (
        frozenset(data_jurisdictions | {plane.jurisdiction})
        if classification.is_regulated
        else frozenset({plane.jurisdiction})
    )
    return TableLabel(plane.name, plane.jurisdiction, classification, places, asset)


def read_label(properties: Mapping[str, str], storage_plane: PlaneRef) -> TableLabel:
    """The label of a table from its properties, fail-closed.

    Missing, mistyped or unknown values count as restricted data of the storage plane's jurisdiction.

    Example:
        >>> read_label({}, eu_plane).classification
        <Classification.RESTRICTED: 'restricted'>
    """
    fallback = TableLabel(
        storage_plane.name,
        storage_plane.jurisdiction,
        Classification.RESTRICTED,
        frozenset({storage_plane.jurisdiction}),
        None,
        trusted=False,
    )
    try:
        classification = Classification.parse(properties[LABEL_CLASSIFICATION])
        jurisdiction = Jurisdiction.parse(properties[LABEL_JURISDICTION]).value
        places = frozenset(
            Jurisdiction.parse(p).value for p in properties[LABEL_DATA_JURISDICTIONS].split(",") if p.strip()
        )
        plane = properties[LABEL_PLANE]
    except (KeyError, ValueError, AttributeError):
        return fallback
    if plane != storage_plane.name or jurisdiction != storage_plane.jurisdiction:
        # A table whose label names another plane was copied or tampered with: trust neither side.
        places = places | {jurisdiction, storage_plane.jurisdiction}
        return TableLabel(plane, jurisdiction, Classification.RESTRICTED, places, None, trusted=False)
    return TableLabel(
        plane, jurisdiction, classification, places | {jurisdiction}, properties.get(LABEL_ASSET), True
    )


def check_read(
    label: TableLabel,
    *,
    table: str,
    step: str,
    clearance: Classification,
    reader: PlaneRef,
    policy: ResidencyPolicy,
) -> list[TransferRoute]:
    """Raise :class:`ResidencyViolation` unless ``step`` (running in ``reader``) may read the table.

    Returns the declared routes the read relies on.

    Example:
        .. code-block:: python

            routes = check_read(label, table="clinical.patients", step="benchmark",
                                clearance=Classification.CONFIDENTIAL, reader=us_plane, policy=policy)
    """
    source = f"table {table} of plane {label.plane!r} (labelled {label.classification.value}"
    source += ")" if label.trusted else ", label missing or unreadable: counted as restricted)"
    if label.classification > clearance:
        raise ResidencyViolation(
            f"read of {source} by step {step!r} refused: the step's clearance is {clearance.value} "
            f"(its declared and inherited classification); declare the asset {label.classification.value} "
            "or depend on the asset that owns the table"
        )
    routes: list[TransferRoute] = []
    if not label.classification.is_regulated:
        return routes
    for place in sorted(label.data_jurisdictions - {reader.jurisdiction}):
        route = policy.check_transfer(
            what=f"read of {source}, data in {place}) by step {step!r} into plane {reader.name!r} "
            f"({reader.jurisdiction})",
            source=place,
            target=reader.jurisdiction,
            classification=label.classification,
        )
        if route is not None:
            routes.append(route)
    return routes


def check_relabel(existing: TableLabel | None, new: TableLabel, *, table: str) -> None:
    """Refuse a write that would lower the label of a table some other asset (or nobody known) wrote.

    Example:
        >>> check_relabel(None, new_label, table="analytics.occupancy")  # a new table: always fine
    """
    if existing is None or new.classification >= existing.classification:
        return
    if existing.trusted and existing.asset is not None and existing.asset == new.asset:
        return
    owner = f"asset {existing.asset!r}" if existing.asset else "an unknown writer"
    raise ResidencyViolation(
        f"write of asset {new.asset!r} into table {table} of plane {new.plane!r} refused: the table holds "
        f"{existing.classification.value} data written by {owner}, and the write would relabel it "
        f"{new.classification.value}; write to a table of your own"
    )
