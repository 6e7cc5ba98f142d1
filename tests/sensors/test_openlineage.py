"""The OpenLineage sensor on real runs: schema-valid events, physical names, order, batches, restarts."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from hybrid_dagster import pinned
from hybrid_dagster.errors import SensorCursorError
from hybrid_dagster.resources import DataPlane
from hybrid_dagster.sensors import LineageCursor, openlineage_sensor, run_uuid
from tests.planes import make_plane
from tests.sensors.lineage_harness import (
    SECRET,
    definitions,
    drain,
    identity,
    lineage_content,
    local_instance,
    materialize_clinical,
    read_jsonl,
    tick,
)
from tests.sensors.ol_schema import validate_event


@pytest.fixture
def eu(warehouse: Path) -> DataPlane:
    return make_plane(warehouse)


@pytest.fixture(scope="module")
def clinical_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[dg.DagsterInstance, DataPlane]:
    """Two successful runs and one failing run on Dagster's default storage (run-sharded SQLite)."""
    root = tmp_path_factory.mktemp("lineage")
    (root / "warehouse").mkdir()
    plane = make_plane(root / "warehouse")
    instance = local_instance(root / "home")
    materialize_clinical(instance, plane, runs=2)
    return instance, plane


def _file_sensor(path: Path, plane: DataPlane, **kwargs: Any) -> dg.SensorDefinition:
    return openlineage_sensor(
        planes=[plane], transport={"type": "file", "log_file_path": str(path), "append": True}, **kwargs
    )


