"""Dagster side of disaster recovery: per plane a replication job and a DR drill job, each scheduled.

Correctness rules:

- Every step that touches a catalog runs inside a plane through ``DataPlane.run``
  (:mod:`hybrid_dagster.dr.worker`); the orchestrator sees counts, timings, ids and table names only.
- ``dr/<plane>/replica`` (pinned to the primary) replicates the plane; its metadata carries the lag left
  (seconds, source changes); a Dagster last-update freshness check fails when the replica is older than
  the plane's RPO objective.
- The drill job runs ``dr/<plane>/drill_outage`` (primary: capture the committed state; T0 when it
  ends), ``dr/<plane>/drill_failover`` (pinned to the secondary, started with the primary's storage
  unreadable: the canary at the secondary; RTO ends at its first pass), ``dr/<plane>/drill`` (primary:
  verify the primary intact and nothing left behind; RTO and RPO against the objectives as asset checks
  that fail when missed; one ``dr.drill`` audit record) and ``dr_drill_report`` (history and a chart).
- A drill asset refuses results of another run: the three steps of one drill belong to one run.
"""

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import dagster as dg

from hybrid_dagster.dr.drill import DrillResult
from hybrid_dagster.dr.errors import DrillError
from hybrid_dagster.dr.isolation import isolated_argv
from hybrid_dagster.dr.local import hidden_paths
from hybrid_dagster.dr.targets import dr_config, secondary_plane
from hybrid_dagster.pinning import pinned
from hybrid_dagster.residency.model import ResidencyPolicy
from hybrid_dagster.resources.audit import AuditLogResource
from hybrid_dagster.resources.data_plane import DataPlane

EXTRAS_KEY = "hybrid_dr"
WORKER = "hybrid_dagster.dr.worker"
DR_KEYS = ["dr/*"]
DR_TEXT_KEYS = ["dr/table_names", "dr/primary_position/*", "dr/secondary_position/*"]
REPORT_KEY = dg.AssetKey("dr_drill_report")
AUDIT_KIND = "dr.drill"
OWNERS = ["team:platform"]


def _key(plane: DataPlane) -> str:
    return plane.name.replace("-", "_")


def replica_key(plane: DataPlane) -> dg.AssetKey:
    return dg.AssetKey(["dr", _key(plane), "replica"])


def drill_key(plane: DataPlane) -> dg.AssetKey:
    return dg.AssetKey(["dr", _key(plane), "drill"])


def _numbers(invocation: dg.PipesClientCompletedInvocation) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for result in invocation.get_results():
        for key, value in (getattr(result, "metadata", None) or {}).items():
            found[key] = value.value if isinstance(value, dg.MetadataValue) else value
    return found


def _drill_id(context: dg.AssetExecutionContext) -> str:
    return "d" + context.run.run_id.replace("-", "")[:16]


