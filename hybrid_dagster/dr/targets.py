"""A plane's DR secondary: who it is, and whether it may hold the plane's data.

Correctness rules:

- The secondary is resolved once, from the plane's ``dr_secondary``: another DataPlane by name, or a
  warehouse + catalog + jurisdiction given in place. Its warehouse may not overlap the primary's.
- A secondary in another jurisdiction may hold confidential or restricted data only on a declared
  :class:`~hybrid_dagster.residency.model.TransferRoute` covering that classification. The static check
  (:mod:`hybrid_dagster.validation`) applies this to the highest classification pinned to the plane (a
  plane with nothing pinned counts as restricted); the replication applies it again, table by table, to
  the labels at rest, before anything is copied.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from hybrid_dagster.dr.errors import DrConfigError, DrTargetRefused
from hybrid_dagster.errors import ResidencyViolation
from hybrid_dagster.plane.config import (
    CatalogConfig,
    DrSecondaryConfig,
    ExecutorConfig,
    SecretsConfig,
    warehouses_overlap,
)
from hybrid_dagster.residency.model import Classification, ResidencyPolicy, TransferRoute
from hybrid_dagster.resources.data_plane import DataPlane


def secondary_plane(primary: DataPlane, planes: Mapping[str, DataPlane] | None = None) -> DataPlane:
    """The DR secondary of ``primary`` as a DataPlane (for its catalog, filesystem and launcher).

    Example:
        >>> secondary_plane(eu_onprem).warehouse
        's3://meridian-eu-dr/warehouse'
    """
    config = primary.dr_secondary
    if config is None:
        raise DrConfigError(
            f"plane {primary.name!r} names no DR secondary: set DataPlane(dr_secondary=DrSecondaryConfig())"
        )
    if config.plane is not None:
        found = (planes or {}).get(config.plane)
        if found is None:
            raise DrConfigError(
                f"plane {primary.name!r}: its DR secondary names plane {config.plane!r}, which is not a "
                "DataPlane of these Definitions; add it or describe the secondary with warehouse/jurisdiction"
            )
        secondary = found
    else:
        if not config.warehouse or not config.jurisdiction:
            raise DrConfigError(
                f"plane {primary.name!r}: its DR secondary needs 'warehouse' and 'jurisdiction' "
                "(or 'plane', the name of another DataPlane)"
            )
        name = config.name or f"{primary.name}-dr"
        log_dir = config.work_log_dir or str(Path(tempfile.gettempdir()) / "hybrid-dagster-dr" / name)
        secondary = DataPlane(
            name=name,
            jurisdiction=config.jurisdiction,
            region=config.region,
            location=config.location,
            warehouse=config.warehouse,
            catalog=CatalogConfig(**config.catalog.model_dump()),
            secrets=SecretsConfig(**config.secrets.model_dump()),
            executor=ExecutorConfig(python=primary.executor.python, work_log_dir=log_dir),
            owners=list(primary.owners),
        )
    if secondary.name == primary.name or warehouses_overlap(secondary.warehouse, primary.warehouse):
        raise DrConfigError(
            f"plane {primary.name!r}: its DR secondary {secondary.name!r} shares its storage "
            f"({secondary.warehouse}); a secondary must survive the primary's loss: give it its own storage"
        )
    return secondary


def dr_config(primary: DataPlane) -> DrSecondaryConfig:
    """The plane's ``dr_secondary`` (raises :class:`DrConfigError` when it has none)."""
    if primary.dr_secondary is None:
        raise DrConfigError(f"plane {primary.name!r} names no DR secondary")
    return primary.dr_secondary


def check_dr_target(
    primary: str,
    data_jurisdictions: frozenset[str] | set[str],
    secondary: DataPlane,
    classification: Classification,
    policy: ResidencyPolicy,
    *,
    what: str = "",
) -> list[TransferRoute]:
    """Raise :class:`DrTargetRefused` unless data of ``classification`` from ``data_jurisdictions`` may
    be stored at ``secondary``; return the routes it uses (empty within one jurisdiction).

    Example:
        >>> check_dr_target("eu-onprem", {"EU"}, us_dr, Classification.RESTRICTED, ResidencyPolicy())
        Traceback (most recent call last):
        DrTargetRefused: ...
    """
    routes: list[TransferRoute] = []
    for source in sorted(data_jurisdictions):
        try:
            route = policy.check_transfer(
                what=f"DR replication of plane {primary!r}{what} to secondary {secondary.name!r} "
                f"({secondary.jurisdiction})",
                source=source,
                target=secondary.jurisdiction,
                classification=classification,
            )
        except ResidencyViolation as refused:
            raise DrTargetRefused(
                f"{refused}; nothing was copied. Choose a secondary in {source}, or declare a TransferRoute "
                f"{source}->{secondary.jurisdiction} for {classification.value} data with its legal basis"
            ) from None
        if route is not None:
            routes.append(route)
    return routes
