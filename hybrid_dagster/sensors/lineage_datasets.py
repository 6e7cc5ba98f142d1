"""Name Dagster assets as physical OpenLineage datasets and describe them with facets.

Naming follows the OpenLineage dataset naming spec, so our lineage joins with other producers:

- An Iceberg table of a plane (``dagster/table_name`` ``<plane>.<namespace>.<table>`` or
  ``<namespace>.<table>`` with the asset tag ``hybrid/plane``) is named by its location: ``dagster/uri``
  when the writer reported it, else ``<warehouse>/<namespace>/<table>`` (where pyiceberg's SQL catalog
  puts a table by default; Spark's OpenLineage integration also names Iceberg tables by location):
  namespace ``file`` with the absolute path, or ``s3://<bucket>`` with the key. The catalog identity
  is a ``TABLE`` symlink (namespace ``iceberg://<catalog location>``, name ``<namespace>.<table>``) plus
  the ``catalog`` facet.
- ``dagster/uri`` metadata naming an ``s3://`` or ``file://`` location names the dataset by it.
- A CDC source (metadata ``hybrid/source``, ``postgres://host:port/database[/schema.table]``) is an
  input dataset in namespace ``postgres://host:port``, named ``database.schema.table``.
- Anything else keeps a logical name: namespace ``dagster_namespace``, the asset key as its name.

Every dataset carries the Dagster asset key as a ``DAGSTER_ASSET`` symlink.

Correctness rules: only identifiers and descriptions are read — ``dagster/table_name``, ``dagster/uri``,
``hybrid/source``, ``hybrid/plane``, ``hybrid/jurisdiction``, ``hybrid/classification``,
``dagster/column_schema``, ``dagster/column_lineage``, ``dagster/row_count``, asset owners and tags. No
other metadata value is ever copied into an event, so no row value can reach one. Credentials in a
catalog URI are dropped before it is named.

Example:
    .. code-block:: python

        namer = DatasetNamer(planes=[eu_onprem], dagster_namespace="dagster")
        dataset = namer.output(AssetInfo.of(spec), materialization.metadata)
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse, urlunparse

import dagster as dg
from openlineage.client import event_v2
from openlineage.client.facet_v2 import (
    DatasetFacet,
    catalog_dataset,
    column_lineage_dataset,
    datasource_dataset,
    ownership_dataset,
    schema_dataset,
    symlinks_dataset,
)

from hybrid_dagster.resources.data_plane import DataPlane
from hybrid_dagster.sensors.lineage_wire import ResidencyDatasetFacet

PRODUCER = "https://github.com/hybrid-dagster/hybrid-dagster"
"""The ``producer`` and ``_producer`` of every event and facet this package writes."""

RESIDENCY_FACET = "hybridDagster_residency"
"""Key of the residency facet in a dataset's ``facets``."""

RESIDENCY_SCHEMA_FILE = "ResidencyDatasetFacet.json"


def residency_schema() -> dict[str, Any]:
    """The JSON schema of the residency facet, shipped in the package."""
    text = importlib.resources.files("hybrid_dagster.sensors").joinpath("schemas", RESIDENCY_SCHEMA_FILE)
    loaded: dict[str, Any] = json.loads(text.read_text(encoding="utf-8"))
    return loaded


@dataclass(frozen=True)
class AssetInfo:
    """What the asset graph says about an asset: its upstream keys, owners, tags and static metadata.

    Example:
        >>> AssetInfo.of(dg.AssetSpec("patients", owners=["team:clinical"])).owners
        ('team:clinical',)
    """

    key: dg.AssetKey
    parents: tuple[dg.AssetKey, ...] = ()
    owners: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: dg.AssetSpec) -> AssetInfo:
        return cls(
            key=spec.key,
            parents=tuple(dep.asset_key for dep in spec.deps),
            owners=tuple(spec.owners),
            tags=dict(spec.tags),
            metadata=dict(spec.metadata),
        )


def asset_infos(repository: dg.RepositoryDefinition | None) -> dict[dg.AssetKey, AssetInfo]:
    """Every asset of a code location by key, with dependencies resolved the way the asset graph
    resolves them (what ``Definitions.resolve_all_asset_specs`` returns); empty without a repository.
    """
    if repository is None:
        return {}
    specs = [node.to_asset_spec() for node in repository.asset_graph.asset_nodes]
    return {spec.key: AssetInfo.of(spec) for spec in specs}


def _text(value: Any) -> str | None:
    raw = getattr(value, "value", value)
    return raw if isinstance(raw, str) and raw else None


