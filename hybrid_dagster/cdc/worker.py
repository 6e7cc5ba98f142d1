"""The CDC work that runs inside a data plane.

Started by the CDC assets through ``DataPlane.run`` (Dagster Pipes): it reads the job spec from the Pipes
extras, streams the source into the plane's Iceberg catalog and reports per table only counts,
positions, lag and schema. Also runnable by hand (``python -m hybrid_dagster.cdc.worker --spec job.json``),
which prints the report as JSON; the crash tests kill this process. With ``--follow`` (or ``"follow"``
in the spec) it keeps applying small batches with a target end-to-end latency until ``max_seconds``.
:func:`resnapshot` requests a fresh copy of one table of a job (``hybrid-dagster cdc resnapshot``),
through the same residency guard.

Every Iceberg commit is recorded in the audit log (``cdc.commit``, with the content hash of the batch as
decoded and of the rows as staged, compared before the commit) before the source is acknowledged
(:mod:`hybrid_dagster.cdc.evidence`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
from pydantic import BaseModel, Field, model_validator

from hybrid_dagster.cdc.evidence import CdcAuditRecorder, InboundRoute
from hybrid_dagster.cdc.pipeline import CdcPipeline, DeadLetterPolicy, Follow, PipelineReport, TableMapping
from hybrid_dagster.cdc.sink.apply import IcebergApplier
from hybrid_dagster.cdc.sink.changelog import ChangelogWriter
from hybrid_dagster.cdc.sink.dead_letters import DeadLetterTable
from hybrid_dagster.cdc.sink.maintenance import SnapshotRetention
from hybrid_dagster.cdc.snapshots import request_resnapshot
from hybrid_dagster.cdc.sources.config import AnyCdcSource
from hybrid_dagster.errors import ResidencyError, ValueFreeError
from hybrid_dagster.plane.contract import ResidencyExtras
from hybrid_dagster.plane.errors import errors_kept_in_plane
from hybrid_dagster.plane.storage import open_catalog
from hybrid_dagster.residency.guard import WriteIntent, check_write, recorded_residency_metadata
from hybrid_dagster.residency.labels import label_for_write
from hybrid_dagster.residency.model import Classification, ResidencyPolicy, TransferRoute
from hybrid_dagster.resources.data_plane import DataPlane
from hybrid_dagster.secrets import PlaneSecrets, pipes_run_id, use_plane_secrets


class CdcTableSpec(BaseModel):
    """One captured table as the worker sees it."""

    source_table: str
    identifier: str
    key_columns: list[str] = Field(default_factory=list)
    asset_key: str = ""
    classification: str = "internal"
    home_plane: str = ""
    data_jurisdictions: list[str] = Field(default_factory=list)


class FollowSpec(BaseModel):
    """The long-running mode of a job: apply small batches within ``target_latency_s`` of their source
    commit, for ``max_seconds`` (None: until the worker is stopped; a supervising schedule or sensor
    starts the next run, which resumes from the committed watermarks).

    Example:
        >>> FollowSpec(target_latency_s=2.0, max_seconds=3300).to_follow().linger_s
        1.0
    """

    target_latency_s: float = Field(default=2.0, gt=0)
    max_seconds: float | None = Field(default=3300.0)

    def to_follow(self) -> Follow:
        return Follow(target_latency_s=self.target_latency_s, max_seconds=self.max_seconds)


DEFAULT_MAX_SECONDS = 900.0
"""Time limit of one run, the same for the asset factory and ``hybrid-dagster cdc run``."""
DEAD_LETTER_TABLE = "_dead_letters"
"""Name of the dead-letter table inside the namespace of the first table, unless the spec names one."""

SPEC_EXAMPLE: dict[str, Any] = {
    "source": {"kind": "postgres", "dsn_env": "CLINICAL_DB_DSN", "slot_name": "clinical_eu"},
    "tables": [
        {
            "source_table": "public.patients",
            "identifier": "clinical.patients",
            "key_columns": ["patient_id"],
            "classification": "restricted",
            "data_jurisdictions": ["EU"],
        }
    ],
    "dead_letter_policy": "continue",
    "max_seconds": DEFAULT_MAX_SECONDS,
}
"""A complete job spec (shown by ``hybrid-dagster cdc run --help``; checked by the tests)."""


class CdcJobSpec(BaseModel):
    """Everything the plane-side worker needs; no secrets (the DSN comes from the plane's environment).

    Defaults match :func:`~hybrid_dagster.assets.cdc_tables.cdc_table_assets`: dead letters go to
    ``<namespace of the first table>._dead_letters`` (give ``"dead_letter_table": null`` to have none,
    which stops the run at the first malformed event), and a run stops after 900 s.

    Example:
        >>> CdcJobSpec.model_validate(SPEC_EXAMPLE).dead_letter_table
        'clinical._dead_letters'
    """

    source: AnyCdcSource
    tables: list[CdcTableSpec]
    routes: list[dict[str, Any]] = Field(default_factory=list)
    dead_letter_table: str | None = None
    dead_letter_policy: DeadLetterPolicy = "continue"
    changelog: bool = True
    batch_events: int = 50_000
    max_seconds: float | None = DEFAULT_MAX_SECONDS
    max_lag_seconds: float = 900.0
    follow: FollowSpec | None = None
    """Long-running mode instead of one drain (``max_seconds`` is then ``follow.max_seconds``)."""
    snapshot_retention: SnapshotRetention | None = Field(default_factory=SnapshotRetention)
    """Expire the tables' old snapshots and the files only they named (default: each table's
    ``history.expire.*`` properties, else Iceberg's 5 days, keeping at least 1; what the pipeline reads
    back is always kept); null: never."""

    @model_validator(mode="after")
    def _default_dead_letter_table(self) -> CdcJobSpec:
        if "dead_letter_table" not in self.model_fields_set and self.tables:
            namespace = self.tables[0].identifier.rsplit(".", 1)[0]
            self.dead_letter_table = f"{namespace}.{DEAD_LETTER_TABLE}"
        return self

    def mappings(self) -> list[TableMapping]:
        return [TableMapping(t.source_table, t.identifier, tuple(t.key_columns)) for t in self.tables]


def spec_intents(spec: CdcJobSpec, plane: DataPlane) -> dict[str, WriteIntent]:
    """Write intents as the job spec states them (standalone mode: the operator's spec is trusted)."""
    unplaced = [t.identifier for t in spec.tables if not t.data_jurisdictions]
    if unplaced:  # the guard fails closed: where the data lives must be stated, never assumed
        raise ResidencyError(
            f"CDC job spec gives no data_jurisdictions for {', '.join(unplaced)}: add to each of these "
            'tables the jurisdictions its source rows are in, e.g. "data_jurisdictions": '
            f'["{plane.jurisdiction}"] when the source database sits in this plane\'s jurisdiction. '
            "It is never assumed: the residency guard checks it before every write."
        )
    return {
        t.identifier: WriteIntent(
            asset=t.asset_key or t.identifier,
            classification=Classification.parse(t.classification),
            home_plane=t.home_plane or plane.name,
            data_jurisdictions=frozenset(t.data_jurisdictions),
        )
        for t in spec.tables
    }


def contract_intents(spec: CdcJobSpec, contract: ResidencyExtras) -> dict[str, WriteIntent]:
    """Write intents as the orchestrator computed them from the asset graph (Pipes mode), fail-closed."""
    intents: dict[str, WriteIntent] = {}
    for t in spec.tables:
        computed = contract.intents.get(t.asset_key)
        if computed is None:
            raise ResidencyError(
                f"table {t.identifier}: the step has no write intent for asset {t.asset_key!r}; "
                "refusing to write"
            )
        intent = computed.to_intent()
        stated = frozenset(t.data_jurisdictions)
        intents[t.identifier] = WriteIntent(
            asset=intent.asset,
            classification=max(intent.classification, Classification.parse(t.classification)),
            home_plane=intent.home_plane,
            data_jurisdictions=intent.data_jurisdictions | stated,
            clearance=intent.clearance,
        )
    return intents


def commit_recorder(spec: CdcJobSpec, plane: DataPlane) -> CdcAuditRecorder:
    """The audit recorder of this job's commits (``cdc.commit`` per Iceberg commit, before the ack);
    :func:`build_pipeline` fills in the source."""
    policy = ResidencyPolicy(routes=[TransferRoute(**r) for r in spec.routes])
    routes: dict[str, InboundRoute] = {}
    for t in spec.tables:
        foreign = sorted(set(t.data_jurisdictions) - {plane.jurisdiction})
        if foreign:
            route = policy.route_for(foreign[0], plane.jurisdiction, Classification.parse(t.classification))
            routes[t.identifier] = InboundRoute(foreign[0], route.legal_basis if route else None)
    return CdcAuditRecorder.open(
        plane=plane.name,
        jurisdiction=plane.jurisdiction,
        source_id="",
        run_id=pipes_run_id(),
        warn=logging.getLogger(__name__).warning,
        actors={t.identifier: f"cdc:{t.asset_key or t.identifier}" for t in spec.tables},
        routes=routes,
    )


def build_pipeline(
    spec: CdcJobSpec,
    plane: DataPlane,
    intents: Mapping[str, WriteIntent] | None = None,
    recorder: CdcAuditRecorder | None = None,
) -> CdcPipeline:
    """The pipeline for ``spec`` inside ``plane``, with the residency guard on every table write and,
    given a ``recorder``, an audit record of every commit (see :func:`commit_recorder`)."""
    intents = dict(intents) if intents is not None else spec_intents(spec, plane)
    source = spec.source.build([m.source for m in spec.mappings()])
    if recorder is not None:
        recorder.source_id = source.source_id
    catalog = open_catalog(plane.spec())
    policy = ResidencyPolicy(routes=[TransferRoute(**r) for r in spec.routes])

    def guard(identifier: str) -> None:
        intent = intents.get(identifier)
        if intent is None:
            raise KeyError(f"no residency intent for table {identifier}: refusing to write")
        check_write(intent, plane, policy)
        if catalog.table_exists(identifier):
            _label(catalog.load_table(identifier), intent, plane)

    filesystem, root = plane.filesystem()
    changelog = ChangelogWriter(f"{root}/_changelog", filesystem=filesystem) if spec.changelog else None
    applier = IcebergApplier(
        catalog,
        source_id=source.source_id,
        changelog=changelog,
        before_write=guard,
        on_mismatch=recorder.mismatched if recorder is not None else None,
    )
    dead_letters = DeadLetterTable(catalog, spec.dead_letter_table) if spec.dead_letter_table else None
    return CdcPipeline(
        source,
        applier,
        spec.mappings(),
        dead_letters=dead_letters,
        dead_letter_policy=spec.dead_letter_policy,
        batch_events=spec.batch_events,
        on_commit=recorder.committed if recorder is not None else None,
        on_copy_commit=recorder.chunk_committed if recorder is not None else None,
        retention=spec.snapshot_retention,
    )


def table_report(spec: CdcJobSpec, report: PipelineReport, plane: DataPlane) -> dict[str, dict[str, Any]]:
    """Per-table facts safe to leave the plane: counts, positions, lag, schema. Never row values."""
    catalog = open_catalog(plane.spec())
    caught_up = (
        report.source_position is None or report.acked is None or report.acked >= report.source_position
    )
    out: dict[str, dict[str, Any]] = {}
    for t in spec.tables:
        progress = report.tables[t.identifier]
        table = catalog.load_table(t.identifier) if catalog.table_exists(t.identifier) else None
        keys = t.key_columns or _identifier_columns(table)
        duplicates = _duplicate_keys(table, keys) if table is not None else 0
        # WAL bytes between the source's current LSN and the table; positions of other sources are not bytes.
        lag_bytes = (
            max(0, report.source_position.commit - progress.watermark.commit)
            if spec.source.kind == "postgres"
            and report.source_position is not None
            and progress.watermark is not None
            else None
        )
        lag_seconds = (
            0.0
            if caught_up or progress.last_commit_ts is None
            else (datetime.now(UTC) - progress.last_commit_ts).total_seconds()
        )
        out[t.identifier] = {
            "asset_key": t.asset_key,
            "residency": recorded_residency_metadata(
                Classification.parse(t.classification), {*t.data_jurisdictions, plane.jurisdiction}
            ),
            "row_count": _row_count(table),
            "columns": _columns(table, keys),
            "events_received": progress.events_received,
            "events_skipped": progress.events_skipped,
            "inserted": progress.inserted,
            "updated": progress.updated,
            "deleted": progress.deleted,
            "snapshot_rows": progress.snapshot_rows,
            "commits": progress.commits,
            "watermark": progress.watermark.encode() if progress.watermark else None,
            "schema_id": table.schema().schema_id if table is not None else None,
            "schema_changes": progress.schema_changes,
            "duplicate_keys": duplicates,
            "lag_bytes": lag_bytes,
            "lag_seconds": lag_seconds,
            "caught_up": caught_up,
            "max_lag_seconds": spec.max_lag_seconds,
            "dead_letters": report.dead_letters,
        }
    return out


def _identifier_columns(table: Any) -> list[str]:
    if table is None:
        return []
    schema = table.schema()
    return [name for i in schema.identifier_field_ids if (name := schema.find_column_name(i))]


def _row_count(table: Any) -> int:
    if table is None or table.current_snapshot() is None:
        return 0
    summary = table.current_snapshot().summary
    total = summary.get("total-records") if summary is not None else None
    return int(total) if total is not None else table.scan().to_arrow().num_rows


def _duplicate_keys(table: Any, keys: list[str]) -> int:
    if not keys or table.current_snapshot() is None:
        return 0
    key_table = table.scan(selected_fields=tuple(keys)).to_arrow()
    if key_table.num_rows == 0:
        return 0
    grouped = key_table.group_by(keys).aggregate([([], "count_all")])
    return int(pc.sum(pc.greater(grouped.column("count_all"), 1)).as_py() or 0)


def _columns(table: Any, keys: list[str]) -> list[dict[str, Any]]:
    if table is None:
        return []
    return [
        {
            "name": f.name,
            "type": str(f.field_type),
            "constraints": {"nullable": not f.required, "unique": f.name in keys and len(keys) == 1},
        }
        for f in table.schema().fields
    ]


def _report_to_pipes(pipes: Any, facts: Mapping[str, Mapping[str, Any]]) -> None:
    for identifier, f in facts.items():
        metadata: dict[str, Any] = {
            **{key: {"raw_value": value, "type": "text"} for key, value in f["residency"].items()},
            "dagster/table_name": {"raw_value": identifier, "type": "text"},
            "dagster/row_count": {"raw_value": f["row_count"], "type": "int"},
            "dagster/column_schema": {"raw_value": {"columns": f["columns"]}, "type": "table_schema"},
            "events_received": {"raw_value": f["events_received"], "type": "int"},
            "events_skipped_duplicates": {"raw_value": f["events_skipped"], "type": "int"},
            "events_inserted": {"raw_value": f["inserted"], "type": "int"},
            "events_updated": {"raw_value": f["updated"], "type": "int"},
            "events_deleted": {"raw_value": f["deleted"], "type": "int"},
            "snapshot_rows": {"raw_value": f["snapshot_rows"], "type": "int"},
            "iceberg_commits": {"raw_value": f["commits"], "type": "int"},
            "hybrid/watermark": {"raw_value": f["watermark"] or "", "type": "text"},
            "lag_seconds": {"raw_value": float(f["lag_seconds"]), "type": "float"},
            "hybrid/schema_changes": {"raw_value": "; ".join(f["schema_changes"]) or "none", "type": "text"},
            "dead_letters": {"raw_value": f["dead_letters"], "type": "int"},
        }
        if f["lag_bytes"] is not None:
            metadata["lag_bytes"] = {"raw_value": f["lag_bytes"], "type": "int"}
        if f["schema_id"] is not None:
            metadata["iceberg_schema_id"] = {"raw_value": f["schema_id"], "type": "int"}
        pipes.report_asset_materialization(metadata=metadata, asset_key=f["asset_key"])
        pipes.report_asset_check(
            check_name="primary_key_unique",
            passed=f["duplicate_keys"] == 0,
            asset_key=f["asset_key"],
            metadata={"duplicate_keys": {"raw_value": f["duplicate_keys"], "type": "int"}},
        )
        fresh = f["caught_up"] or f["lag_seconds"] <= f["max_lag_seconds"]
        pipes.report_asset_check(
            check_name="cdc_lag",
            passed=bool(fresh),
            severity="WARN",
            asset_key=f["asset_key"],
            metadata={
                "lag_seconds": {"raw_value": float(f["lag_seconds"]), "type": "float"},
                "caught_up": {"raw_value": bool(f["caught_up"]), "type": "bool"},
                "max_lag_seconds": {"raw_value": float(f["max_lag_seconds"]), "type": "float"},
            },
        )


def _label(table: Any, intent: WriteIntent, plane: DataPlane) -> None:
    """Label a CDC table at rest; until labelled it counts as restricted (fail-closed)."""
    label = label_for_write(intent.asset, intent.classification, intent.data_jurisdictions, plane)
    wanted = label.properties()
    if any(table.properties.get(k) != v for k, v in wanted.items()):
        with table.transaction() as txn:
            txn.set_properties(wanted)


def run_job(
    spec: CdcJobSpec, plane: DataPlane, intents: Mapping[str, WriteIntent] | None = None
) -> tuple[PipelineReport, dict[str, dict[str, Any]]]:
    intents = dict(intents) if intents is not None else spec_intents(spec, plane)
    # the source's password_secret (if any) is resolved with this plane's identity, masked and audited
    secrets = PlaneSecrets.from_plane_config(plane.to_config(), run_id=pipes_run_id())
    use_plane_secrets(secrets)
    recorder: CdcAuditRecorder | None = None
    try:
        recorder = commit_recorder(spec, plane)
        pipeline = build_pipeline(spec, plane, intents, recorder)
        try:
            if spec.follow is not None:
                report = pipeline.run(follow=spec.follow.to_follow())
            else:
                report = pipeline.run(deadline_s=spec.max_seconds)
        finally:
            pipeline.source.close()
        catalog = open_catalog(plane.spec())
        for identifier, intent in intents.items():
            if catalog.table_exists(identifier):
                _label(catalog.load_table(identifier), intent, plane)
        return report, table_report(spec, report, plane)
    finally:
        if recorder is not None:
            recorder.close()
        secrets.close()
        use_plane_secrets(None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybrid_dagster.cdc.worker")
    parser.add_argument("--spec", help="JSON job spec file (standalone mode); without it, read Pipes extras.")
    parser.add_argument(
        "--plane", help="JSON plane config file (standalone mode; default: from environment)."
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="long-running mode: keep applying small batches (the spec's 'follow' settings, else defaults)",
    )
    parser.add_argument("--target-latency", type=float, help="follow mode: target end-to-end latency (s)")
    parser.add_argument("--follow-seconds", type=float, help="follow mode: stop after this many seconds")
    args = parser.parse_args(argv)
    if args.spec:
        # one line per applied batch (table, counts, watermark; never row values) on stderr
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
        spec = CdcJobSpec.model_validate_json(Path(args.spec).read_text())
        if args.follow or args.target_latency is not None or args.follow_seconds is not None:
            follow = spec.follow or FollowSpec()
            if args.target_latency is not None:
                follow = follow.model_copy(update={"target_latency_s": args.target_latency})
            if args.follow_seconds is not None:
                follow = follow.model_copy(update={"max_seconds": args.follow_seconds})
            spec = spec.model_copy(update={"follow": follow})
        plane = (
            DataPlane.from_config(json.loads(Path(args.plane).read_text()))
            if args.plane
            else DataPlane.from_env()
        )
        started = time.monotonic()
        report, facts = run_job(spec, plane)
        summary = {
            "events_applied": report.events_applied,
            "batches": report.batches,
            "acked": report.acked.encode() if report.acked else None,
            "duration_s": round(time.monotonic() - started, 3),
            "tables": facts,
        }
        json.dump(summary, sys.stdout, default=str)
        sys.stdout.write("\n")
        return 0

    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        spec = CdcJobSpec.model_validate(pipes.get_extra("cdc"))
        contract = ResidencyExtras.from_extras(pipes.extras)
        plane = DataPlane.from_env()
        regulated = contract.clearance.is_regulated or any(
            Classification.parse(t.classification).is_regulated for t in spec.tables
        )
        with errors_kept_in_plane(regulated, where=f"CDC from {spec.source.kind} on plane {plane.name}"):
            report, facts = run_job(spec, plane, contract_intents(spec, contract))
        pipes.log.info(
            f"cdc: {report.events_applied} events applied in {report.batches} batches, "
            f"{report.dead_letters} dead letters, acked {report.acked}"
        )
        _report_to_pipes(pipes, facts)
    return 0


# --- re-snapshot on demand (hybrid-dagster cdc resnapshot) ---


class UnknownCdcTableError(ValueFreeError):
    """The table named for a re-snapshot is not one of the job's tables."""


def resnapshot(spec: CdcJobSpec, plane: DataPlane, identifier: str) -> dict[str, str]:
    """Request a re-snapshot of ``identifier`` (an Iceberg table of ``spec``); returns what was done.

    Example:
        >>> resnapshot(spec, plane, "clinical.patients")  # doctest: +SKIP
        {'table': 'clinical.patients', 'source': 'postgres://db:5432/clinic#eu', 'status': 'requested'}
    """
    pipeline = build_pipeline(spec, plane)
    try:
        identifiers = sorted(m.identifier for m in pipeline.tables.values())
        if identifier not in identifiers:
            raise UnknownCdcTableError(
                f"{identifier} is not a table of this CDC job (its tables: {', '.join(identifiers)}); "
                "name the Iceberg table, as in the job spec's 'identifier'"
            )
        if pipeline.applier.before_write is not None:
            pipeline.applier.before_write(identifier)  # the residency guard of every CDC write
        request_resnapshot(pipeline.applier.catalog, identifier, pipeline.source.source_id)
        return {"table": identifier, "source": pipeline.source.source_id, "status": "requested"}
    finally:
        pipeline.source.close()


if __name__ == "__main__":
    raise SystemExit(main())
