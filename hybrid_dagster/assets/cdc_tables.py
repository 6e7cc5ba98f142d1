"""Asset factory: one Iceberg asset per captured table, fed by a CDC source inside a data plane."""

from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from hybrid_dagster.cdc.pipeline import DeadLetterPolicy
from hybrid_dagster.cdc.sources.config import CdcSourceConfig
from hybrid_dagster.cdc.worker import FollowSpec
from hybrid_dagster.errors import ResidencyError
from hybrid_dagster.keys import (
    POLICY_RESOURCE_KEY,
    SOURCE_JURISDICTION_METADATA_KEY,
    plane_resource_key as _plane_resource_key,
)
from hybrid_dagster.pinning import pinned
from hybrid_dagster.residency.model import Classification, Jurisdiction, ResidencyPolicy
from hybrid_dagster.resources.data_plane import DataPlane

CDC_TEXT_METADATA = ("hybrid/watermark", "hybrid/schema_changes", "dagster/table_name")
CDC_METADATA_KEYS = (
    "events_received",
    "events_skipped_duplicates",
    "events_inserted",
    "events_updated",
    "events_deleted",
    "snapshot_rows",
    "iceberg_commits",
    "lag_seconds",
    "lag_bytes",
    "dead_letters",
    "iceberg_schema_id",
    "duplicate_keys",
    "caught_up",
    "max_lag_seconds",
)
"""Numeric metadata the CDC work reports; declared so that regulated CDC steps may report them."""

UNDECLARED = "undeclared"


@dataclass(frozen=True)
class CdcTable:
    """A source table captured into Iceberg.

    Example:
        >>> CdcTable("public.patients", classification="restricted", key_columns=("patient_id",))
    """

    source_table: str
    classification: str
    name: str | None = None
    key_columns: tuple[str, ...] = ()
    description: str | None = None

    @property
    def table_name(self) -> str:
        return self.name or self.source_table.rsplit(".", 1)[-1]


