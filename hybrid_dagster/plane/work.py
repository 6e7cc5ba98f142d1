"""The plane side of a unit of work: Dagster Pipes plus guarded Iceberg reads and writes.

Correctness rules (the plane half of the residency guard):

- The work learns what it may do only from the typed contract (:mod:`hybrid_dagster.plane.contract`):
  its own plane, the planes it may read, the declared routes, its assets' intents and its clearance.
- ``read_table`` checks the *table's* label (fail-closed: unlabelled counts as restricted): nothing above
  the step's clearance, and a route for the table's classification when its data lives in another
  jurisdiction than this plane.
- ``write_table`` runs the write guard, refuses to relabel another asset's table downwards, and labels
  what it writes (plane, jurisdictions, classification, asset) in the Iceberg table properties.

Example:
    .. code-block:: python

        from hybrid_dagster.plane.work import open_plane_work

        with open_plane_work() as work:
            encounters = work.read_table("eu-onprem", "clinical.encounters")
            daily = encounters.group_by("ward").aggregate([([], "count_all")])
            work.report("analytics/ward_occupancy",
                        work.write_table("analytics/ward_occupancy", "analytics.ward_occupancy", daily))

Secrets are resolved here, inside the plane, with the plane's own identity: ``work.secret(ref)`` takes a
:class:`~hybrid_dagster.secrets.SecretRef` (which the orchestrator may pass in the extras); the value is
masked in this process's output and in reported metadata, the read is audited, and an exception whose
message carries a resolved value is replaced by a value-free one before it can cross Dagster Pipes.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
from dagster_pipes import PipesContext, open_dagster_pipes

from hybrid_dagster.audit.content_hash import content_sha256
from hybrid_dagster.errors import PlaneWorkError, ResidencyError, ResidencyViolation
from hybrid_dagster.plane import storage
from hybrid_dagster.plane.config import PlaneSpec
from hybrid_dagster.plane.contract import ResidencyExtras
from hybrid_dagster.plane.errors import errors_kept_in_plane
from hybrid_dagster.plane.integrity import PlaneTransfers
from hybrid_dagster.plane.tables import replace_table, table_label
from hybrid_dagster.residency.guard import (
    NO_POLICY_HINT,
    WriteIntent,
    check_write,
    recorded_residency_metadata,
)
from hybrid_dagster.residency.labels import check_read, check_relabel, label_for_write
from hybrid_dagster.residency.model import ResidencyPolicy, TransferRoute
from hybrid_dagster.secrets import (
    MASKER,
    BackendSettings,
    PlaneSecrets,
    SecretRef,
    audit_from_env,
    use_plane_secrets,
)


class PlaneWork:
    """Inside a plane: read tables of planes the step can see, write guarded, labelled tables here."""

    def __init__(self, pipes: PipesContext) -> None:
        self.pipes = pipes
        self.contract = ResidencyExtras.from_extras(pipes.extras)
        self.plane: PlaneSpec = self.contract.plane
        self._readable = {**self.contract.readable_planes, self.plane.name: self.plane}
        self.policy = ResidencyPolicy(routes=[r.to_route() for r in self.contract.routes])
        self.policy_visible = self.contract.policy_visible
        self.intents = {key: spec.to_intent() for key, spec in self.contract.intents.items()}
        self.clearance = self.contract.clearance
        self.routes_used: list[TransferRoute] = []
        self.touched_jurisdictions: set[str] = set()
        self.snapshots_read: dict[tuple[str, str], int | None] = {}
        self.transfers = PlaneTransfers(
            plane_name=self.plane.name,
            jurisdiction=self.plane.jurisdiction,
            run_id=pipes.run_id,
            warn=pipes.log.warning,
        )
        self._secrets: PlaneSecrets | None = None

    @property
    def secrets(self) -> PlaneSecrets:
        """This plane's secrets, read with the plane's identity (its backend logs in on first use)."""
        if self._secrets is None:
            self._secrets = PlaneSecrets(
                plane=self.plane.name,
                settings=BackendSettings.model_validate(self.plane.secrets),
                run_id=self.pipes.run_id,
                audit=audit_from_env(),
            )
            use_plane_secrets(self._secrets)  # resolve_secret() in library code uses the same reads
        return self._secrets

    def secret(self, ref: SecretRef | Mapping[str, Any]) -> str:
        """The value of ``ref`` (a SecretRef or its dict from the extras), resolved here, masked, audited.

        Example:
            >>> password = work.secret(work.pipes.get_extra("db_password"))
        """
        return self.secrets.resolve(ref if isinstance(ref, SecretRef) else SecretRef.model_validate(ref))

    def close(self) -> None:
        if self._secrets is not None:
            self._secrets.close()
            use_plane_secrets(None)

    @property
    def regulated(self) -> bool:
        return self.clearance.is_regulated

    def read_table(self, plane: str, identifier: str) -> pa.Table:
        """Read an Iceberg table of a plane this step can see, after checking the table's own label.

        A read of data that lives in another jurisdiction is a transfer: its content hash as read is kept
        and recorded in the transfer ledger (:mod:`hybrid_dagster.plane.integrity`).

        Example:
            >>> encounters = work.read_table("eu-onprem", "clinical.encounters")
        """
        source = self._readable.get(plane)
        if source is None:
            raise ResidencyError(
                f"plane {plane!r} is not visible to step {self.contract.step!r} (visible: "
                f"{sorted(self._readable)}): give the asset that plane as a resource parameter"
            )
        table = storage.open_catalog(source).load_table(identifier)
        label = table_label(table, source)
        with self.transfers.decision("read", table=identifier, source_plane=plane):
            try:
                routes = check_read(
                    label,
                    table=identifier,
                    step=self.contract.step,
                    clearance=self.clearance,
                    reader=self.plane,
                    policy=self.policy,
                )
            except ResidencyViolation as violation:
                raise self._hint(violation) from None
        self.routes_used.extend(routes)
        if label.classification.is_regulated:
            self.touched_jurisdictions |= label.data_jurisdictions
        snapshot = table.current_snapshot()
        self.snapshots_read[(plane, identifier)] = snapshot.snapshot_id if snapshot is not None else None
        rows = table.scan(snapshot_id=snapshot.snapshot_id if snapshot is not None else None).to_arrow()
        foreign = sorted(label.data_jurisdictions - {self.plane.jurisdiction})
        if foreign:
            self.transfers.note_read(
                source_plane=plane,
                source_jurisdiction=foreign[0],
                table=identifier,
                rows=rows,
                classification=label.classification.value,
                route=routes[0] if routes else None,
            )
        return rows

    def write_table(self, asset_key: str, identifier: str, data: pa.Table) -> dict[str, Any]:
        """Replace ``identifier`` in this plane's catalog with ``data``, after the residency guard.

        The rows staged for commit must hash to ``data`` or the commit is abandoned; cross-jurisdiction
        reads of this work are then recorded as transfers into ``identifier``. Returns Pipes metadata
        (table name, row count, column schema) for :meth:`report`.

        Example:
            >>> work.report(key, work.write_table(key, "analytics.ward_occupancy", table))
        """
        intent = self.intent(asset_key)
        label = label_for_write(intent.asset, intent.classification, intent.data_jurisdictions, self.plane)
        catalog = storage.open_catalog(self.plane)
        with self.transfers.decision("write", table=identifier, asset=asset_key):
            try:
                check_write(intent, self.plane, self.policy)
            except ResidencyViolation as violation:
                raise self._hint(violation) from None
            if catalog.table_exists(identifier):
                existing = table_label(catalog.load_table(identifier), self.plane)
                check_relabel(existing, label, table=identifier)
        handed_sha256 = content_sha256(data)
        before_commit = self.transfers.before_commit(identifier, handed_sha256)
        replace_table(catalog, identifier, data, label, before_commit=before_commit)
        self.transfers.record_write(identifier, data, handed_sha256)
        recorded = recorded_residency_metadata(intent.classification, label.data_jurisdictions)
        return {
            **{key: {"raw_value": value, "type": "text"} for key, value in recorded.items()},
            "dagster/table_name": {"raw_value": f"{self.plane.name}.{identifier}", "type": "text"},
            "dagster/row_count": {"raw_value": data.num_rows, "type": "int"},
            "dagster/column_schema": {
                "raw_value": {"columns": [{"name": f.name, "type": str(f.type)} for f in data.schema]},
                "type": "table_schema",
            },
        }

    def intent(self, asset_key: str) -> WriteIntent:
        """The write intent of one of the step's assets; none means the guard refuses the write."""
        intent = self.intents.get(asset_key)
        if intent is None:
            raise ResidencyError(
                f"step {self.contract.step!r} has no write intent for asset {asset_key!r}: the guard refuses "
                "writes of assets the step does not materialize (pin the asset and select it in this step)"
            )
        if intent.declassified or not self.touched_jurisdictions:
            return intent
        # What the step read becomes part of what it writes (unless the asset is declassified).
        return dataclasses.replace(
            intent, data_jurisdictions=intent.data_jurisdictions | frozenset(self.touched_jurisdictions)
        )

    def report(self, asset_key: str, metadata: Mapping[str, Any]) -> None:
        """Report a materialization of ``asset_key`` (screened for regulated steps; secrets masked)."""
        self.pipes.report_asset_materialization(metadata=_masked(dict(metadata)), asset_key=asset_key)

    def _hint(self, violation: ResidencyViolation) -> ResidencyViolation:
        return violation if self.policy_visible else ResidencyViolation(f"{violation} ({NO_POLICY_HINT})")


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return MASKER.mask(value)
    if isinstance(value, Mapping):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item) for item in value]
    return value


@contextmanager
def secrets_kept_in_plane(where: str) -> Iterator[None]:
    """Replace an exception whose message or traceback carries a resolved secret by a value-free one.

    Example:
        >>> with secrets_kept_in_plane("work on plane eu-onprem"):
        ...     ...  # plane work
    """
    try:
        yield
    except Exception as error:
        if not MASKER.contains("".join(traceback.format_exception(error))):
            raise
        traceback.print_exc()  # stderr is masked; the plane's log keeps where it happened
        raise PlaneWorkError(
            f"{type(error).__name__} in {where}; its message carried a secret value, so it stays in the "
            "plane's log (masked)"
        ) from None


@contextmanager
def open_plane_work() -> Iterator[PlaneWork]:
    """Open Dagster Pipes inside a plane and return the guarded work context.

    Example:
        >>> with open_plane_work() as work:
        ...     rows = work.read_table("eu-onprem", "clinical.patients")
    """
    with open_dagster_pipes() as pipes:
        work = PlaneWork(pipes)
        where = f"work on plane {work.plane.name}"
        try:
            with secrets_kept_in_plane(where), errors_kept_in_plane(work.regulated, where=where):
                yield work
        finally:
            work.transfers.close()
            work.close()
