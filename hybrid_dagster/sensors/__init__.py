"""Sensors: GPU cost teardown (and, as they land, OpenLineage emission and the transfer monitor)."""

from hybrid_dagster.sensors.teardown import (
    TeardownCursor as TeardownCursor,
    gpu_teardown_sensor as gpu_teardown_sensor,
)
