"""Sensors: the shared shape (typed cursor, bounded batch, actionable skip reasons) and the sensors.

- :mod:`~hybrid_dagster.sensors.base`: :class:`SensorCursor`, :class:`TickOutcome`, :func:`cursored_sensor`.
- :mod:`~hybrid_dagster.sensors.openlineage`: :func:`openlineage_sensor`, Dagster's event log as
  OpenLineage run events.
- :mod:`~hybrid_dagster.sensors.teardown`: :func:`gpu_teardown_sensor`, idle GPU capacity torn down.

Example:
    .. code-block:: python

        from hybrid_dagster.sensors import openlineage_sensor

        lineage = openlineage_sensor(
            planes=[eu_onprem], transport={"type": "file", "log_file_path": "ol.jsonl", "append": True}
        )
"""

from hybrid_dagster.sensors.base import (
    SensorCursor as SensorCursor,
    TickOutcome as TickOutcome,
    cursored_sensor as cursored_sensor,
)
from hybrid_dagster.sensors.lineage_datasets import (
    RESIDENCY_FACET as RESIDENCY_FACET,
    residency_schema as residency_schema,
)
from hybrid_dagster.sensors.lineage_delivery import (
    Delivery as Delivery,
    ProcessEmitter as ProcessEmitter,
    RetryingEmitter as RetryingEmitter,
)
from hybrid_dagster.sensors.lineage_events import run_uuid as run_uuid
from hybrid_dagster.sensors.lineage_wire import ResidencyDatasetFacet as ResidencyDatasetFacet
from hybrid_dagster.sensors.openlineage import (
    LineageCursor as LineageCursor,
    openlineage_sensor as openlineage_sensor,
)
from hybrid_dagster.sensors.teardown import (
    TeardownCursor as TeardownCursor,
    gpu_teardown_sensor as gpu_teardown_sensor,
)
