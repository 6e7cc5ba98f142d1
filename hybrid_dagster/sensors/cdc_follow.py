"""Supervision of the CDC long-running mode: a sensor that keeps one follow run going.

A CDC asset built with ``cdc_table_assets(..., follow=FollowSpec(...))`` runs the plane-side worker in the
long-running mode for ``follow.max_seconds``. This sensor starts a run of it whenever none is queued or in
progress, so the tables stay within the target latency around the clock, and a run that failed (the plane
restarted, the database was down longer than the reconnect limit) is replaced on the next tick.

Correctness rules: at most one run at a time (a replication slot serves one consumer; a second would wait
``slot_busy_timeout_s`` and fail with ``ReplicationSlotInUse``); each run resumes from the watermarks in
Iceberg, so stopping, failing or being killed at any point loses and duplicates nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg

IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def cdc_follow_sensor(
    assets: dg.AssetsDefinition,
    *,
    name: str | None = None,
    minimum_interval_seconds: int = 60,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """A sensor (and its job) that keeps one run of the follow-mode CDC ``assets`` going.

    Example:
        .. code-block:: python

            clinical = cdc_table_assets(
                name="clinical_ops_cdc",
                source=PostgresCdcSource(dsn_env="CLINICAL_DB_DSN", slot_name="clinical_eu"),
                plane=eu_onprem,
                source_jurisdiction="EU",
                tables=[CdcTable("public.patients", "restricted")],
                namespace="clinical",
                follow=FollowSpec(target_latency_s=2.0, max_seconds=3300),
            )
            defs = dg.Definitions(assets=[clinical], sensors=[cdc_follow_sensor(clinical)], ...)
    """
    sensor_name = name or f"{assets.node_def.name}_follow"
    job = dg.define_asset_job(f"{sensor_name}_job", selection=dg.AssetSelection.assets(assets))

    @dg.sensor(
        name=sensor_name,
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=f"Keeps one long-running CDC run of {assets.node_def.name} going (one per slot).",
    )
    def _follow(context: dg.SensorEvaluationContext) -> Iterator[dg.RunRequest | dg.SkipReason]:
        running = context.instance.get_run_records(
            dg.RunsFilter(job_name=job.name, statuses=IN_PROGRESS), limit=1
        )
        if running:
            yield dg.SkipReason(
                f"run {running[0].dagster_run.run_id} of {job.name} is still following the source; "
                "one consumer per replication slot"
            )
            return
        yield dg.RunRequest(tags={"hybrid/cdc": "follow"})

    return _follow
