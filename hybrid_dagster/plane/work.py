"""The plane side of a unit of work: Dagster Pipes plus guarded Iceberg reads and writes.

Example:
    .. code-block:: python

        from hybrid_dagster.plane.work import open_plane_work

        with open_plane_work() as work:
            encounters = work.read_table("eu-onprem", "clinical.encounters")
            daily = encounters.group_by("ward").aggregate([([], "count_all")])
            work.report(work.write_table("analytics/ward_occupancy", "analytics.ward_occupancy", daily))
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
from dagster_pipes import PipesContext, open_dagster_pipes

from hybrid_dagster.audit.content_hash import content_sha256
from hybrid_dagster.guard import WriteIntent, check_write, recorded_residency_metadata
from hybrid_dagster.plane.errors import errors_kept_in_plane
from hybrid_dagster.plane.integrity import PlaneTransfers
from hybrid_dagster.residency import (
    Classification,
    ResidencyError,
    ResidencyPolicy,
    ResidencyViolation,
    TransferRoute,
)
from hybrid_dagster.resources.data_plane import NO_POLICY_HINT, RESIDENCY_EXTRAS_KEY, DataPlane
from hybrid_dagster.resources.tables import replace_table


class PlaneWork:
    """Inside a plane: read tables of planes the step can see, write guarded tables into this plane."""

    def __init__(self, pipes: PipesContext) -> None:
        self.pipes = pipes
        self.plane = DataPlane.from_env()
        residency: Mapping[str, Any] = pipes.extras.get(RESIDENCY_EXTRAS_KEY) or {}
        self.planes = {name: DataPlane.from_config(cfg) for name, cfg in residency.get("planes", {}).items()}
        self.planes.setdefault(self.plane.name, self.plane)
        self.policy = ResidencyPolicy(routes=[TransferRoute(**r) for r in residency.get("routes", [])])
        self.policy_visible = bool(residency.get("policy_visible", False))
        self.intents = {
            key: WriteIntent(
                asset=i["asset"],
                classification=Classification.parse(i["classification"]),
                home_plane=i["home_plane"],
                data_jurisdictions=frozenset(i["data_jurisdictions"]),
            )
            for key, i in residency.get("intents", {}).items()
        }
        self.transfers = PlaneTransfers(
            plane_name=self.plane.name,
            jurisdiction=self.plane.jurisdiction,
            run_id=pipes.run_id,
            warn=pipes.log.warning,
        )

    def read_table(self, plane: str, identifier: str) -> pa.Table:
        """Read an Iceberg table of a plane this step can see.

        Reading from a plane of another jurisdiction is a transfer: it needs a declared route for the
        step's classification (the most sensitive of its assets, which includes what it reads). Its content
        hash as read is kept and recorded in the transfer ledger (:mod:`hybrid_dagster.plane.integrity`).
        """
        if plane not in self.planes:
            raise ResidencyError(
                f"plane {plane!r} is not visible to this step (visible: {sorted(self.planes)})"
            )
        source = self.planes[plane]
        route: TransferRoute | None = None
        if source.jurisdiction != self.plane.jurisdiction:
            with self.transfers.decision("read", table=identifier, source_plane=plane):
                if not self.intents:
                    raise ResidencyViolation(
                        f"read of {identifier} from plane {plane!r} ({source.jurisdiction}) into plane "
                        f"{self.plane.name!r} ({self.plane.jurisdiction}) refused: the step pins no asset, "
                        "so its classification is unknown"
                    )
                for intent in sorted(self.intents.values(), key=lambda i: i.classification):
                    route = self.policy.check_transfer(
                        what=f"read of {identifier} from plane {plane!r} for asset {intent.asset!r} in "
                        f"plane {self.plane.name!r}",
                        source=source.jurisdiction,
                        target=self.plane.jurisdiction,
                        classification=intent.classification,
                    )
        rows = source.load_catalog().load_table(identifier).scan().to_arrow()
        if source.jurisdiction != self.plane.jurisdiction:
            highest = max(i.classification for i in self.intents.values())
            self.transfers.note_read(
                source_plane=plane,
                source_jurisdiction=source.jurisdiction,
                table=identifier,
                rows=rows,
                classification=highest.value,
                route=route,
            )
        return rows

    def write_table(self, asset_key: str, identifier: str, data: pa.Table) -> dict[str, Any]:
        """Replace ``identifier`` in this plane's catalog with ``data``, after the residency guard.

        The rows staged for commit must hash to ``data`` or the commit is abandoned; cross-jurisdiction
        reads of this work are then recorded as transfers into ``identifier``.
        Returns Pipes metadata (table name, row count, column schema) for ``report``.
        """
        intent = self.intents.get(asset_key)
        if intent is None:
            raise ResidencyError(
                f"no write intent for asset {asset_key!r}: the guard refuses unpinned writes"
            )
        with self.transfers.decision("write", table=identifier, asset=asset_key):
            try:
                check_write(intent, self.plane, self.policy)
            except ResidencyViolation as violation:
                if self.policy_visible:
                    raise
                raise ResidencyViolation(f"{violation} ({NO_POLICY_HINT})") from violation
        handed_sha256 = content_sha256(data)
        replace_table(
            self.plane.load_catalog(),
            identifier,
            data,
            before_commit=self.transfers.before_commit(identifier, handed_sha256),
        )
        self.transfers.record_write(identifier, data, handed_sha256)
        recorded = recorded_residency_metadata(
            intent.classification, intent.data_jurisdictions | {self.plane.jurisdiction}
        )
        return {
            **{key: {"raw_value": value, "type": "text"} for key, value in recorded.items()},
            "dagster/table_name": {"raw_value": f"{self.plane.name}.{identifier}", "type": "text"},
            "dagster/row_count": {"raw_value": data.num_rows, "type": "int"},
            "dagster/column_schema": {
                "raw_value": {"columns": [{"name": f.name, "type": str(f.type)} for f in data.schema]},
                "type": "table_schema",
            },
        }

    def report(self, asset_key: str, metadata: Mapping[str, Any]) -> None:
        self.pipes.report_asset_materialization(metadata=dict(metadata), asset_key=asset_key)


@contextmanager
def open_plane_work() -> Iterator[PlaneWork]:
    """Open Dagster Pipes inside a plane and return the guarded work context."""
    with open_dagster_pipes() as pipes:
        work = PlaneWork(pipes)
        regulated = any(i.classification.is_regulated for i in work.intents.values())
        with errors_kept_in_plane(regulated, where=f"work on plane {work.plane.name}"):
            try:
                yield work
            finally:
                work.transfers.close()