def _without_credentials(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.username is None and parsed.password is None:
        return uri
    host = parsed.hostname or ""
    netloc = f"{host}:{parsed.port}" if parsed.port else host
    return urlunparse(parsed._replace(netloc=netloc))


@dataclass(frozen=True)
class DatasetName:
    """An OpenLineage dataset identity and the facets that come with how it was named."""

    namespace: str
    name: str
    facets: Mapping[str, DatasetFacet] = field(default_factory=dict)
    table: symlinks_dataset.Identifier | None = None
    """The catalog's name for the dataset (a ``TABLE`` symlink), when a catalog knows it."""


def _location_name(uri: str) -> DatasetName | None:
    parsed = urlparse(uri)
    if parsed.scheme == "s3" and parsed.netloc:
        namespace = f"s3://{parsed.netloc}"
        return DatasetName(namespace, parsed.path.lstrip("/"), _datasource(namespace, namespace))
    if parsed.scheme == "file":
        return DatasetName("file", parsed.path, _datasource("file", "file:///"))
    return None


def _datasource(name: str, uri: str) -> dict[str, DatasetFacet]:
    return {"dataSource": datasource_dataset.DatasourceDatasetFacet(name=name, uri=uri, producer=PRODUCER)}


def source_dataset(source: str) -> DatasetName | None:
    """The input dataset of a CDC source ``postgres://host:port/database[/schema.table][#slot]``."""
    parsed = urlparse(source)
    if not parsed.scheme or not parsed.hostname:
        return None
    port = parsed.port or (5432 if parsed.scheme.startswith("postgres") else None)
    namespace = f"postgres://{parsed.hostname}:{port}" if port else f"{parsed.scheme}://{parsed.hostname}"
    parts = [p for p in parsed.path.split("/") if p]
    if not parts:
        return None
    return DatasetName(namespace, ".".join(parts), _datasource(namespace, namespace))


class DatasetNamer:
    """Turns asset keys (with their spec and materialization metadata) into OpenLineage datasets.

    Example:
        >>> namer = DatasetNamer(planes=[], dagster_namespace="dagster")
        >>> namer.name(dg.AssetKey("a"), {}, {}).namespace
        'dagster'
    """

    def __init__(self, *, planes: Sequence[DataPlane], dagster_namespace: str) -> None:
        self._planes = {plane.name: plane for plane in planes}
        self.dagster_namespace = dagster_namespace
        self._named: dict[tuple[Any, ...], DatasetName] = {}
        self._described: dict[tuple[Any, ...], dict[str, DatasetFacet]] = {}

    # -- identity --------------------------------------------------------------------------------------

    def name(self, key: dg.AssetKey, tags: Mapping[str, str], metadata: Mapping[str, Any]) -> DatasetName:
        """The physical name of an asset, from its metadata and tags (memoized: names are pure)."""
        table = _text(metadata.get("dagster/table_name"))
        plane_name = tags.get("hybrid/plane") or _text(metadata.get("hybrid/plane"))
        uri = _text(metadata.get("dagster/uri"))
        memo = (key, table, plane_name, uri)
        if memo not in self._named:
            self._named[memo] = self._name(key, table, plane_name, uri)
        return self._named[memo]

    def _name(
        self, key: dg.AssetKey, table: str | None, plane_name: str | None, uri: str | None
    ) -> DatasetName:
        located = _location_name(uri) if uri else None
        if table and plane_name and plane_name in self._planes:
            return self._iceberg(self._planes[plane_name], table, located)
        if located is not None:
            return located
        return DatasetName(self.dagster_namespace, key.to_user_string())

    def _iceberg(self, plane: DataPlane, table_name: str, located: DatasetName | None) -> DatasetName:
        parts = table_name.split(".")
        if len(parts) > 2 and parts[0] == plane.name:
            parts = parts[1:]
        identifier = ".".join(parts)
        namespace, table = ".".join(parts[:-1]) or "default", parts[-1]
        location = f"{plane.warehouse.rstrip('/')}/{namespace}/{table}"
        named = located or _location_name(location) or DatasetName(self.dagster_namespace, identifier)
        catalog_uri = self._catalog_location(plane)
        parsed = urlparse(catalog_uri)
        catalog_namespace = f"iceberg://{parsed.netloc}/{parsed.path.lstrip('/')}"
        facets: dict[str, DatasetFacet] = {
            **named.facets,
            "catalog": catalog_dataset.CatalogDatasetFacet(
                framework="iceberg",
                type=plane.catalog.kind,
                name=plane.name,
                metadataUri=catalog_uri,
                warehouseUri=plane.warehouse,
                source="hybrid-dagster",
                producer=PRODUCER,
            ),
        }
        table_link = symlinks_dataset.Identifier(namespace=catalog_namespace, name=identifier, type="TABLE")
        return DatasetName(named.namespace, named.name, facets, table_link)

    @staticmethod
    def _catalog_location(plane: DataPlane) -> str:
        if plane.catalog.uri:
            return _without_credentials(plane.catalog.uri)
        return f"sqlite:///{urlparse(plane.warehouse).path.rstrip('/')}/catalog.db"

    # -- datasets ----------------------------------------------------------------------------------------

    def dataset_facets(
        self,
        info: AssetInfo | None,
        key: dg.AssetKey,
        metadata: Mapping[str, Any],
        named: DatasetName,
        *,
        full: bool = True,
    ) -> dict[str, DatasetFacet]:
        """Facets that describe the data: symlinks, data source and residency; with ``full`` also the
        catalog, schema and owners.
        """
        memo = (
            key,
            full,
            info.owners if info else (),
            info.tags.get("hybrid/plane") if info else None,
            info.tags.get("hybrid/classification") if info else None,
            named.namespace,
            named.name,
            _text(metadata.get("hybrid/plane")),
            _text(metadata.get("hybrid/jurisdiction")),
            _text(metadata.get("hybrid/classification")),
            repr(metadata.get("dagster/column_schema")) if full else None,
        )
        if memo not in self._described:
            self._described[memo] = self._facets(info, key, metadata, named, full=full)
        return dict(self._described[memo])

    def _facets(
        self,
        info: AssetInfo | None,
        key: dg.AssetKey,
        metadata: Mapping[str, Any],
        named: DatasetName,
        *,
        full: bool,
    ) -> dict[str, DatasetFacet]:
        tags = info.tags if info else {}
        facets: dict[str, DatasetFacet] = {k: v for k, v in named.facets.items() if full or k == "dataSource"}
        identifiers = [
            symlinks_dataset.Identifier(
                namespace=self.dagster_namespace, name=key.to_user_string(), type="DAGSTER_ASSET"
            )
        ]
        if named.table is not None:
            identifiers.insert(0, named.table)
        facets["symlinks"] = symlinks_dataset.SymlinksDatasetFacet(identifiers=identifiers, producer=PRODUCER)
        residency = self._residency(tags, metadata)
        if residency is not None:
            facets[RESIDENCY_FACET] = residency
        if not full:
            return facets
        schema = metadata.get("dagster/column_schema")
        schema_value = getattr(schema, "schema", None)
        if isinstance(schema_value, dg.TableSchema):
            facets["schema"] = schema_dataset.SchemaDatasetFacet(
                fields=[
                    schema_dataset.SchemaDatasetFacetFields(
                        name=column.name,
                        type=column.type,
                        description=column.description,
                        ordinal_position=i + 1,
                    )
                    for i, column in enumerate(schema_value.columns)
                ],
                producer=PRODUCER,
            )
        if info and info.owners:
            facets["ownership"] = ownership_dataset.OwnershipDatasetFacet(
                owners=[
                    ownership_dataset.Owner(name=owner, type="TEAM" if owner.startswith("team:") else "USER")
                    for owner in info.owners
                ],
                producer=PRODUCER,
            )
        return facets

    def _residency(
        self, tags: Mapping[str, str], metadata: Mapping[str, Any]
    ) -> ResidencyDatasetFacet | None:
        plane_name = tags.get("hybrid/plane") or _text(metadata.get("hybrid/plane"))
        classification = tags.get("hybrid/classification") or _text(metadata.get("hybrid/classification"))
        if not plane_name or not classification:
            return None
        plane = self._planes.get(plane_name)
        jurisdiction = _text(metadata.get("hybrid/jurisdiction")) or (plane.jurisdiction if plane else None)
        if jurisdiction is None:
            return None
        return ResidencyDatasetFacet(
            plane=plane_name, jurisdiction=jurisdiction, classification=classification, producer=PRODUCER
        )

    def column_lineage(
        self, metadata: Mapping[str, Any], resolve: Any
    ) -> column_lineage_dataset.ColumnLineageDatasetFacet | None:
        """``dagster/column_lineage`` as the OpenLineage column-lineage facet (``resolve`` names inputs)."""
        lineage = getattr(metadata.get("dagster/column_lineage"), "column_lineage", None)
        if not isinstance(lineage, dg.TableColumnLineage) or not lineage.deps_by_column:
            return None
        fields: dict[str, column_lineage_dataset.Fields] = {}
        for column, deps in lineage.deps_by_column.items():
            inputs = []
            for dep in deps:
                source: DatasetName = resolve(dep.asset_key)
                inputs.append(
                    column_lineage_dataset.InputField(
                        namespace=source.namespace, name=source.name, field=dep.column_name
                    )
                )
            fields[column] = column_lineage_dataset.Fields(inputFields=inputs)
        return column_lineage_dataset.ColumnLineageDatasetFacet(fields=fields, producer=PRODUCER)


def input_dataset(
    named: DatasetName, facets: Mapping[str, DatasetFacet], **input_facets: Any
) -> event_v2.InputDataset:
    return event_v2.InputDataset(
        namespace=named.namespace,
        name=named.name,
        facets=dict(facets),
        inputFacets=dict(input_facets) or None,
    )


def output_dataset(
    named: DatasetName, facets: Mapping[str, DatasetFacet], **output_facets: Any
) -> event_v2.OutputDataset:
    return event_v2.OutputDataset(
        namespace=named.namespace,
        name=named.name,
        facets=dict(facets),
        outputFacets=dict(output_facets) or None,
    )


def unique(datasets: Iterable[event_v2.InputDataset]) -> list[event_v2.InputDataset]:
    """Datasets with duplicates (same namespace and name) dropped, first kept."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for dataset in datasets:
        if (dataset.namespace, dataset.name) not in seen:
            seen.add((dataset.namespace, dataset.name))
            kept.append(dataset)
    return kept
