"""The shape every hybrid-dagster sensor shares: a typed cursor, a bounded batch, an actionable outcome.

Correctness rules:

- The cursor is JSON with a version (``v``). It is read once at the start of a tick and written only in
  the tick's result, so it advances only after the tick's work was accepted (delivered, requested,
  recorded). A cursor that cannot be read, or of another version, fails the tick with a
  :class:`~hybrid_dagster.errors.SensorCursorError` that names the sensor and says how to reset it; it
  is never silently replaced by a fresh one (that would re-send or skip work).
- A tick handles at most ``batch_size`` units of work; what is left waits for the next tick.
- Errors surface in the tick: the sensor raises with a clear message and the stored cursor stays where
  it was. When part of a tick's work was already accepted before an error, the tick returns the cursor
  after that part with a skip reason naming the error (so the accepted part is neither lost nor
  repeated), and the next tick starts at the failed unit.
- A skip reason says what happened and what a person can do about it; empty reasons are refused.

Example:
    .. code-block:: python

        import dagster as dg
        from hybrid_dagster.sensors import SensorCursor, TickOutcome, cursored_sensor

        class SeenCursor(SensorCursor):
            last_id: int = -1

        def evaluate(context: dg.SensorEvaluationContext, cursor: SeenCursor, batch_size: int) -> TickOutcome:
            new = [i for i in range(cursor.last_id + 1, 10)][:batch_size]
            if not new:
                return TickOutcome.skip(cursor, "No new ids since id 9; nothing to do until one arrives.")
            return TickOutcome(cursor=SeenCursor(last_id=new[-1]), run_requests=[dg.RunRequest(str(new[-1]))])

        seen = cursored_sensor(name="seen", cursor_type=SeenCursor, evaluate=evaluate, batch_size=100)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import dagster as dg
from pydantic import BaseModel, ConfigDict, ValidationError

from hybrid_dagster.errors import SensorCursorError

AssetEvent = dg.AssetMaterialization | dg.AssetObservation | dg.AssetCheckEvaluation


class SensorCursor(BaseModel):
    """A sensor's cursor: a pydantic model stored as versioned, canonical JSON.

    Subclasses add typed fields with defaults (the defaults are the cursor of a sensor's first tick) and
    raise ``VERSION`` when a field's meaning changes.

    Example:
        >>> class Position(SensorCursor):
        ...     after_storage_id: int = -1
        >>> Position.load(Position(after_storage_id=7).dump(), sensor_name="s").after_storage_id
        7
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    VERSION: ClassVar[int] = 1

    @classmethod
    def load(cls: type[C], raw: str | None, *, sensor_name: str) -> C:
        """The cursor stored as ``raw`` (``None``: the first tick's cursor)."""
        if raw is None or raw == "":
            return cls()
        reset = (
            f"Reset it in the Dagster UI (Automation > {sensor_name} > Reset cursor) or with "
            f"`dagster sensor cursor {sensor_name} --delete`; the sensor then starts from its first-tick "
            "position."
        )
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            raise SensorCursorError(f"sensor {sensor_name!r}: its cursor is not JSON. {reset}") from None
        if not isinstance(data, dict) or data.get("v") != cls.VERSION:
            found = data.get("v") if isinstance(data, dict) else type(data).__name__
            raise SensorCursorError(
                f"sensor {sensor_name!r}: cursor version {found!r}, this code reads version {cls.VERSION}. "
                f"{reset}"
            )
        body = {k: v for k, v in data.items() if k != "v"}
        try:
            return cls.model_validate(body)
        except ValidationError as err:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in err.errors())
            raise SensorCursorError(
                f"sensor {sensor_name!r}: cursor fields {fields} do not match {cls.__name__}. {reset}"
            ) from None

    def dump(self) -> str:
        """Canonical JSON (sorted keys, no spaces) with the version under ``v``."""
        return json.dumps(
            {"v": self.VERSION, **self.model_dump(mode="json")}, sort_keys=True, separators=(",", ":")
        )


C = TypeVar("C", bound=SensorCursor)


@dataclass(frozen=True)
class TickOutcome(Generic[C]):
    """What one tick did: the cursor after the accepted work, and what to hand to Dagster.

    Example:
        >>> TickOutcome.skip(Position(), "No new runs since storage id 12; nothing to emit.").skip_reason
        'No new runs since storage id 12; nothing to emit.'
    """

    cursor: C
    run_requests: Sequence[dg.RunRequest] = ()
    asset_events: Sequence[AssetEvent] = ()
    skip_reason: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.skip_reason is not None and not self.skip_reason.strip():
            raise ValueError("a skip reason must say what happened and what a person can do about it")

    @classmethod
    def skip(cls, cursor: C, reason: str, **stats: Any) -> TickOutcome[C]:
        """Nothing to hand to Dagster this tick; ``reason`` says why and what to do."""
        return cls(cursor=cursor, skip_reason=reason, stats=stats)

    def to_sensor_result(self, previous: C) -> dg.SensorResult:
        """The Dagster result; the cursor is written only when it moved."""
        cursor = self.cursor.dump() if self.cursor != previous else None
        if self.run_requests or self.asset_events:
            return dg.SensorResult(
                run_requests=list(self.run_requests), asset_events=list(self.asset_events), cursor=cursor
            )
        return dg.SensorResult(skip_reason=dg.SkipReason(self.skip_reason or "Nothing to do."), cursor=cursor)


Evaluate = Callable[[dg.SensorEvaluationContext, C, int], TickOutcome[C]]


def cursored_sensor(
    *,
    name: str,
    cursor_type: type[C],
    evaluate: Evaluate[C],
    batch_size: int,
    minimum_interval_seconds: int = 30,
    description: str | None = None,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
    required_resource_keys: set[str] | None = None,
    target: Any = None,
) -> dg.SensorDefinition:
    """A Dagster sensor that reads its typed cursor, runs ``evaluate`` on one bounded batch and returns
    the outcome; an exception from ``evaluate`` fails the tick and leaves the stored cursor unchanged.
    ``target`` (a job or asset selection) is what its run requests launch.

    Example:
        .. code-block:: python

            sensor = cursored_sensor(name="seen", cursor_type=SeenCursor, evaluate=evaluate, batch_size=100)
            defs = dg.Definitions(sensors=[sensor])
    """
    if batch_size < 1:
        raise ValueError(f"sensor {name!r}: batch_size must be at least 1, got {batch_size}")

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        description=description,
        default_status=default_status,
        required_resource_keys=required_resource_keys,
        target=target,
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        previous = cursor_type.load(context.cursor, sensor_name=name)
        outcome = evaluate(context, previous, batch_size)
        return outcome.to_sensor_result(previous)

    return _sensor