def _emit_all(
    tmp_path: Path, instance: dg.DagsterInstance, plane: DataPlane, **kwargs: Any
) -> list[dict[str, Any]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "lineage.jsonl"
    sensor = _file_sensor(out, plane, **kwargs)
    drain(sensor, instance, definitions(plane, sensor))
    return read_jsonl(out)


def test_default_storage_is_run_sharded_sqlite(clinical_log: tuple[dg.DagsterInstance, DataPlane]) -> None:
    instance, _ = clinical_log
    assert type(instance.event_log_storage).__name__ == "SqliteEventLogStorage"
    assert instance.event_log_storage.is_run_sharded


def test_every_event_of_a_real_run_validates_against_the_official_schemas(
    tmp_path: Path, clinical_log: tuple[dg.DagsterInstance, DataPlane]
) -> None:
    instance, plane = clinical_log
    events = _emit_all(tmp_path, instance, plane)
    assert len(events) > 20
    for event in events:
        validate_event(event)
    text = json.dumps(events)
    assert SECRET not in text, "a row value reached a lineage event"
    kinds = {(e["eventType"], e["job"]["name"].split(".")[-1]) for e in events}
    assert ("FAIL", "clinical__broken") in kinds
    assert ("RUNNING", "clinical__ward_counts") in kinds


def _outputs(events: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [
        o
        for e in events
        for o in e["outputs"]
        if any(
            i["name"] == key for i in o["facets"]["symlinks"]["identifiers"] if i["type"] == "DAGSTER_ASSET"
        )
    ]


def test_datasets_are_named_physically_with_facets(
    tmp_path: Path, clinical_log: tuple[dg.DagsterInstance, DataPlane]
) -> None:
    instance, plane = clinical_log
    events = _emit_all(tmp_path, instance, plane)
    catalog = plane.load_catalog()

    [admissions, *_] = _outputs(events, "clinical/admissions")
    location = catalog.load_table("clinical.admissions").location()
    assert (admissions["namespace"], f"file://{admissions['name']}") == ("file", location)
    links = admissions["facets"]["symlinks"]["identifiers"]
    assert links[0]["type"] == "TABLE" and links[0]["name"] == "clinical.admissions"
    assert links[0]["namespace"] == f"iceberg://{plane.warehouse_path}/catalog.db"
    assert admissions["facets"]["catalog"]["framework"] == "iceberg"
    assert [f["name"] for f in admissions["facets"]["schema"]["fields"]] == ["patient_id", "name", "ward"]
    assert admissions["facets"]["ownership"]["owners"] == [{"name": "team:clinical-data", "type": "TEAM"}]
    residency = admissions["facets"]["hybridDagster_residency"]
    assert residency == {
        "_producer": residency["_producer"],
        "_schemaURL": residency["_schemaURL"],
        "plane": "eu-onprem",
        "jurisdiction": "EU",
        "classification": "restricted",
    }
    assert residency["_schemaURL"].endswith("ResidencyDatasetFacet.json#/$defs/ResidencyDatasetFacet")
    assert admissions["outputFacets"]["outputStatistics"]["rowCount"] == 3

    # The materialization of admissions names its CDC source database as an input.
    [run_with_admissions, *_] = [
        e
        for e in events
        if e["outputs"] and e["outputs"][0] is not None and e["outputs"][0]["name"] == admissions["name"]
    ]
    assert {(i["namespace"], i["name"]) for i in run_with_admissions["inputs"]} == {
        ("postgres://db.eu.internal:5432", "hospital.public.admissions")
    }

    # ward_counts: inputs (its upstream, named physically) and outputs both present, column lineage.
    # Its step's observation, materialization and check evaluation were read in one tick: one event.
    [counts_event, *_] = [
        e for e in events if e["outputs"] and e["job"]["name"].endswith("clinical__ward_counts")
    ]
    [counts] = counts_event["outputs"]
    assert [(i["namespace"], i["name"]) for i in counts_event["inputs"]] == [
        ("s3://eu-registry", "exports/wards.csv"),
        ("file", admissions["name"]),
        (counts["namespace"], counts["name"]),
    ]
    assert counts["facets"]["hybridDagster_residency"]["classification"] == "internal"
    assert counts["facets"]["ownership"]["owners"][1] == {
        "name": "ward-lead@hospital.example",
        "type": "USER",
    }
    lineage = counts["facets"]["columnLineage"]["fields"]
    [ward_source] = lineage["ward"]["inputFields"]
    assert (ward_source["namespace"], ward_source["name"], ward_source["field"]) == (
        "file",
        admissions["name"],
        "ward",
    )

    # The observation names the s3:// location; check evaluations carry data-quality assertions.
    observed = [i for e in events for i in e["inputs"] if i["namespace"] == "s3://eu-registry"]
    assert observed and observed[0]["name"] == "exports/wards.csv"
    assertions = [
        a
        for e in events
        for i in e["inputs"]
        for a in (i.get("inputFacets") or {}).get("dataQualityAssertions", {}).get("assertions", [])
    ]
    assert {(a["assertion"], a["success"]) for a in assertions} == {("not_empty", True), ("has_rows", False)}


def test_failures_carry_an_error_message_without_row_values(
    tmp_path: Path, clinical_log: tuple[dg.DagsterInstance, DataPlane]
) -> None:
    instance, plane = clinical_log
    events = _emit_all(tmp_path, instance, plane)
    failed = [e for e in events if e["eventType"] == "FAIL"]
    assert {e["job"]["name"] for e in failed} == {
        "__ephemeral_asset_job__",
        "__ephemeral_asset_job__.clinical__broken",
    }
    for event in failed:
        message = event["run"]["facets"]["errorMessage"]["message"]
        assert "ValueError (message kept in the event log of Dagster run" in message
        assert SECRET not in message and "stackTrace" not in event["run"]["facets"]["errorMessage"]


def test_order_parents_children_and_derived_run_ids(
    tmp_path: Path, clinical_log: tuple[dg.DagsterInstance, DataPlane]
) -> None:
    instance, plane = clinical_log
    events = _emit_all(tmp_path, instance, plane)
    dagster_runs = instance.get_run_records(order_by="create_timestamp", ascending=True)
    assert len(dagster_runs) == 3
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_run[event["run"]["runId"]].append(event)
    position = {id(e): n for n, e in enumerate(events)}
    previous_end = -1
    for record in dagster_runs:
        run_id = record.dagster_run.run_id
        own = by_run[run_uuid(run_id)]
        assert own[0]["eventType"] == "START"
        assert own[-1]["eventType"] in {"COMPLETE", "FAIL"}
        start, end = position[id(own[0])], position[id(own[-1])]
        assert start > previous_end, "runs ran one after another, so their events must not interleave"
        previous_end = end
        steps = [
            e
            for e in events
            if e["run"]["facets"].get("parent", {}).get("run", {}).get("runId") == run_uuid(run_id)
        ]
        assert steps
        for step in steps:
            assert start < position[id(step)] < end
        for step_run in {e["run"]["runId"] for e in steps}:
            seq = by_run[step_run]
            assert seq[0]["eventType"] == "START" and seq[-1]["eventType"] in {"COMPLETE", "FAIL"}
            assert all(e["eventType"] == "RUNNING" for e in seq[1:-1])
        times = [e["eventTime"] for e in events[start : end + 1]]
        assert times == sorted(times)


def test_bounded_batch_and_restart_neither_lose_nor_duplicate(
    tmp_path: Path, clinical_log: tuple[dg.DagsterInstance, DataPlane]
) -> None:
    instance, plane = clinical_log
    reference = _emit_all(tmp_path / "ref", instance, plane) if (tmp_path / "ref").mkdir() is None else []

    out = tmp_path / "batched.jsonl"
    cursor = None
    counts: list[int] = []
    for _ in range(100):
        # A fresh sensor definition (and client) each tick: a restart of the daemon between ticks.
        sensor = _file_sensor(out, plane, batch_size=3)
        done = tick(sensor, instance, definitions(plane, sensor), cursor)
        assert done.raised is None
        if done.skip.startswith("No new Dagster events"):
            break
        counts.append(int(done.skip.split(" Dagster event records")[0].rsplit(" ", 1)[1]))
        cursor = done.cursor
    assert counts and max(counts) <= 3 and len(counts) >= 10
    batched = read_jsonl(out)
    assert lineage_content(batched) == lineage_content(reference)
    assert len({identity(e) for e in batched}) == len(batched)
    assert cursor is not None and LineageCursor.load(cursor, sensor_name="openlineage").runs == {}


def test_new_runs_after_a_caught_up_cursor_are_picked_up(tmp_path: Path, eu: DataPlane) -> None:
    instance = local_instance(tmp_path / "home")
    out = tmp_path / "ol.jsonl"
    sensor = _file_sensor(out, eu)
    defs = definitions(eu, sensor)
    cursor, _ = drain(sensor, instance, defs)
    assert not out.exists() or read_jsonl(out) == []
    materialize_clinical(instance, eu)
    cursor, _ = drain(sensor, instance, defs, cursor)
    first = read_jsonl(out)
    materialize_clinical(instance, eu)
    drain(sensor, instance, defs, cursor)
    both = read_jsonl(out)
    assert both[: len(first)] == first and len(both) == 2 * len(first)


def test_unreadable_cursor_fails_the_tick(tmp_path: Path, eu: DataPlane) -> None:
    instance = local_instance(tmp_path / "home")
    sensor = _file_sensor(tmp_path / "ol.jsonl", eu)
    done = tick(sensor, instance, definitions(eu, sensor), '{"v": 99}')
    assert isinstance(done.raised, SensorCursorError)
    assert "Reset cursor" in str(done.raised)


def test_asset_records_of_one_step_read_in_one_tick_become_one_event(tmp_path: Path, eu: DataPlane) -> None:
    key = dg.AssetKey(["clinical", "beds"])

    @dg.asset(
        key=key,
        check_specs=[dg.AssetCheckSpec("a", asset=key), dg.AssetCheckSpec("b", asset=key)],
        **pinned("eu-onprem", "internal"),
    )
    def beds() -> Iterator[Any]:
        yield dg.MaterializeResult(
            metadata={"dagster/row_count": 2},
            check_results=[
                dg.AssetCheckResult(check_name="a", passed=True),
                dg.AssetCheckResult(check_name="b", passed=False),
            ],
        )

    instance = local_instance(tmp_path / "home")
    dg.materialize([beds], instance=instance)

    def emit(name: str, **kwargs: Any) -> list[dict[str, Any]]:
        sensor = _file_sensor(tmp_path / name, eu, **kwargs)
        drain(sensor, instance, dg.Definitions(assets=[beds], sensors=[sensor]))
        return read_jsonl(tmp_path / name)

    events = emit("whole.jsonl")
    [running] = [e for e in events if e["eventType"] == "RUNNING"]
    [output] = running["outputs"]
    [checked] = running["inputs"]
    assert (checked["namespace"], checked["name"]) == (output["namespace"], output["name"])
    assertions = checked["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert [(a["assertion"], a["success"]) for a in assertions] == [("a", True), ("b", False)]
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == 2
    for event in events:
        validate_event(event)

    # Ticks of 2 records cut the step's records apart: more events, the same lineage.
    split = emit("split.jsonl", batch_size=2)
    assert len([e for e in split if e["eventType"] == "RUNNING"]) > 1
    assert lineage_content(split) == lineage_content(events)


def test_events_from_the_emitter_process_equal_those_sent_in_process(
    tmp_path: Path, clinical_log: tuple[dg.DagsterInstance, DataPlane]
) -> None:
    instance, plane = clinical_log
    in_process = _emit_all(tmp_path / "here", instance, plane, separate_process=False)
    own_process = _emit_all(tmp_path / "there", instance, plane)
    assert own_process == in_process and len(own_process) > 20
