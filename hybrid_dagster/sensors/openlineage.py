"""The OpenLineage sensor: Dagster's event log, oldest first, as OpenLineage run events.

Each tick reads a bounded batch of records (see :mod:`hybrid_dagster.sensors.event_log`), turns each
into an OpenLineage run event (:mod:`hybrid_dagster.sensors.lineage_events`) and hands it to an
openlineage-python client, whose transport (http, file, kafka, console, composite, ...) is configured the
way openlineage-python is: ``openlineage.yml`` (``OPENLINEAGE_CONFIG``, the working directory or
``~/.openlineage``) or ``OPENLINEAGE__TRANSPORT__*`` / ``OPENLINEAGE_URL`` environment variables, or a
``transport`` mapping given to :func:`openlineage_sensor`.

Correctness rules:

- Order: run-status records in storage-id order across runs; each run's own records in the run's
  order, between its start and its end. A run's end is emitted only after every record of the run.
- The cursor holds the last run-status record fully handled and, for each run in progress, its position
  in the run's stream (Dagster's page cursor plus the records of that page already delivered). Each
  record's position advances only after the transport accepted its event.
- A transport failure is retried with exponential backoff; after the last attempt the tick raises
  :class:`~hybrid_dagster.errors.LineageEmitError` (stored cursor unchanged). If earlier records of the
  same tick were already delivered, the tick instead stores the cursor after them and reports the
  failure as its skip reason; the next tick starts at the failed record. Nothing is lost, nothing sent
  twice by the sensor, and run ids are derived (``uuid5``) so even a re-sent event joins its run.
- A tick handles at most ``batch_size`` records.

Example:
    .. code-block:: python

        import dagster as dg
        from hybrid_dagster.sensors import openlineage_sensor

        lineage = openlineage_sensor(planes=[eu_onprem, us_onprem], batch_size=500)
        defs = dg.Definitions(assets=[...], sensors=[lineage])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import dagster as dg
from openlineage.client import OpenLineageClient
from pydantic import BaseModel, ConfigDict

from hybrid_dagster._dagster_compat import EventLogRow, RunShardReader
from hybrid_dagster.errors import LineageEmitError
from hybrid_dagster.resources.data_plane import DataPlane
from hybrid_dagster.sensors.base import SensorCursor, TickOutcome, cursored_sensor
from hybrid_dagster.sensors.event_log import RUN_END_TYPES, iter_run_status_records, run_records
from hybrid_dagster.sensors.lineage_datasets import DatasetNamer, asset_infos
from hybrid_dagster.sensors.lineage_delivery import EmitStopped, ProcessEmitter, RetryingEmitter
from hybrid_dagster.sensors.lineage_events import EventBuilder
from hybrid_dagster.sensors.lineage_wire import client_for


class RunPosition(BaseModel):
    """Where the sensor stands in one run's stream: Dagster's page cursor and records done after it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cursor: str | None = None
    done: int = 0


class LineageCursor(SensorCursor):
    """The OpenLineage sensor's cursor.

    Example:
        >>> LineageCursor().after_storage_id
        -1
    """

    VERSION = 1

    after_storage_id: int = -1
    """The last run-status record whose event was delivered (``-1``: the start of the event log)."""
    runs: dict[str, RunPosition] = {}
    """Runs started and not yet ended (by run id), with their positions in their own streams."""


Emitter = RetryingEmitter | ProcessEmitter


@dataclass(frozen=True)
class _Mark:
    """The tick's position once its first ``events`` events are accepted (and ``records`` handled)."""

    events: int
    records: int
    after_storage_id: int
    runs: dict[str, RunPosition]

    def cursor(self) -> LineageCursor:
        return LineageCursor(after_storage_id=self.after_storage_id, runs=self.runs)


