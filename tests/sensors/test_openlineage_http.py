"""The http transport against a real HTTP receiver on loopback, including one that fails requests."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from hybrid_dagster.errors import LineageEmitError
from hybrid_dagster.resources import DataPlane
from hybrid_dagster.sensors import LineageCursor, openlineage_sensor
from tests.planes import make_plane
from tests.sensors.lineage_harness import (
    definitions,
    drain,
    http_receiver,
    http_transport,
    identity,
    local_instance,
    materialize_clinical,
    read_jsonl,
    tick,
)
from tests.sensors.ol_schema import validate_event


@pytest.fixture(scope="module")
def clinical_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[dg.DagsterInstance, DataPlane, list[Any]]:
    """One successful and one failing run, and the events a file transport gets for them (reference)."""
    root = tmp_path_factory.mktemp("lineage-http")
    (root / "warehouse").mkdir()
    plane = make_plane(root / "warehouse")
    instance = local_instance(root / "home")
    materialize_clinical(instance, plane)
    out = root / "reference.jsonl"
    sensor = openlineage_sensor(
        planes=[plane], transport={"type": "file", "log_file_path": str(out), "append": True}
    )
    drain(sensor, instance, definitions(plane, sensor))
    return instance, plane, [identity(e) for e in read_jsonl(out)]


def _sensor(plane: DataPlane, url: str, **kwargs: Any) -> dg.SensorDefinition:
    return openlineage_sensor(planes=[plane], transport=http_transport(url), backoff_seconds=0.01, **kwargs)


def test_http_transport_delivers_every_event_once_in_order(
    clinical_log: tuple[dg.DagsterInstance, DataPlane, list[Any]],
) -> None:
    instance, plane, reference = clinical_log
    with http_receiver() as receiver:
        sensor = _sensor(plane, receiver.url)
        drain(sensor, instance, definitions(plane, sensor))
    assert [identity(e) for e in receiver.accepted] == reference
    for event in receiver.accepted:
        validate_event(event)


BOTH_EMITTERS = pytest.mark.parametrize("separate_process", [True, False], ids=["own-process", "in-process"])


@BOTH_EMITTERS
def test_receiver_failing_the_first_requests_is_retried_within_the_tick(
    clinical_log: tuple[dg.DagsterInstance, DataPlane, list[Any]], separate_process: bool
) -> None:
    instance, plane, reference = clinical_log
    with http_receiver(fail=lambda n: n < 2) as receiver:
        sensor = _sensor(plane, receiver.url, attempts=3, separate_process=separate_process)
        first = tick(sensor, instance, definitions(plane, sensor), None)
    assert first.raised is None
    assert first.skip.startswith(f"Emitted {len(reference)} OpenLineage events")
    assert receiver.requests == len(reference) + 2
    assert [identity(e) for e in receiver.accepted] == reference


def test_failure_after_retries_shows_in_the_tick_and_keeps_the_cursor(
    clinical_log: tuple[dg.DagsterInstance, DataPlane, list[Any]],
) -> None:
    instance, plane, reference = clinical_log
    with http_receiver(fail=lambda n: n < 3) as receiver:
        sensor = _sensor(plane, receiver.url, attempts=2)
        defs = definitions(plane, sensor)
        failed = tick(sensor, instance, defs, None)
        assert isinstance(failed.raised, LineageEmitError)
        message = str(failed.raised)
        assert "the http transport refused an event after 2 attempts" in message
        assert "Check that the lineage backend is reachable" in message
        assert failed.cursor is None  # the stored cursor did not move
        assert receiver.accepted == []
        # The next tick retries the same first event (request 2 fails, request 3 is accepted).
        cursor, _ = drain(sensor, instance, defs, failed.cursor)
    assert [identity(e) for e in receiver.accepted] == reference
    assert cursor is not None and LineageCursor.load(cursor, sensor_name="openlineage").runs == {}


@BOTH_EMITTERS
def test_failure_mid_tick_stores_what_was_delivered_and_resumes_without_duplicates(
    clinical_log: tuple[dg.DagsterInstance, DataPlane, list[Any]], separate_process: bool
) -> None:
    instance, plane, reference = clinical_log
    with http_receiver(fail=lambda n: 5 <= n < 9) as receiver:
        sensor = _sensor(plane, receiver.url, attempts=2, separate_process=separate_process)
        defs = definitions(plane, sensor)
        partial = tick(sensor, instance, defs, None)
        assert partial.raised is None
        assert partial.skip.startswith("Delivered 5 events, then: OpenLineage sensor 'openlineage': the http")
        assert len(receiver.accepted) == 5
        # The next tick fails at the same event before delivering anything: it raises, cursor kept.
        again = tick(sensor, instance, defs, partial.cursor)
        assert isinstance(again.raised, LineageEmitError)
        drain(sensor, instance, defs, partial.cursor)
    delivered = [identity(e) for e in receiver.accepted]
    assert delivered == reference
    assert len(set(delivered)) == len(delivered)


def test_transport_from_openlineage_environment(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clinical_log: tuple[dg.DagsterInstance, DataPlane, list[Any]],
) -> None:
    instance, plane, reference = clinical_log
    monkeypatch.chdir(tmp_path)  # no openlineage.yml from the working directory
    with http_receiver() as receiver:
        monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "http")
        monkeypatch.setenv("OPENLINEAGE__TRANSPORT__URL", receiver.url)
        sensor = openlineage_sensor(planes=[plane])
        drain(sensor, instance, definitions(plane, sensor))
    assert [identity(e) for e in receiver.accepted] == reference


def test_transport_from_openlineage_yml(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clinical_log: tuple[dg.DagsterInstance, DataPlane, list[Any]],
) -> None:
    instance, plane, reference = clinical_log
    out = tmp_path / "from-yml.jsonl"
    config = tmp_path / "openlineage.yml"
    config.write_text(
        "transport:\n"
        "  type: composite\n"
        "  continue_on_failure: false\n"
        "  transports:\n"
        "    - type: file\n"
        f"      log_file_path: {out}\n"
        "      append: true\n"
        "    - type: console\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("OPENLINEAGE_CONFIG", str(config))
    sensor = openlineage_sensor(planes=[plane])
    drain(sensor, instance, definitions(plane, sensor))
    assert [identity(e) for e in read_jsonl(out)] == reference


def _kill_emitter_processes() -> bool:
    """SIGKILL this process's lineage emitter children (from the receiver's thread, mid-request)."""
    found = subprocess.run(
        ["pgrep", "-P", str(os.getpid()), "-f", "lineage_wire"], capture_output=True, text=True, check=False
    )
    for pid in found.stdout.split():
        os.kill(int(pid), signal.SIGKILL)
    return True


def test_emitter_process_killed_mid_tick_stores_nothing_and_the_next_tick_resends(
    clinical_log: tuple[dg.DagsterInstance, DataPlane, list[Any]],
) -> None:
    instance, plane, reference = clinical_log
    armed = [False]
    with http_receiver(fail=lambda n: armed[0] and n == 4 and _kill_emitter_processes()) as receiver:
        sensor = _sensor(plane, receiver.url)
        defs = definitions(plane, sensor)
        caught_up, _ = drain(sensor, instance, defs, None)
        idle = tick(sensor, instance, defs, caught_up)  # the emitter process is running and ready now
        assert idle.skip.startswith("No new Dagster events")
        receiver.accepted.clear()
        receiver.requests, armed[0] = 0, True
        killed = tick(sensor, instance, defs, None)
        assert isinstance(killed.raised, LineageEmitError)
        assert "emitter process exited" in str(killed.raised) and killed.cursor is None
        assert [identity(e) for e in receiver.accepted] == reference[:4]  # sent before it died
        drain(sensor, instance, defs, killed.cursor)  # a new process; the tick is sent again
    first_seen: dict[Any, None] = {}
    for event in receiver.accepted:
        first_seen.setdefault(identity(event), None)
    assert list(first_seen) == reference
    assert len(receiver.accepted) == len(reference) + 4  # the killed tick's four, once more
