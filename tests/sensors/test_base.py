"""The shared sensor shape: versioned cursors, bounded batches, actionable outcomes, errors in the tick."""

from __future__ import annotations

import json
import tomllib

import dagster as dg
import pytest

from hybrid_dagster.errors import SensorCursorError, ValueFreeError
from hybrid_dagster.sensors import SensorCursor, TickOutcome, cursored_sensor, residency_schema
from tests.conftest import REPO_ROOT


class Seen(SensorCursor):
    last_id: int = -1


class SeenV2(SensorCursor):
    VERSION = 2
    last_id: int = -1


ITEMS = list(range(10))


def _evaluate(context: dg.SensorEvaluationContext, cursor: Seen, batch_size: int) -> TickOutcome[Seen]:
    new = [i for i in ITEMS if i > cursor.last_id][:batch_size]
    if not new:
        return TickOutcome.skip(cursor, f"No item after {cursor.last_id}; add one to see a run request.")
    return TickOutcome(
        cursor=Seen(last_id=new[-1]), run_requests=[dg.RunRequest(run_key=str(i)) for i in new]
    )


def test_cursor_round_trip_is_canonical_and_versioned() -> None:
    raw = Seen(last_id=7).dump()
    assert json.loads(raw) == {"v": 1, "last_id": 7}
    assert raw == '{"last_id":7,"v":1}'
    assert Seen.load(raw, sensor_name="s") == Seen(last_id=7)
    assert Seen.load(None, sensor_name="s") == Seen()


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("not json", "is not JSON"),
        ('{"v": 2, "last_id": 3}', "cursor version 2, this code reads version 1"),
        ("[1, 2]", "cursor version 'list'"),
        ('{"v": 1, "last_id": "x"}', "cursor fields last_id do not match Seen"),
        ('{"v": 1, "other": 1}', "cursor fields other do not match Seen"),
    ],
)
def test_unreadable_cursor_fails_naming_sensor_and_reset(raw: str, says: str) -> None:
    with pytest.raises(SensorCursorError, match=says) as err:
        Seen.load(raw, sensor_name="seen")
    assert isinstance(err.value, ValueFreeError)
    assert "sensor 'seen'" in str(err.value)
    assert "Reset cursor" in str(err.value)


def test_newer_cursor_version_is_not_silently_replaced() -> None:
    with pytest.raises(SensorCursorError, match="version 1, this code reads version 2"):
        SeenV2.load(Seen(last_id=3).dump(), sensor_name="seen")


def test_bounded_batch_per_tick_and_cursor_written_only_when_it_moves() -> None:
    sensor = cursored_sensor(name="seen", cursor_type=Seen, evaluate=_evaluate, batch_size=4)
    cursor = None
    keys: list[list[str]] = []
    for _ in range(3):
        result = sensor(dg.build_sensor_context(cursor=cursor))
        assert isinstance(result, dg.SensorResult)
        keys.append([r.run_key or "" for r in result.run_requests or []])
        cursor = result.cursor
    assert keys == [["0", "1", "2", "3"], ["4", "5", "6", "7"], ["8", "9"]]
    idle = sensor(dg.build_sensor_context(cursor=cursor))
    assert isinstance(idle, dg.SensorResult)
    assert idle.cursor is None  # unchanged: nothing written
    assert idle.skip_reason is not None
    assert idle.skip_reason.skip_message == "No item after 9; add one to see a run request."


def test_error_in_evaluate_fails_the_tick_and_keeps_the_cursor() -> None:
    def broken(context: dg.SensorEvaluationContext, cursor: Seen, batch_size: int) -> TickOutcome[Seen]:
        raise SensorCursorError("backend down: start it and the next tick resumes at id 3")

    sensor = cursored_sensor(name="broken", cursor_type=Seen, evaluate=broken, batch_size=4)
    with pytest.raises(SensorCursorError, match="backend down"):
        sensor(dg.build_sensor_context(cursor=Seen(last_id=3).dump()))


def test_empty_skip_reason_and_zero_batch_are_refused() -> None:
    with pytest.raises(ValueError, match="what a person can do"):
        TickOutcome.skip(Seen(), "  ")
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        cursored_sensor(name="x", cursor_type=Seen, evaluate=_evaluate, batch_size=0)


def test_sensor_runs_under_the_dagster_daemon_code_path() -> None:
    @dg.op
    def work() -> None: ...

    @dg.job
    def handle() -> None:
        work()

    sensor = cursored_sensor(name="seen", cursor_type=Seen, evaluate=_evaluate, batch_size=100, target=handle)
    data = sensor.evaluate_tick(dg.build_sensor_context(cursor=None))
    assert [r.run_key for r in data.run_requests or []] == [str(i) for i in ITEMS]
    assert data.cursor == Seen(last_id=9).dump()


def test_residency_facet_schema_ships_with_the_package() -> None:
    schema = residency_schema()
    assert schema["$id"].endswith("/hybrid_dagster/sensors/schemas/ResidencyDatasetFacet.json")
    assert set(schema["$defs"]["ResidencyDatasetFacet"]["allOf"][1]["required"]) == {
        "plane",
        "jurisdiction",
        "classification",
    }
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "sensors/schemas/*.json" in pyproject["tool"]["setuptools"]["package-data"]["hybrid_dagster"]