@dataclass
class _Tick:
    """Mutable state of one tick. Each mark is the cursor as of a number of events handed to the emitter;
    the tick stores the last mark the transport accepted all events of."""

    instance: dg.DagsterInstance
    builder: EventBuilder
    emitter: Emitter
    budget: int
    after_storage_id: int
    runs: dict[str, RunPosition]
    records: int = 0
    events: int = 0
    marks: list[_Mark] = field(default_factory=list)
    shards: RunShardReader | None = None

    def mark(self) -> None:
        self.marks.append(_Mark(self.events, self.records, self.after_storage_id, dict(self.runs)))

    def accepted(self, delivered: int, start: LineageCursor) -> _Mark:
        """The last mark whose events the transport all accepted (the tick's start if none)."""
        best = _Mark(0, 0, start.after_storage_id, dict(start.runs))
        for mark in self.marks:
            if mark.events > delivered:
                break
            best = mark
        return best

    def deliver(self, records: list[EventLogRow]) -> None:
        event = self.builder.build_many(records)
        self.budget -= len(records)
        if event is not None:
            self.emitter.emit(event)
            self.events += 1
        self.records += len(records)

    def drain(self, run_id: str) -> bool:
        """Deliver the run's records in order until none is left (True) or the budget is spent."""
        while self.budget > 0:
            position = self.runs.get(run_id, RunPosition())
            page = run_records(
                self.instance,
                run_id,
                cursor=position.cursor,
                limit=position.done + self.budget,
                shards=self.shards,
            )
            fresh = page.records[position.done :]
            while fresh:
                if self.budget <= 0:
                    return False
                count = self.builder.foldable(fresh, self.budget)
                self.deliver(fresh[:count])
                fresh = fresh[count:]
                position = RunPosition(cursor=position.cursor, done=position.done + count)
                self.runs[run_id] = position
                self.mark()
            self.runs[run_id] = RunPosition(cursor=page.cursor, done=0)
            self.mark()
            if not page.has_more or not page.records:
                return True
        return False

    def run(self) -> None:
        for record in iter_run_status_records(
            self.instance,
            after_storage_id=self.after_storage_id,
            page_size=min(self.budget, 64),
            shards=self.shards,
        ):
            if self.budget <= 0:
                return
            if record.event_type in RUN_END_TYPES:
                if not self.drain(record.run_id) or self.budget <= 0:
                    return
                self.deliver([record])
                self.runs.pop(record.run_id, None)
            else:
                self.deliver([record])
                self.runs.setdefault(record.run_id, RunPosition())
            self.after_storage_id = record.storage_id
            self.mark()
        for run_id in list(self.runs):
            if self.budget <= 0:
                return
            self.drain(run_id)


