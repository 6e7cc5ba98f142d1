"""An IO manager that stores each asset as an Iceberg table in the catalog of the plane it is pinned to.

Correctness rules for movements across planes (the transfer ledger, :mod:`hybrid_dagster.audit.transfers`):

- An input loaded from one plane and an output written to another within the same step is a transfer:
  the input is hashed as read at its source (:func:`~hybrid_dagster.audit.content_sha256`), and so is a
  write that ``target_plane`` redirects away from the asset's own plane (its rows as handed over).
- Such a write hashes the rows handed over, stages the Iceberg commit, hashes the staged rows read back
  from the new snapshot's data files and abandons the commit on a mismatch (recording
  ``transfer.mismatch``, raising :class:`~hybrid_dagster.audit.TransferIntegrityError`).
- After the commit, each transfer is recorded (kind ``transfer``): route, legal basis (the policy's route
  for it), source and target plane and table, rows, bytes, both hashes, egress cost.
- The audit store is ``audit_url``, else the default (``HYBRID_DAGSTER_AUDIT_URL``, else
  ``$DAGSTER_HOME/hybrid_audit.db``); without one, hashes are still checked, nothing is recorded, and the
  step log says so. Only metadata is recorded, never row values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import dagster as dg
import pyarrow as pa
from pydantic import Field, PrivateAttr

from hybrid_dagster.audit.content_hash import content_sha256
from hybrid_dagster.audit.errors import AuditConfigError
from hybrid_dagster.audit.log import AuditLog
from hybrid_dagster.audit.transfers import Transfer, TransferLedger, check_integrity
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
from hybrid_dagster.residency.model import Classification, ResidencyPolicy
from hybrid_dagster.resources.data_plane import DataPlane

if TYPE_CHECKING:
    from pyiceberg.table import Table


@dataclass(frozen=True)
class _Read:
    """A table as loaded by a step: where from, what label, and its content hash as read."""

    plane: str
    jurisdiction: str
    table: str
    classification: Classification
    rows: int
    bytes: int
    sha256: str


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

    audit_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the audit log that records transfers across planes; empty means "
        "HYBRID_DAGSTER_AUDIT_URL, else $DAGSTER_HOME/hybrid_audit.db (prefer dg.EnvVar for a password).",
    )

    _reads: dict[tuple[str, str], list[_Read]] = PrivateAttr(default_factory=dict)

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
        transfers = self._transfers(context, intent.home_plane, plane, identifier, obj, intent.classification)
        if not transfers:
            table = replace_table(catalog, identifier, obj, label)
        else:
            handed = transfers[0].target_sha256 or ""
            check = self._before_commit(context, plane, identifier, handed, transfers)
            table = replace_table(catalog, identifier, obj, label, before_commit=check)
            self._record(context, transfers, mismatch=False)
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
        rows = table.scan().to_arrow()
        self._reads.setdefault(_step_of(context), []).append(
            _Read(
                plane=plane.name,
                jurisdiction=plane.jurisdiction,
                table=f"{namespace}.{name}",
                classification=label.classification,
                rows=rows.num_rows,
                bytes=rows.nbytes,
                sha256=content_sha256(rows),
            )
        )
        return rows

    # -- transfers across planes --------------------------------------------------------------------------

    def _transfers(
        self,
        context: dg.OutputContext,
        home_plane: str,
        plane: DataPlane,
        identifier: str,
        obj: pa.Table,
        classification: Classification,
    ) -> list[Transfer]:
        """The movements into ``plane`` this write completes: inputs of the step from other planes, and
        the asset's own rows when ``target_plane`` sends them away from its home plane."""
        sources = [r for r in self._reads.get(_step_of(context), []) if r.plane != plane.name]
        redirected = home_plane != plane.name
        if not sources and not redirected:
            return []
        handed = content_sha256(obj)
        if redirected:
            home = self._plane(home_plane)
            sources.append(
                _Read(
                    home.name, home.jurisdiction, identifier, classification, obj.num_rows, obj.nbytes, handed
                )
            )
        transfers = []
        for read in sources:
            route = self.policy.route_for(read.jurisdiction, plane.jurisdiction, read.classification)
            transfers.append(
                Transfer(
                    source_plane=read.plane,
                    source_jurisdiction=read.jurisdiction,
                    target_plane=plane.name,
                    target_jurisdiction=plane.jurisdiction,
                    classification=read.classification.value,
                    legal_basis=route.legal_basis if route is not None else None,
                    source_table=read.table,
                    target_table=identifier,
                    rows=read.rows,
                    bytes=read.bytes,
                    source_sha256=read.sha256,
                    target_sha256=handed,
                    egress_usd_per_gb=route.egress_usd_per_gb if route is not None else None,
                    extra={"target_rows": obj.num_rows, "asset": context.asset_key.to_user_string()},
                )
            )
        return transfers

    def _before_commit(
        self,
        context: dg.OutputContext,
        plane: DataPlane,
        identifier: str,
        handed_sha256: str,
        transfers: list[Transfer],
    ) -> Callable[[pa.Table], None]:
        """A ``replace_table`` hook: the staged rows must hash to what was handed over, or no commit."""

        def check(staged: pa.Table) -> None:
            staged_sha256 = content_sha256(staged)
            if staged_sha256 != handed_sha256:
                self._record(
                    context,
                    [_with_target(t, staged_sha256) for t in transfers],
                    mismatch=True,
                )
            check_integrity(
                expected_sha256=handed_sha256,
                staged_sha256=staged_sha256,
                what=f"plane {plane.name!r} table {identifier}",
            )

        return check

    def _record(self, context: dg.OutputContext, transfers: list[Transfer], *, mismatch: bool) -> None:
        try:
            log = AuditLog(self.audit_url)
        except AuditConfigError as missing:
            context.log.warning(f"PlaneIcebergIOManager: transfers hash-checked but not recorded: {missing}")
            return
        with log:
            ledger = TransferLedger(log)
            for transfer in transfers:
                write = ledger.record_mismatch if mismatch else ledger.record
                write(transfer, actor="dagster:io_manager", run_id=context.run_id)

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


def _step_of(context: dg.InputContext | dg.OutputContext) -> tuple[str, str]:
    return context.step_context.run_id, context.step_context.step.key


def _with_target(transfer: Transfer, target_sha256: str) -> Transfer:
    return Transfer(**{**transfer.__dict__, "target_sha256": target_sha256})
