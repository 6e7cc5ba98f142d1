"""The cost-teardown sensor: tears down GPU capacity that no live Dagster run uses.

Correctness rules: the decisions are :mod:`hybrid_dagster.gpu.teardown`'s (keyed by incarnation; idle =
no live run's lease for ``idle_minutes``; past the maximum lifetime even if busy, with a warning;
unreadable = busy; protected skipped; bounded batch; dry-run touches nothing). The sensor adds the Dagster
side: which runs are live or finished comes from the instance; its cursor is typed JSON (an unreadable
cursor starts afresh, it never blocks teardown); every teardown is recorded with its cost saved (the lease
store's history, and the audit log when one is configured); it never launches runs, so every tick ends in a
``SkipReason`` that says what was done and what to do.

Example:
    .. code-block:: python

        import dagster as dg
        from hybrid_dagster.sensors import gpu_teardown_sensor

        defs = dg.Definitions(sensors=[gpu_teardown_sensor([eu_onprem_a100, eu_cloud_h100], dry_run=True)])
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg

from hybrid_dagster.audit import AuditConfigError, AuditLog
from hybrid_dagster.gpu.teardown import Decision, RunState, TickReport, run_tick
from hybrid_dagster.resources.gpu_pool import GpuPool

CURSOR_VERSION = 1
LIVE_STATUSES = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}
ENDED_STATUSES = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@dataclass
class TeardownCursor:
    """The sensor's typed cursor: tick count, time of the last tick, the last teardowns (bounded).

    Example:
        >>> TeardownCursor.parse('{"version": 1, "ticks": 3, "last_tick_at": 0.0, "recent": []}').ticks
        3
    """

    version: int = CURSOR_VERSION
    ticks: int = 0
    last_tick_at: float = 0.0
    recent: list[dict[str, Any]] = field(default_factory=list)

    MAX_RECENT = 50

    @classmethod
    def parse(cls, raw: str | None) -> TeardownCursor:
        """The cursor in ``raw``; a missing, foreign or malformed cursor gives a fresh one."""
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("version") != CURSOR_VERSION:
                return cls()
            return cls(
                ticks=int(data.get("ticks", 0)),
                last_tick_at=float(data.get("last_tick_at", 0.0)),
                recent=[dict(r) for r in data.get("recent", [])][-cls.MAX_RECENT :],
            )
        except (ValueError, TypeError):
            return cls()

    def advance(self, report: TickReport, now: float) -> TeardownCursor:
        recent = self.recent + [
            {"incarnation": d.unit.incarnation, "pool": d.unit.pool, "name": d.unit.name, "at": now}
            for d in report.terminated
            if not report.dry_run
        ]
        return TeardownCursor(ticks=self.ticks + 1, last_tick_at=now, recent=recent[-self.MAX_RECENT :])

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def run_statuses(instance: dg.DagsterInstance, run_ids: set[str]) -> dict[str, dg.DagsterRunStatus]:
    """Status of each run id the instance knows (unknown ids are absent: their leases expire by heartbeat)."""
    if not run_ids:
        return {}
    runs = instance.get_runs(filters=dg.RunsFilter(run_ids=sorted(run_ids)))
    return {run.run_id: run.status for run in runs}


AUDIT_KIND = "gpu.teardown"


def audit_recorder(
    log: AuditLog, *, actor: str, planes: Mapping[str, str]
) -> Callable[[Decision, float], None]:
    """A ``record`` hook appending each teardown to the tamper-evident audit log (kind ``gpu.teardown``).

    ``planes`` maps pool name -> plane name. Details are identifiers, counts and money, never row values.

    Example:
        >>> record = audit_recorder(AuditLog(), actor="sensor:gpu", planes={"us-cloud-a10g": "us-cloud"})
    """

    def record(decision: Decision, at: float) -> None:
        unit = decision.unit
        log.append(
            AUDIT_KIND,
            actor=actor,
            plane=planes.get(unit.pool),
            details={
                "incarnation": unit.incarnation,
                "name": unit.name,
                "kind": unit.kind,
                "pool": unit.pool,
                "backend": unit.backend,
                "gpus": unit.gpus,
                "reason": decision.why,
                "while_busy": decision.warning,
                "cost_saved_usd": decision.cost_saved_usd,
                "at": at,
            },
        )

    return record


def gpu_teardown_sensor(
    pools: Sequence[GpuPool],
    *,
    name: str = "gpu_cost_teardown",
    dry_run: bool = False,
    max_teardowns_per_tick: int = 20,
    minimum_interval_seconds: int = 300,
    record: Callable[[Decision, float], None] | None = None,
    audit: bool = True,
    audit_url: str | None = None,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """A sensor that tears down idle GPU capacity of ``pools`` (all pools must share one lease store).

    Each teardown is appended to the audit log (``audit_url``, default ``$DAGSTER_HOME/hybrid_audit.db`` or
    ``HYBRID_DAGSTER_AUDIT_URL``) unless ``audit=False``; ``record`` receives each teardown too.

    Example:
        >>> sensor = gpu_teardown_sensor([us_cloud_a10g], dry_run=True, max_teardowns_per_tick=5)
    """
    if not pools:
        raise ValueError("gpu_teardown_sensor needs at least one GpuPool")
    stores = {pool.lease_store for pool in pools}
    if len(stores) > 1:
        raise ValueError(
            f"GPU pools {[p.name for p in pools]} use different lease stores; give each store its own sensor"
        )

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            f"Tears down GPU capacity of {', '.join(p.name for p in pools)} that no live run holds a lease "
            f"on for the pool's idle_minutes{' (dry-run)' if dry_run else ''}."
        ),
    )
    def _teardown(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cursor = TeardownCursor.parse(context.cursor)

        def states(run_ids: set[str]) -> dict[str, RunState]:
            found = run_statuses(context.instance, run_ids)
            return {
                run_id: "live" if status in LIVE_STATUSES else "ended"
                for run_id, status in found.items()
                if status in LIVE_STATUSES | ENDED_STATUSES
            }

        hooks = [record] if record is not None else []
        if audit and not dry_run:
            try:
                log = AuditLog(audit_url)
            except AuditConfigError as missing:
                context.log.warning(f"GPU teardowns are not audited: {missing}")
            else:
                planes = {pool.name: pool.plane.name for pool in pools}
                hooks.append(audit_recorder(log, actor=f"sensor:{name}", planes=planes))

        def record_all(decision: Decision, at: float) -> None:
            for hook in hooks:
                hook(decision, at)

        report = run_tick(
            [pool.facts() for pool in pools],
            {pool.name: pool.capacity_backend() for pool in pools},
            pools[0].store(),
            run_states=states,
            dry_run=dry_run,
            max_teardowns=max_teardowns_per_tick,
            record=record_all,
        )
        for decision in report.terminated:
            unit = decision.unit
            line = f"GPU {unit.kind} {unit.name} ({unit.incarnation}) of pool {unit.pool}: {decision.why}"
            if decision.warning:
                context.log.warning(f"torn down while busy - {line}")
            else:
                context.log.info(line)
        return dg.SensorResult(
            skip_reason=dg.SkipReason(report.summary()),
            cursor=cursor.advance(report, time.time()).dumps(),
        )

    return _teardown