def cdc_table_assets(
    *,
    name: str,
    source: CdcSourceConfig,
    plane: DataPlane,
    tables: Sequence[CdcTable],
    namespace: str,
    key_prefix: Sequence[str] = (),
    group_name: str | None = None,
    owners: Sequence[str] = (),
    plane_resource_key: str | None = None,
    policy_resource_key: str | None = POLICY_RESOURCE_KEY,
    source_jurisdiction: str | None = None,
    dead_letter_policy: DeadLetterPolicy = "continue",
    batch_events: int = 50_000,
    max_lag_seconds: float = 900.0,
    max_seconds: float | None = 900.0,
    follow: FollowSpec | None = None,
) -> dg.AssetsDefinition:
    """A multi-asset streaming ``source`` into one Iceberg table per entry of ``tables`` in ``plane``.

    All tables of one source share one replication slot, so they materialize together (the slot is
    acknowledged only after every table committed). The work runs inside the plane through
    ``DataPlane.run``; each materialization reports ``dagster/table_name``, ``dagster/column_schema``,
    ``dagster/row_count``, events applied per operation, the watermark, lag and schema changes, and
    the checks ``primary_key_unique`` and ``cdc_lag`` run with it. A run stops reading new batches after
    ``max_seconds`` (None: until the source is drained); what is left waits for the next run and shows
    in the lag.

    ``follow`` turns a materialization into the long-running mode: the plane-side worker keeps applying
    small batches within ``follow.target_latency_s`` of their source commit for ``follow.max_seconds``
    (instead of draining once), reporting the materialization when it ends. Supervise it with
    :func:`hybrid_dagster.sensors.cdc_follow.cdc_follow_sensor`, which starts the next run whenever none
    is in progress; each run resumes from the committed watermarks.

    Example:
        .. code-block:: python

            clinical = cdc_table_assets(
                name="clinical_ops_cdc",
                source=PostgresCdcSource(dsn_env="CLINICAL_DB_DSN", slot_name="clinical_eu"),
                plane=eu_onprem,
                source_jurisdiction="EU",
                tables=[CdcTable("public.patients", "restricted"), CdcTable("public.wards", "internal")],
                namespace="clinical",
                owners=["team:clinical-data"],
            )
    """
    resource_key = plane_resource_key or _plane_resource_key(plane.name)
    # Where the source database sits is part of the residency graph: undeclared fails the check.
    data_jurisdiction = Jurisdiction.parse(source_jurisdiction).value if source_jurisdiction else UNDECLARED
    kinds = {source.dagster_kind, "iceberg"}
    specs: list[dg.AssetSpec] = []
    check_specs: list[dg.AssetCheckSpec] = []
    for table in tables:
        key = dg.AssetKey([*key_prefix, table.table_name])
        Classification.parse(table.classification)
        specs.append(
            dg.AssetSpec(
                key=key,
                description=table.description
                or f"CDC of {table.source_table} into Iceberg {namespace}.{table.table_name} on {plane.name}",
                group_name=group_name,
                owners=list(owners),
                **pinned(
                    plane,
                    table.classification,
                    kinds=kinds,
                    metadata={
                        "dagster/table_name": f"{plane.name}.{namespace}.{table.table_name}",
                        SOURCE_JURISDICTION_METADATA_KEY: data_jurisdiction,
                    },
                ),
            )
        )
        check_specs += [
            dg.AssetCheckSpec(
                "primary_key_unique", asset=key, description="No two rows share a primary key."
            ),
            dg.AssetCheckSpec(
                "cdc_lag",
                asset=key,
                description=f"The table is caught up or at most {max_lag_seconds:.0f}s behind the source.",
            ),
        ]

    by_key = {dg.AssetKey([*key_prefix, t.table_name]): t for t in tables}

    @dg.multi_asset(
        name=name,
        specs=specs,
        check_specs=check_specs,
        can_subset=False,
        required_resource_keys={resource_key} | ({policy_resource_key} if policy_resource_key else set()),
    )
    def _cdc(context: dg.AssetExecutionContext):  # type: ignore[no-untyped-def]
        target: DataPlane = getattr(context.resources, resource_key)
        if target.executor.kind == "kubernetes" and source.literal_secrets():
            raise ValueError(
                f"{name}: the source gives {', '.join(source.literal_secrets())} literally; on the "
                f"Kubernetes plane {target.name!r} it would travel in the pod spec. Give dsn_env/url_env, "
                "set inside the plane from its secrets backend"
            )
        if data_jurisdiction == UNDECLARED:
            raise ResidencyError(
                f"{name}: the source database's jurisdiction is not declared; pass source_jurisdiction= "
                "(e.g. 'EU') to cdc_table_assets so the residency check can place its data"
            )
        policy = _policy(context, policy_resource_key)
        spec = {
            "source": source.model_dump(),
            "tables": [
                {
                    "source_table": t.source_table,
                    "identifier": f"{namespace}.{t.table_name}",
                    "key_columns": list(t.key_columns),
                    "asset_key": key.to_user_string(),
                    "classification": t.classification,
                    "home_plane": plane.name,
                    "data_jurisdictions": [data_jurisdiction],
                }
                for key, t in by_key.items()
            ],
            "routes": [r.model_dump() for r in policy.routes],
            "dead_letter_table": f"{namespace}._dead_letters",
            "dead_letter_policy": dead_letter_policy,
            "batch_events": batch_events,
            "max_seconds": max_seconds,
            "max_lag_seconds": max_lag_seconds,
            "follow": follow.model_dump() if follow is not None else None,
        }
        invocation = target.run(
            context,
            module="hybrid_dagster.cdc.worker",
            extras={"cdc": spec},
            allowed_text_metadata=CDC_TEXT_METADATA,
            allowed_metadata_keys=CDC_METADATA_KEYS,
            known_planes=[plane],
        )
        yield from invocation.get_results()

    return _cdc


def _policy(context: dg.AssetExecutionContext, key: str | None) -> ResidencyPolicy:
    policy = getattr(context.resources, key, None) if key else None
    return policy if isinstance(policy, ResidencyPolicy) else ResidencyPolicy()
