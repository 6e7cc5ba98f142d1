"""Turn one Dagster event record into one OpenLineage run event.

Mapping (a Dagster run is an OpenLineage job run; each step is a child run with a ``parent`` facet):

========================== ===========================================================================
Dagster event               OpenLineage run event
========================== ===========================================================================
run start / success         ``START`` / ``COMPLETE`` of job ``<job>``
run failure / cancel        ``FAIL`` (with ``errorMessage``) / ``ABORT``
step start / success        ``START`` / ``COMPLETE`` of job ``<job>.<step>``
step failure                ``FAIL`` of the step, with ``errorMessage``
asset materialization       ``RUNNING`` of the step: the asset as output, its upstream assets as inputs
asset observation           ``RUNNING`` of the step: the asset as input
asset check evaluation      ``RUNNING`` of the step: the asset as input, ``dataQualityAssertions`` facet
========================== ===========================================================================

Consecutive asset records of one step that a tick reads together (materializations, observations and
check evaluations) become ONE ``RUNNING`` event (:meth:`EventBuilder.build_many`): each dataset appears
once among the inputs and once among the outputs, with the facets of its latest record, and the
assertions of all its check evaluations in their order; a dataset that is both carries its dataset
facets on the output only (its input entry keeps the input facets, e.g. the assertions). OpenLineage
consumers merge a run's events per dataset, so they see the same lineage; a step that materializes many
assets costs one event per tick instead of one per record (and the transport one serialization).

Correctness rules:

- Facet objects are immutable once built and shared between events (parent, job type, statistics and
  assertion facets are memoized per builder); the containers (``facets`` mappings, datasets, the event)
  are new per event, so a client that adds facets to one event never touches another.
- Run ids are derived, never random: ``uuid5`` of the Dagster run id (and step key), so a re-sent event
  names the same OpenLineage run and a restart cannot fork one run into two.
- ``eventTime`` is the Dagster event's own timestamp, not the time of emission.
- An error message is copied only from errors known to carry no row values (hybrid-dagster's
  value-free errors and Dagster's own framework errors); any other error is named by its class only,
  with a pointer to the Dagster run log. No stack trace leaves the event log.

Example:
    .. code-block:: python

        builder = EventBuilder(namer=DatasetNamer(planes=planes, dagster_namespace="dagster"),
                               job_namespace="dagster", assets=asset_infos(context.repository_def))
        event = builder.build(record)  # None for records that carry no lineage
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import dagster as dg
from openlineage.client import event_v2
from openlineage.client.facet_v2 import (
    DatasetFacet,
    JobFacet,
    RunFacet,
    data_quality_assertions_dataset,
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    parent_run,
    processing_engine_run,
)

from hybrid_dagster import errors
from hybrid_dagster._dagster_compat import EventLogRow
from hybrid_dagster.sensors.lineage_datasets import (
    PRODUCER,
    AssetInfo,
    DatasetName,
    DatasetNamer,
    input_dataset,
    output_dataset,
    source_dataset,
    unique,
)

_Assertions = data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet

RUN_ID_NAMESPACE = uuid.UUID("8e0f5c0e-5d4b-4c1e-9a57-4f1b6c3c2d10")
"""Namespace of the derived OpenLineage run ids (``uuid5``); changing it would fork every run."""

_DT = dg.DagsterEventType
_RUN_KINDS = frozenset({_DT.RUN_START, _DT.RUN_SUCCESS, _DT.RUN_FAILURE, _DT.RUN_CANCELED})
_ASSET_RECORDS = frozenset({_DT.ASSET_MATERIALIZATION, _DT.ASSET_OBSERVATION, _DT.ASSET_CHECK_EVALUATION})
_RUN_STATES = {
    _DT.RUN_START: event_v2.RunState.START,
    _DT.RUN_SUCCESS: event_v2.RunState.COMPLETE,
    _DT.RUN_FAILURE: event_v2.RunState.FAIL,
    _DT.RUN_CANCELED: event_v2.RunState.ABORT,
    _DT.STEP_START: event_v2.RunState.START,
    _DT.STEP_SUCCESS: event_v2.RunState.COMPLETE,
    _DT.STEP_FAILURE: event_v2.RunState.FAIL,
}


def _value_free_error_names() -> frozenset[str]:
    names: set[str] = set()
    pending: list[type] = [errors.ValueFreeError]
    while pending:
        cls = pending.pop()
        names.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    return frozenset(names)


@lru_cache(maxsize=4096)
def run_uuid(dagster_run_id: str, step_key: str | None = None) -> str:
    """The OpenLineage run id of a Dagster run, or of one of its steps.

    Example:
        >>> run_uuid("9b1c...", "patients") == run_uuid("9b1c...", "patients")
        True
    """
    name = dagster_run_id if step_key is None else f"{dagster_run_id}/{step_key}"
    return str(uuid.uuid5(RUN_ID_NAMESPACE, name))


def _event_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat()


class EventBuilder:
    """Builds OpenLineage run events from Dagster event records.

    Example:
        .. code-block:: python

            builder = EventBuilder(namer=namer, job_namespace="dagster", assets={})
            events = [e for r in records if (e := builder.build(r)) is not None]
    """

    def __init__(
        self,
        *,
        namer: DatasetNamer,
        job_namespace: str,
        assets: Mapping[dg.AssetKey, AssetInfo],
        latest_metadata: Any = None,
    ) -> None:
        self.namer = namer
        self.job_namespace = job_namespace
        self.assets = assets
        self._latest_metadata = latest_metadata
        self._names: dict[dg.AssetKey, DatasetName] = {}
        self._inputs: dict[dg.AssetKey, event_v2.InputDataset] = {}
        self._value_free = _value_free_error_names()
        self._job_types: dict[bool, job_type_job.JobTypeJobFacet] = {}
        self._parents: dict[tuple[str, str], parent_run.ParentRunFacet] = {}
        self._statistics: dict[int, output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet] = {}
        self._assertions: dict[tuple[str, bool, str | None], _Assertions] = {}
        self._engine = processing_engine_run.ProcessingEngineRunFacet(
            version=dg.__version__,
            name="Dagster",
            openlineageAdapterVersion=_adapter_version(),
            producer=PRODUCER,
        )

    # -- jobs and runs -----------------------------------------------------------------------------------

    def _job(self, job_name: str, step_key: str | None, starts: bool) -> event_v2.Job:
        facets: dict[str, JobFacet] = {}
        if starts:
            task = step_key is not None
            if task not in self._job_types:
                self._job_types[task] = job_type_job.JobTypeJobFacet(
                    processingType="BATCH",
                    integration="DAGSTER",
                    jobType="TASK" if task else "JOB",
                    producer=PRODUCER,
                )
            facets["jobType"] = self._job_types[task]
        name = job_name if step_key is None else f"{job_name}.{step_key}"
        return event_v2.Job(namespace=self.job_namespace, name=name, facets=facets)

    def _run(
        self, run_id: str, job_name: str, step_key: str | None, extra: Mapping[str, RunFacet], starts: bool
    ) -> event_v2.Run:
        facets: dict[str, RunFacet] = {"processing_engine": self._engine, **extra} if starts else dict(extra)
        if step_key is not None:
            facets["parent"] = self._parent(run_id, job_name)
        return event_v2.Run(runId=run_uuid(run_id, step_key), facets=facets)

    def _parent(self, run_id: str, job_name: str) -> parent_run.ParentRunFacet:
        memo = (run_id, job_name)
        facet = self._parents.get(memo)
        if facet is None:
            if len(self._parents) > 4096:
                self._parents.clear()
            parent = run_uuid(run_id)
            facet = self._parents[memo] = parent_run.ParentRunFacet(
                run=parent_run.Run(runId=parent),
                job=parent_run.Job(namespace=self.job_namespace, name=job_name),
                root=parent_run.Root(
                    run=parent_run.RootRun(runId=parent),
                    job=parent_run.RootJob(namespace=self.job_namespace, name=job_name),
                ),
                producer=PRODUCER,
            )
        return facet

    def _assertion(self, check_name: str, passed: bool, severity: str | None) -> _Assertions:
        memo = (check_name, passed, severity)
        facet = self._assertions.get(memo)
        if facet is None:
            assertion = data_quality_assertions_dataset.Assertion(
                assertion=check_name, success=passed, severity=severity
            )
            facet = self._assertions[memo] = _Assertions(assertions=[assertion], producer=PRODUCER)
        return facet

    def _row_count(self, rows: int) -> output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet:
        facet = self._statistics.get(rows)
        if facet is None:
            if len(self._statistics) > 4096:
                self._statistics.clear()
            facet = self._statistics[rows] = (
                output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                    rowCount=rows, producer=PRODUCER
                )
            )
        return facet

    # -- records -----------------------------------------------------------------------------------------

    def build(self, record: EventLogRow) -> event_v2.RunEvent | None:
        """The OpenLineage event of one record (``None`` for records that carry no lineage)."""
        return self.build_many([record])

    def foldable(self, records: Sequence[EventLogRow], limit: int) -> int:
        """How many of the first ``limit`` records become one event: the asset records of one step that
        lead ``records`` (at least 1)."""
        first = records[0]
        if first.event_type not in _ASSET_RECORDS:
            return 1
        count = 1
        for record in records[1:limit]:
            if record.event_type not in _ASSET_RECORDS or (record.run_id, record.step_key) != (
                first.run_id,
                first.step_key,
            ):
                break
            count += 1
        return count

    def build_many(self, records: Sequence[EventLogRow]) -> event_v2.RunEvent | None:
        """One event for one record, or for the asset records of one step that :meth:`foldable` groups
        (``None`` if none carries lineage)."""
        inputs: dict[tuple[str, str], event_v2.InputDataset] = {}
        outputs: dict[tuple[str, str], event_v2.OutputDataset] = {}
        last: EventLogRow | None = None
        for record in records:
            if record.event_type is None:
                continue
            if record.event_type not in _ASSET_RECORDS:
                return self._lifecycle(record)
            datasets = self._datasets(record)
            if datasets is None:
                continue
            last = record
            for dataset in datasets[0]:
                key = (dataset.namespace, dataset.name)
                inputs[key] = _merged_input(inputs[key], dataset) if key in inputs else dataset
            for output in datasets[1]:
                outputs[(output.namespace, output.name)] = output
        if last is None:
            return None
        for key in inputs.keys() & outputs.keys():
            inputs[key] = _bare_input(inputs[key])
        job_name = last.job_name or "runless"
        return event_v2.RunEvent(
            eventType=event_v2.RunState.RUNNING,
            eventTime=_event_time(last.timestamp),
            run=self._run(last.run_id, job_name, last.step_key, {}, False),
            job=self._job(job_name, last.step_key, False),
            producer=PRODUCER,
            inputs=list(inputs.values()),
            outputs=list(outputs.values()),
        )

    def _lifecycle(self, record: EventLogRow) -> event_v2.RunEvent | None:
        """The event of a run or step starting or ending."""
        kind = record.event_type
        state = _RUN_STATES.get(kind) if kind is not None else None
        if state is None:
            return None
        job_name = record.job_name or "runless"
        step_key = None if kind in _RUN_KINDS else record.step_key
        run_facets: dict[str, RunFacet] = {}
        if state is event_v2.RunState.FAIL:
            run_facets["errorMessage"] = self._error(record, step_key)
        starts = state is event_v2.RunState.START
        return event_v2.RunEvent(
            eventType=state,
            eventTime=_event_time(record.timestamp),
            run=self._run(record.run_id, job_name, step_key, run_facets, starts),
            job=self._job(job_name, step_key, starts),
            producer=PRODUCER,
            inputs=[],
            outputs=[],
        )

    def _datasets(
        self, record: EventLogRow
    ) -> tuple[list[event_v2.InputDataset], list[event_v2.OutputDataset]] | None:
        """Inputs and outputs of an asset record (``None`` for one without an asset)."""
        kind, data = record.event_type, record.data
        if kind == _DT.ASSET_MATERIALIZATION and data is not None:
            materialization = data.materialization
            return self._materialized(materialization.asset_key, dict(materialization.metadata))
        if kind == _DT.ASSET_OBSERVATION and data is not None:
            observation = data.asset_observation
            return [self._input(observation.asset_key, dict(observation.metadata))], []
        if kind == _DT.ASSET_CHECK_EVALUATION and data is not None:
            assertions = self._assertion(
                data.check_name, data.passed, data.severity.value.lower() if data.severity else None
            )
            base = self._input(data.asset_key, {})
            checked = event_v2.InputDataset(
                namespace=base.namespace,
                name=base.name,
                facets=base.facets,
                inputFacets={"dataQualityAssertions": assertions},
            )
            return [checked], []
        return None

    # -- datasets ------------------------------------------------------------------------------------------

    def _info(self, key: dg.AssetKey) -> AssetInfo | None:
        return self.assets.get(key)

    def resolve(self, key: dg.AssetKey) -> DatasetName:
        """The dataset name of an asset that is not the subject of the event (an upstream asset)."""
        if key not in self._names:
            info = self._info(key)
            metadata: dict[str, Any] = dict(info.metadata) if info else {}
            if "dagster/table_name" not in metadata and self._latest_metadata is not None:
                metadata = {**self._latest_metadata(key), **metadata}
            self._names[key] = self.namer.name(key, info.tags if info else {}, metadata)
        return self._names[key]

    def _input(self, key: dg.AssetKey, metadata: Mapping[str, Any]) -> event_v2.InputDataset:
        if not metadata and key in self._inputs:
            return self._inputs[key]
        info = self._info(key)
        merged = {**(info.metadata if info else {}), **metadata}
        named = self.namer.name(key, info.tags if info else {}, merged) if metadata else self.resolve(key)
        # Upstream datasets carry their identity (symlinks, data source, residency); their schema, owners
        # and catalog come with their own materializations, and consumers merge facets per dataset.
        dataset = input_dataset(
            named, self.namer.dataset_facets(info, key, merged, named, full=bool(metadata))
        )
        if not metadata:
            self._inputs[key] = dataset
        return dataset

    def _materialized(
        self, key: dg.AssetKey, metadata: dict[str, Any]
    ) -> tuple[list[event_v2.InputDataset], list[event_v2.OutputDataset]]:
        info = self._info(key)
        merged = {**(info.metadata if info else {}), **metadata}
        named = self.namer.name(key, info.tags if info else {}, merged)
        self._names[key] = named
        facets: dict[str, DatasetFacet] = self.namer.dataset_facets(info, key, merged, named)
        column_lineage = self.namer.column_lineage(merged, self.resolve)
        if column_lineage is not None:
            facets["columnLineage"] = column_lineage
        output_facets = {}
        row_count = getattr(merged.get("dagster/row_count"), "value", merged.get("dagster/row_count"))
        if isinstance(row_count, int) and not isinstance(row_count, bool):
            output_facets["outputStatistics"] = self._row_count(row_count)
        inputs = [self._input(parent, {}) for parent in (info.parents if info else ())]
        source = getattr(merged.get("hybrid/source"), "value", merged.get("hybrid/source"))
        source_name = source_dataset(source) if isinstance(source, str) else None
        if source_name is not None:
            inputs.append(input_dataset(source_name, source_name.facets))
        return unique(inputs), [output_dataset(named, facets, **output_facets)]

    # -- errors --------------------------------------------------------------------------------------------

    def _error(self, record: EventLogRow, step_key: str | None) -> error_message_run.ErrorMessageRunFacet:
        # StepFailureData / JobFailureData (either may be absent); both keep the error as ``error``
        error = getattr(record.data, "error", None)
        where = f"Dagster run {record.run_id}" + (f", step {step_key}" if step_key else "")
        parts: list[str] = []
        while error is not None:
            name = error.cls_name or "Error"
            if name in self._value_free or name.startswith("Dagster"):
                parts.append(f"{name}: {error.message.strip()}")
            else:
                parts.append(f"{name} (message kept in the event log of {where})")
            error = error.cause
        if not parts:
            parts.append(record.message or f"failed; see the event log of {where}")
        return error_message_run.ErrorMessageRunFacet(
            message="\ncaused by ".join(parts)[:4000], programmingLanguage="python", producer=PRODUCER
        )


def _bare_input(dataset: event_v2.InputDataset) -> event_v2.InputDataset:
    """An input that is also an output of its event: its identity facets are the output's."""
    return event_v2.InputDataset(
        namespace=dataset.namespace, name=dataset.name, facets={}, inputFacets=dataset.inputFacets
    )


def _merged_input(earlier: event_v2.InputDataset, later: event_v2.InputDataset) -> event_v2.InputDataset:
    """One input dataset from two records: the later facets win, assertions accumulate in order."""
    input_facets = {**(earlier.inputFacets or {}), **(later.inputFacets or {})}
    before = (earlier.inputFacets or {}).get("dataQualityAssertions")
    after = (later.inputFacets or {}).get("dataQualityAssertions")
    if isinstance(before, _Assertions) and isinstance(after, _Assertions):
        input_facets["dataQualityAssertions"] = _Assertions(
            assertions=[*before.assertions, *after.assertions], producer=PRODUCER
        )
    return event_v2.InputDataset(
        namespace=later.namespace,
        name=later.name,
        facets={**(earlier.facets or {}), **(later.facets or {})},
        inputFacets=input_facets or None,
    )


def _adapter_version() -> str:
    try:
        return version("hybrid-dagster")
    except PackageNotFoundError:
        return "0+unknown"
