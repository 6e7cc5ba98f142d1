"""An IO manager that stores each asset as an Iceberg table in the catalog of the plane it is pinned to."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import dagster as dg
import pyarrow as pa
from pydantic import Field

from hybrid_dagster.errors import ResidencyError, UnsupportedAssetError
from hybrid_dagster.keys import JURISDICTION_METADATA_KEY, PLANE_TAG, TRANSFER_ROUTES_METADATA_KEY
from hybrid_dagster.plane import storage
from hybrid_dagster.plane.tables import replace_table, table_label
from hybrid_dagster.residency.graph import asset_plane_name
from hybrid_dagster.residency.guard import (
    WriteIntent,
    asset_graph_of,
    check_write,
    recorded_residency_metadata,
    write_intent_for,
)
from hybrid_dagster.residency.labels import check_relabel, label_for_write
from hybrid_dagster.residency.model import ResidencyPolicy
from hybrid_dagster.resources.data_plane import DataPlane

if TYPE_CHECKING:
    from pyiceberg.table import Table


class PlaneIcebergIOManager(dg.ConfigurableIOManager):
    """Stores pyarrow Tables returned by assets as Iceberg tables in their plane's catalog.

    For public and internal data, or where the code location's steps run inside the plane. Each asset
    lands in the catalog of the plane named by its ``hybrid/plane`` tag, under namespace
    ``namespace`` (default: the asset key prefix joined by ``_``, or ``default``) and table name the last
    part of the asset key. Before every write the residency guard checks the target plane against the
    data's jurisdictions and the policy - also when ``target_plane`` redirects the write.

    Example:
        .. code-block:: python

            import dagster as dg
            import pyarrow as pa
            from hybrid_dagster import DataPlane, PlaneIcebergIOManager, ResidencyPolicy, pinned

            eu = DataPlane(name="eu-onprem", jurisdiction="EU", region="fra", location="on_prem",
                           warehouse="file:///srv/eu/warehouse")

            @dg.asset(key_prefix="clinical", **pinned("eu-onprem", "restricted", kinds={"iceberg"}))
            def patients() -> pa.Table:
                return pa.table({"patient_id": [1, 2]})

            defs = dg.Definitions(
                assets=[patients],
                resources={"io_manager": PlaneIcebergIOManager(planes=[eu], policy=ResidencyPolicy())},
            )
    """

    stores_rows_in_plane: ClassVar[bool] = True

    planes: list[DataPlane] = Field(
        description="The data planes assets may be stored in, matched by name; they must be the "
        "Definitions' own DataPlane resources (the static check and the guard compare them)."
    )
    policy: ResidencyPolicy = Field(
        default_factory=ResidencyPolicy,
        description="Residency policy the write guard applies; the default declares no routes.",
    )
    namespace: str | None = Field(
        default=None,
        description="Iceberg namespace for every table; empty means the asset key prefix, or 'default'.",
    )
    regulated_rows_in_step_process: bool = Field(
        default=False,
        description=(
            "Allow confidential and restricted assets. Only for code locations whose step processes run "
            "inside the plane itself (e.g. a per-plane code location on the plane's own cluster); otherwise "
            "their rows would pass through the orchestrator's side."
        ),
    )
    target_plane: str | None = Field(
        default=None,
        description=(
            "Write every asset to this plane instead of its pinned plane (e.g. a replica). The residency "
            "guard still refuses writes that would take regulated data out of its jurisdiction."
        ),
    )

    def handle_output(self, context: dg.OutputContext, obj: pa.Table | None) -> None:
        key = context.asset_key
        if obj is None:
            return
        if not isinstance(obj, pa.Table):
            raise TypeError(
                f"asset {key.to_user_string()!r}: PlaneIcebergIOManager stores pyarrow Tables, "
                f"got {type(obj).__name__}"
            )
        if context.has_asset_partitions:
            raise UnsupportedAssetError(
                f"asset {key.to_user_string()!r} is partitioned: PlaneIcebergIOManager stores whole tables"
            )
        self._reconcile(context.step_context.resources)
        intent = write_intent_for(context, self.planes)
        plane = self._plane(self.target_plane or intent.home_plane)
        routes = check_write(intent, plane, self.policy)
        self._refuse_regulated_rows(intent)

        namespace, name = self.table_identifier(key)
        identifier = f"{namespace}.{name}"
        catalog = storage.open_catalog(plane.spec())
        label = label_for_write(intent.asset, intent.classification, intent.data_jurisdictions, plane)
        if catalog.table_exists(identifier):
            check_relabel(table_label(catalog.load_table(identifier), plane), label, table=identifier)
        table = replace_table(catalog, identifier, obj, label)
        metadata = self._metadata(plane, identifier, table, obj, [r.describe() for r in routes])
        context.add_output_metadata({**metadata, **self._residency(intent, plane)})

    def load_input(self, context: dg.InputContext) -> pa.Table:
        key = context.asset_key
        self._reconcile(context.step_context.resources)
        plane_name = self.target_plane or asset_plane_name(asset_graph_of(context).get(key))
        if plane_name is None:
            raise ResidencyError(f"asset {key.to_user_string()!r} has no {PLANE_TAG!r} tag: no plane to read")
        self._refuse_regulated_rows(write_intent_for(context, self.planes, key))
        namespace, name = self.table_identifier(key)
        plane = self._plane(plane_name)
        table = storage.open_catalog(plane.spec()).load_table(f"{namespace}.{name}")
        label = table_label(table, plane)
        if label.classification.is_regulated and not self.regulated_rows_in_step_process:
            raise ResidencyError(
                f"table {namespace}.{name} of plane {plane.name!r} is labelled {label.classification.value}: "
                "PlaneIcebergIOManager will not load its rows into the step process (compute inside the "
                "plane with DataPlane.run, or set regulated_rows_in_step_process=True)"
            )
        return table.scan().to_arrow()

    def _reconcile(self, resources: object) -> None:
        """The planes given to this IO manager must be the step's own DataPlane resources."""
        for key in dir(resources):
            resource = getattr(resources, key, None)
            if not isinstance(resource, DataPlane):
                continue
            for plane in self.planes:
                if plane.name == resource.name and plane.spec() != resource.spec():
                    raise ResidencyError(
                        f"PlaneIcebergIOManager: plane {plane.name!r} differs from the DataPlane resource of "
                        "that name: give the IO manager the Definitions' own DataPlane objects"
                    )

    def _refuse_regulated_rows(self, intent: WriteIntent) -> None:
        if intent.classification.is_regulated and not self.regulated_rows_in_step_process:
            raise ResidencyError(
                f"asset {intent.asset!r} is {intent.classification.value}: with PlaneIcebergIOManager its "
                "rows would pass through the step process, outside its plane. Compute it inside the plane "
                "(DataPlane.run with hybrid_dagster.plane.work), or set regulated_rows_in_step_process=True "
                f"if this code location's steps run inside plane {intent.home_plane!r}"
            )

    def table_identifier(self, key: dg.AssetKey) -> tuple[str, str]:
        """(namespace, table name) of the Iceberg table holding ``key``.

        Example:
            >>> PlaneIcebergIOManager(planes=[]).table_identifier(dg.AssetKey(["clinical", "patients"]))
            ('clinical', 'patients')
        """
        prefix = key.path[:-1]
        return self.namespace or ("_".join(prefix) if prefix else "default"), key.path[-1]

    def _plane(self, name: str) -> DataPlane:
        matches = [p for p in self.planes if p.name == name]
        if len(matches) != 1:
            known = ", ".join(sorted(p.name for p in self.planes)) or "none"
            problem = "is configured more than once" if matches else "is not among its planes"
            raise ResidencyError(f"PlaneIcebergIOManager: plane {name!r} {problem} ({known})")
        return matches[0]

    @staticmethod
    def _residency(intent: WriteIntent, plane: DataPlane) -> dict[str, dg.RawMetadataValue]:
        places = intent.data_jurisdictions | {plane.jurisdiction}
        return {
            **recorded_residency_metadata(intent.classification, places),
            PLANE_TAG: plane.name,
            JURISDICTION_METADATA_KEY: plane.jurisdiction,
        }

    @staticmethod
    def _metadata(
        plane: DataPlane, identifier: str, table: Table, obj: pa.Table, routes: list[str]
    ) -> dict[str, dg.RawMetadataValue]:
        snapshot = table.current_snapshot()
        metadata: dict[str, dg.RawMetadataValue] = {
            "dagster/table_name": f"{plane.name}.{identifier}",
            "dagster/row_count": obj.num_rows,
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(f.name, str(f.type)) for f in obj.schema]
            ),
            "iceberg/snapshot_id": snapshot.snapshot_id if snapshot is not None else None,
        }
        if routes:
            metadata[TRANSFER_ROUTES_METADATA_KEY] = ", ".join(routes)
        return metadata
