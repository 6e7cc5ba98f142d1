"""Opening a plane's Iceberg catalog and filesystem - only where rows may be touched.

Correctness rules:

- ``{env:NAME}`` references in catalog settings are resolved here, in the process that opens the
  catalog: inside the plane. Resolved values are never written back into any configuration.
- A catalog is a path to rows, so it is refused (:class:`~hybrid_dagster.errors.ResidencyError`) in the
  orchestrator's step processes (use ``DataPlane.run`` and the guarded plane work) and, inside a plane's
  work, for any plane but the work's own (other planes are read through ``PlaneWork.read_table``, which
  checks labels and routes). Operators' own scripts, outside any step, may open catalogs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from hybrid_dagster._dagster_compat import in_dagster_step
from hybrid_dagster.errors import ResidencyError
from hybrid_dagster.keys import PLANE_CONFIG_ENV
from hybrid_dagster.plane.config import ENV_REFERENCE, PlaneSpec

if TYPE_CHECKING:
    import pyarrow.fs as pafs
    from pyiceberg.catalog import Catalog


def resolve_references(owner: str, value: str) -> str:
    """``value`` with every ``{env:NAME}`` replaced by the variable's value in this process.

    Example:
        >>> resolve_references("eu-onprem", "{env:HOME}") == os.environ["HOME"]
        True
    """

    def substitute(match: object) -> str:
        name = match.group(1)  # type: ignore[attr-defined]
        if name not in os.environ:
            raise ResidencyError(
                f"plane {owner!r}: the catalog setting refers to environment variable {name!r}, which is "
                "not set in this process; set it inside the plane (its secrets backend or pod environment)"
            )
        return os.environ[name]

    return ENV_REFERENCE.sub(substitute, value)


def warehouse_path(spec: PlaneSpec) -> Path:
    """Local path of a ``file://`` warehouse."""
    parsed = urlparse(spec.warehouse)
    if parsed.scheme != "file":
        raise ValueError(f"plane {spec.name!r}: warehouse {spec.warehouse} is not a local file:// URI")
    return Path(parsed.path)


def catalog_properties(spec: PlaneSpec, *, resolve: bool = True) -> dict[str, str]:
    """pyiceberg ``load_catalog`` properties of the plane (references resolved when ``resolve``)."""

    def value(item: str) -> str:
        return resolve_references(spec.name, item) if resolve else item

    props: dict[str, str] = {"warehouse": spec.warehouse}
    props.update({key: value(item) for key, item in spec.catalog.properties.items()})
    if spec.catalog.kind == "rest":
        if not spec.catalog.uri:
            raise ValueError(f"plane {spec.name!r}: a rest catalog needs catalog.uri")
        props.update(type="rest", uri=value(spec.catalog.uri))
        return props
    uri = spec.catalog.uri
    if not uri:
        if urlparse(spec.warehouse).scheme != "file":
            raise ValueError(
                f"plane {spec.name!r}: an s3:// warehouse needs catalog.uri (a SQL database or REST "
                "catalog); the embedded SQLite catalog is only for file:// warehouses"
            )
        uri = f"sqlite:///{warehouse_path(spec) / 'catalog.db'}"
    props.update(type="sql", uri=value(uri))
    if uri.startswith("sqlite"):
        props.setdefault("init_catalog_tables", "true")
    return props


def check_catalog_access(spec: PlaneSpec) -> None:
    """Raise :class:`ResidencyError` where opening ``spec``'s catalog would bypass the guard."""
    if in_dagster_step():
        raise ResidencyError(
            f"plane {spec.name!r}: its catalog may not be opened inside a Dagster step in the orchestrator "
            "(rows would pass outside the plane and around the residency guard); run the work inside the "
            "plane with DataPlane.run and read through hybrid_dagster.plane.work (read_table/write_table)"
        )
    inside = os.environ.get(PLANE_CONFIG_ENV)
    if inside:
        own = PlaneSpec.model_validate_json(inside).name
        if own != spec.name:
            raise ResidencyError(
                f"work running in plane {own!r} may not open the catalog of plane {spec.name!r} directly; "
                "read its tables with PlaneWork.read_table, which checks their labels and routes"
            )


def open_catalog(spec: PlaneSpec) -> Catalog:
    """The plane's pyiceberg catalog, for code that has already passed :func:`check_catalog_access`."""
    from pyiceberg.catalog import load_catalog

    if urlparse(spec.warehouse).scheme == "file" and not spec.catalog.uri:
        warehouse_path(spec).mkdir(parents=True, exist_ok=True)
    return load_catalog(spec.name, **catalog_properties(spec))


def filesystem(spec: PlaneSpec) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem for the warehouse (S3 settings from the catalog's ``s3.*`` properties)
    and the warehouse's path on it."""
    import pyarrow.fs as pafs

    parsed = urlparse(spec.warehouse)
    if parsed.scheme == "file":
        return pafs.LocalFileSystem(), parsed.path
    props = {k: resolve_references(spec.name, v) for k, v in spec.catalog.properties.items()}
    s3 = pafs.S3FileSystem(
        endpoint_override=props.get("s3.endpoint"),
        region=props.get("s3.region") or "us-east-1",
        access_key=props.get("s3.access-key-id"),
        secret_key=props.get("s3.secret-access-key"),
        session_token=props.get("s3.session-token"),
    )
    return s3, f"{parsed.netloc}{parsed.path}"