def openlineage_sensor(
    *,
    name: str = "openlineage",
    planes: Sequence[DataPlane] = (),
    transport: Mapping[str, Any] | None = None,
    client: Callable[[], OpenLineageClient] | None = None,
    job_namespace: str = "dagster",
    dagster_namespace: str = "dagster",
    batch_size: int = 1000,
    attempts: int = 4,
    backoff_seconds: float = 0.5,
    separate_process: bool = True,
    minimum_interval_seconds: int = 30,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """A sensor that emits the event log as OpenLineage run events, oldest first, losing nothing.

    Args:
        planes: the data planes, so Iceberg tables are named by their warehouse location and catalog.
        transport: an openlineage-python transport config (``{"type": "http", "url": ...}``); by
            default the client reads ``openlineage.yml`` or the ``OPENLINEAGE__*`` environment.
        client: a factory for the client instead (wins over ``transport``).
        job_namespace: OpenLineage namespace of the jobs (one per Dagster deployment).
        dagster_namespace: namespace of the ``DAGSTER_ASSET`` symlinks and of logically named assets.
        batch_size: most event records one tick handles.
        attempts, backoff_seconds: delivery attempts per event and the first wait between them
            (doubling, at most 10 s).
        separate_process: serialize and send the events in a process of the sensor's own, kept across
            ticks, while the tick reads on (:class:`~hybrid_dagster.sensors.lineage_delivery.
            ProcessEmitter`); False, or a ``client`` factory: in the sensor's process.

    Example:
        .. code-block:: python

            lineage = openlineage_sensor(
                planes=[eu_onprem],
                transport={"type": "http", "url": "http://marquez:5000"},
            )
            defs = dg.Definitions(assets=[patients], sensors=[lineage])
    """
    namer = DatasetNamer(planes=planes, dagster_namespace=dagster_namespace)
    own_process: list[ProcessEmitter] = []  # the sensor's emitter process, kept across ticks
    make_client = client or lru_cache(maxsize=1)(
        lambda: client_for(dict(transport) if transport is not None else None)
    )

    def emitter_for_tick() -> Emitter:
        if client is not None or not separate_process:
            return RetryingEmitter(make_client(), attempts=attempts, backoff_seconds=backoff_seconds)
        if not own_process:
            own_process.append(ProcessEmitter(transport, attempts=attempts, backoff_seconds=backoff_seconds))
        own_process[0].start()
        return own_process[0]

    def evaluate(
        context: dg.SensorEvaluationContext, cursor: LineageCursor, budget: int
    ) -> TickOutcome[LineageCursor]:
        instance = context.instance

        def latest_metadata(key: dg.AssetKey) -> dict[str, Any]:
            event = instance.get_latest_materialization_event(key)
            materialization = event.asset_materialization if event is not None else None
            return dict(materialization.metadata) if materialization is not None else {}

        builder = EventBuilder(
            namer=namer,
            job_namespace=job_namespace,
            assets=asset_infos(context.repository_def),
            latest_metadata=latest_metadata,
        )
        emitter = emitter_for_tick()
        tick = _Tick(instance, builder, emitter, budget, cursor.after_storage_id, dict(cursor.runs))
        tick.shards = RunShardReader.for_instance(instance)
        try:
            tick.run()
        except EmitStopped:
            pass  # the in-process emitter refused an event: finish() reports it
        finally:
            if tick.shards is not None:
                tick.shards.close()
        delivery = emitter.finish()
        accepted = tick.accepted(delivery.delivered, cursor)
        new = accepted.cursor()
        stats = {"records": accepted.records, "events": delivery.delivered, "retries": delivery.retries}
        if delivery.failure is not None:
            problem = (
                f"OpenLineage sensor {name!r}: the {delivery.kind} transport refused an event after "
                f"{delivery.attempts} attempts ({delivery.failure}). Check that the lineage backend is "
                "reachable and accepts events (openlineage.yml or OPENLINEAGE__TRANSPORT__*); the sensor "
                f"resumes at this event (after run-status storage id {new.after_storage_id})."
            )
            if delivery.delivered == 0:
                raise LineageEmitError(problem)
            return TickOutcome.skip(new, f"Delivered {delivery.delivered} events, then: {problem}", **stats)
        if tick.records == 0:
            waiting = f"; {len(new.runs)} run(s) in progress" if new.runs else ""
            return TickOutcome.skip(
                new,
                f"No new Dagster events after run-status storage id {new.after_storage_id}{waiting}; "
                "nothing to emit until a run starts, records an asset event or ends.",
                **stats,
            )
        more = " (batch full; the next tick continues)" if tick.budget <= 0 else ""
        return TickOutcome.skip(
            new,
            f"Emitted {delivery.delivered} OpenLineage events for {accepted.records} Dagster event records "
            f"through the {delivery.kind} transport{more}.",
            **stats,
        )

    return cursored_sensor(
        name=name,
        cursor_type=LineageCursor,
        evaluate=evaluate,
        batch_size=batch_size,
        minimum_interval_seconds=minimum_interval_seconds,
        description=(
            "Emits Dagster's event log as OpenLineage run events (oldest first; the cursor advances only "
            "after the transport accepted them)."
        ),
        default_status=default_status,
    )