def _from_this_run(context: dg.AssetExecutionContext, key: dg.AssetKey) -> dict[str, Any]:
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.run_id != context.run.run_id or event.asset_materialization is None:
        raise DrillError(
            f"asset {key.to_user_string()} was not materialized in this run: run the whole drill job "
            "(outage, failover, drill) together"
        )
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def plane_dr_definitions(
    plane: DataPlane,
    policy: ResidencyPolicy,
    *,
    planes: Mapping[str, DataPlane] | None = None,
) -> dg.Definitions:
    """The DR assets, checks, jobs and schedules of one plane (it must name a ``dr_secondary``).

    Example:
        .. code-block:: python

            defs = dg.Definitions.merge(defs, plane_dr_definitions(eu_onprem, policy))
    """
    config = dr_config(plane)
    secondary = secondary_plane(plane, planes)
    key, sec_key = _key(plane), _key(secondary)
    rpo = config.rpo_objective_s
    job_base = {"primary": plane.to_config(), "secondary": secondary.to_config()}

    @dg.asset(
        key=replica_key(plane),
        group_name="dr",
        owners=list(plane.owners) or OWNERS,
        description=f"Plane {plane.name}'s tables, model artifacts and secret references, replicated to "
        f"its DR secondary {secondary.name}.",
        required_resource_keys={key},
        **pinned(plane, "restricted", kinds={"iceberg"}),
    )
    def replica(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        primary: DataPlane = getattr(context.resources, key)
        job = {
            **job_base,
            "mode": "replicate",
            "asset": context.asset_key.to_user_string(),
            "policy": policy.model_dump(),
            "secret_refs": list(config.secret_refs),
        }
        invocation = primary.run(
            context,
            module=WORKER,
            extras={EXTRAS_KEY: job},
            allowed_metadata_keys=DR_KEYS,
            allowed_text_metadata=DR_TEXT_KEYS,
        )
        found = _numbers(invocation)
        metadata: dict[str, Any] = {k: v for k, v in found.items() if k.startswith("dr/")}
        metadata["dr/secondary"] = dg.MetadataValue.text(secondary.name)
        metadata["dr/rpo_objective_s"] = rpo
        return dg.MaterializeResult(metadata=metadata)

    freshness = dg.build_last_update_freshness_checks(
        assets=[replica], lower_bound_delta=timedelta(seconds=max(rpo, 1.0))
    )

    @dg.asset(
        key=["dr", key, "drill_outage"],
        group_name="dr",
        owners=list(plane.owners) or OWNERS,
        description=f"DR drill, step 1: plane {plane.name}'s committed state captured; then the outage.",
        required_resource_keys={key},
        **pinned(plane, "restricted", kinds={"iceberg"}),
    )
    def drill_outage(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        primary: DataPlane = getattr(context.resources, key)
        job = {**job_base, "mode": "capture", "asset": context.asset_key.to_user_string()}
        job["drill_id"] = _drill_id(context)
        invocation = primary.run(
            context, module=WORKER, extras={EXTRAS_KEY: job}, allowed_metadata_keys=DR_KEYS
        )
        found = _numbers(invocation)
        t0 = time.time()  # the primary is down from here on, for the drill's failover
        return dg.MaterializeResult(metadata={"dr/tables": int(found.get("dr/tables", 0)), "dr/t0": t0})

    @dg.asset(
        key=["dr", key, "drill_failover"],
        deps=[drill_outage],
        group_name="dr",
        owners=list(plane.owners) or OWNERS,
        description=f"DR drill, step 2: fail over to {secondary.name} with {plane.name}'s storage "
        "unreadable; a canary reads every replicated table and writes one there.",
        required_resource_keys={sec_key},
        **pinned(secondary, "restricted", kinds={"iceberg"}),
    )
    def drill_failover(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        target: DataPlane = getattr(context.resources, sec_key)
        hidden = hidden_paths(plane)
        argv, mode = isolated_argv([target.executor.python, "-m", WORKER], hidden)
        job = {
            **job_base,
            "mode": "failover",
            "asset": context.asset_key.to_user_string(),
            "drill_id": _drill_id(context),
            "hidden": hidden,
            "isolation": mode,
        }
        invocation = target.run(
            context,
            command=argv,
            extras={EXTRAS_KEY: job},
            allowed_metadata_keys=DR_KEYS,
            allowed_text_metadata=DR_TEXT_KEYS,
            known_planes=[plane],
        )
        found = {k: v for k, v in _numbers(invocation).items() if k.startswith("dr/")}
        found["dr/isolation"] = dg.MetadataValue.text(mode)
        return dg.MaterializeResult(metadata=found)

    check_specs = [
        dg.AssetCheckSpec("rto_objective", asset=drill_key(plane), description="RTO within the objective."),
        dg.AssetCheckSpec("rpo_objective", asset=drill_key(plane), description="RPO within the objective."),
        dg.AssetCheckSpec(
            "drill_clean", asset=drill_key(plane), description="Primary intact, no drill resources left."
        ),
    ]

    @dg.asset(
        key=drill_key(plane),
        deps=[drill_failover],
        group_name="dr",
        owners=list(plane.owners) or OWNERS,
        description=f"DR drill of plane {plane.name}: measured RTO and RPO against its objectives.",
        required_resource_keys={key, sec_key, "audit_log"},
        check_specs=check_specs,
        **pinned(plane, "restricted"),
    )
    def drill(context: dg.AssetExecutionContext) -> Any:
        primary: DataPlane = getattr(context.resources, key)
        outage = _from_this_run(context, drill_outage.key)
        failed_over = _from_this_run(context, drill_failover.key)
        job = {**job_base, "mode": "verify", "asset": context.asset_key.to_user_string()}
        job["drill_id"] = _drill_id(context)
        checked = _numbers(
            primary.run(context, module=WORKER, extras={EXTRAS_KEY: job}, allowed_metadata_keys=DR_KEYS)
        )
        t0 = float(outage["dr/t0"])
        result = DrillResult(
            plane=plane.name,
            secondary=secondary.name,
            drill_id=_drill_id(context),
            t0=t0,
            rto_s=round(float(failed_over["dr/canary_passed_at"]) - t0, 3),
            rpo_s=float(failed_over["dr/rpo_s"]),
            rpo_changes=int(failed_over["dr/rpo_changes"]),
            tables=int(failed_over["dr/tables_ok"]),
            rows_read=int(failed_over["dr/rows_read"]),
            isolation=str(failed_over.get("dr/isolation", "")),
            primary_intact=bool(checked.get("dr/primary_intact", False)),
            leftovers=int(checked.get("dr/leftovers", 1)),
            rto_objective_s=config.rto_objective_s,
            rpo_objective_s=config.rpo_objective_s,
            rpo_objective_changes=config.rpo_objective_changes or 0,
        )
        audit: AuditLogResource = context.resources.audit_log
        audit.append(
            AUDIT_KIND,
            actor=f"dagster:{context.run.job_name}",
            plane=plane.name,
            run_id=context.run.run_id,
            details={k: v for k, v in result.to_json().items() if k != "t0"},
        )
        yield dg.MaterializeResult(metadata=drill_metadata(result))
        yield from drill_checks(result)

    replicate_job = dg.define_asset_job(
        f"dr_replicate_{key}",
        selection=dg.AssetSelection.assets(replica) | dg.AssetSelection.checks(*freshness),
        description=f"Replicate plane {plane.name} to its DR secondary {secondary.name}.",
    )
    drill_job = dg.define_asset_job(
        f"dr_drill_{key}",
        selection=dg.AssetSelection.assets(drill_outage, drill_failover, drill, REPORT_KEY),
        description=f"DR drill of plane {plane.name}: outage, failover to {secondary.name}, RTO/RPO.",
    )
    return dg.Definitions(
        assets=[replica, drill_outage, drill_failover, drill],
        asset_checks=list(freshness),
        jobs=[replicate_job, drill_job],
        schedules=[
            dg.ScheduleDefinition(
                name=f"dr_replicate_{key}_schedule",
                job=replicate_job,
                cron_schedule=config.replication_cron,
                default_status=dg.DefaultScheduleStatus.STOPPED,
            ),
            dg.ScheduleDefinition(
                name=f"dr_drill_{key}_schedule",
                job=drill_job,
                cron_schedule=config.drill_cron,
                default_status=dg.DefaultScheduleStatus.STOPPED,
            ),
        ],
        resources={key: plane, sec_key: secondary},
    )


def drill_metadata(result: DrillResult) -> dict[str, Any]:
    """Dagster metadata of one drill (the UI plots the numbers over time, beside the objectives)."""
    return {
        "dr/rto_s": result.rto_s,
        "dr/rto_objective_s": result.rto_objective_s,
        "dr/rpo_s": result.rpo_s,
        "dr/rpo_objective_s": result.rpo_objective_s,
        "dr/rpo_changes": result.rpo_changes,
        "dr/rpo_objective_changes": result.rpo_objective_changes,
        "dr/tables": result.tables,
        "dr/rows_read": result.rows_read,
        "dr/primary_intact": result.primary_intact,
        "dr/leftovers": result.leftovers,
        "dr/objectives_met": result.objectives_met,
        "dr/secondary": dg.MetadataValue.text(result.secondary),
        "dr/isolation": dg.MetadataValue.text(result.isolation),
        "dr/drill_id": dg.MetadataValue.text(result.drill_id),
    }


def drill_checks(result: DrillResult) -> list[dg.AssetCheckResult]:
    """The drill's objectives as asset check results (failing when missed).

    Example:
        >>> [c.passed for c in drill_checks(result)]
        [True, False, True]
    """
    return [
        dg.AssetCheckResult(
            check_name="rto_objective",
            passed=result.rto_met,
            metadata={"rto_s": result.rto_s, "objective_s": result.rto_objective_s},
        ),
        dg.AssetCheckResult(
            check_name="rpo_objective",
            passed=result.rpo_met,
            metadata={
                "rpo_s": result.rpo_s,
                "objective_s": result.rpo_objective_s,
                "rpo_changes": result.rpo_changes,
                "objective_changes": result.rpo_objective_changes,
            },
        ),
        dg.AssetCheckResult(
            check_name="drill_clean",
            passed=result.clean,
            metadata={"primary_intact": result.primary_intact, "leftovers": result.leftovers},
        ),
    ]


def drill_report_asset(drilled: Sequence[DataPlane], *, report_plane: DataPlane) -> dg.AssetsDefinition:
    """``dr_drill_report``: the history of every plane's drills, with RTO/RPO against the objectives."""
    keys = [drill_key(p) for p in drilled]

    @dg.asset(
        key=REPORT_KEY,
        deps=keys,
        group_name="dr",
        owners=OWNERS,
        description="History of DR drills: RTO and RPO per plane against their objectives.",
        **pinned(report_plane, "internal", declassified="DR drill timings and counts only; no rows"),
    )
    def dr_drill_report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        rows: list[dict[str, Any]] = []
        for key in keys:
            records = context.instance.fetch_materializations(key, limit=50).records
            for record in reversed(records):
                materialization = record.asset_materialization
                if materialization is None:
                    continue
                meta = {k: v.value for k, v in materialization.metadata.items()}
                rows.append(
                    {
                        "plane": key.path[1],
                        "at": time.strftime("%Y-%m-%d %H:%M", time.gmtime(record.timestamp)),
                        "rto_s": float(meta.get("dr/rto_s", 0.0)),
                        "rto_objective_s": float(meta.get("dr/rto_objective_s", 0.0)),
                        "rpo_s": float(meta.get("dr/rpo_s", 0.0)),
                        "rpo_objective_s": float(meta.get("dr/rpo_objective_s", 0.0)),
                        "rpo_changes": int(meta.get("dr/rpo_changes", 0)),
                        "met": bool(meta.get("dr/objectives_met", False)),
                    }
                )
        return dg.MaterializeResult(
            metadata={
                "drills": len(rows),
                "history": dg.MetadataValue.table(
                    records=[dg.TableRecord(r) for r in rows],
                    schema=dg.TableSchema(
                        columns=[
                            dg.TableColumn("plane", "string"),
                            dg.TableColumn("at", "string"),
                            dg.TableColumn("rto_s", "float"),
                            dg.TableColumn("rto_objective_s", "float"),
                            dg.TableColumn("rpo_s", "float"),
                            dg.TableColumn("rpo_objective_s", "float"),
                            dg.TableColumn("rpo_changes", "int"),
                            dg.TableColumn("met", "bool"),
                        ]
                    ),
                ),
                "chart": dg.MetadataValue.md(report_chart(rows)),
            }
        )

    return dr_drill_report


def report_chart(rows: Sequence[Mapping[str, Any]], width: int = 30) -> str:
    """A markdown chart of RTO and RPO against their objectives, one bar pair per drill.

    Example:
        >>> print(report_chart([{"plane": "eu", "at": "2026-01-01", "rto_s": 40, "rto_objective_s": 900,
        ...                      "rpo_s": 0, "rpo_objective_s": 300, "rpo_changes": 0, "met": True}]))
    """
    lines = [
        "| plane | when | RTO vs objective | RPO vs objective | lost changes | met |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        rto = _bar(row["rto_s"], row["rto_objective_s"], width)
        rpo = _bar(row["rpo_s"], row["rpo_objective_s"], width)
        lines.append(
            f"| {row['plane']} | {row['at']} | `{rto}` {row['rto_s']:.1f}s / {row['rto_objective_s']:.0f}s "
            f"| `{rpo}` {row['rpo_s']:.1f}s / {row['rpo_objective_s']:.0f}s | {row['rpo_changes']} "
            f"| {'yes' if row['met'] else 'NO'} |"
        )
    return "\n".join(lines)


def _bar(value: float, objective: float, width: int) -> str:
    """``value`` as a bar where ``|`` marks the objective (at two thirds of the width)."""
    mark = (2 * width) // 3
    scale = objective / mark if objective > 0 else 1.0
    filled = min(width, round(value / scale)) if scale > 0 else 0
    cells = ["#" if i < filled else "." for i in range(width)]
    cells.insert(mark, "|")
    return "".join(cells)


def dr_definitions(
    planes: Sequence[DataPlane],
    policy: ResidencyPolicy,
    *,
    all_planes: Mapping[str, DataPlane] | None = None,
    audit_log: AuditLogResource | None = None,
) -> dg.Definitions:
    """Replication and drill jobs (with schedules) for every plane of ``planes`` that names a secondary,
    and the ``dr_drill_report`` asset.

    Example:
        .. code-block:: python

            from hybrid_dagster.assets.dr import dr_definitions

            defs = dg.Definitions.merge(defs, dr_definitions([eu_onprem], policy))
    """
    drilled = [p for p in planes if p.dr_secondary is not None]
    if not drilled:
        raise DrillError("none of the planes names a DR secondary (DataPlane.dr_secondary)")
    known = dict(all_planes or {}) | {p.name: p for p in planes}
    parts = [plane_dr_definitions(p, policy, planes=known) for p in drilled]
    report = drill_report_asset(drilled, report_plane=drilled[0])
    extra = dg.Definitions(
        assets=[report],
        resources={"audit_log": audit_log or AuditLogResource(), "residency_policy": policy},
    )
    return dg.Definitions.merge(*parts, extra)
