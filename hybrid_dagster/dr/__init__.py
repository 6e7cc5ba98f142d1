"""Disaster recovery: replicate a plane to its DR secondary and drill the failover (RTO, RPO measured).

See ``docs/dr.md``. Layer: beside ``cdc`` and ``documents`` (imports residency, audit, secrets, plane,
resources); the Dagster assets, jobs and schedules are in :mod:`hybrid_dagster.assets.dr`. Names load on
first use (pyiceberg and pyarrow are not imported by ``import hybrid_dagster.dr``).

Example:
    .. code-block:: python

        from hybrid_dagster.dr import replicate_plane, run_drill, secondary_plane

        secondary = secondary_plane(eu_onprem)
        replicate_plane(eu_onprem, secondary, policy)
        print(run_drill(eu_onprem, secondary).objectives_met)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hybrid_dagster.dr.errors import (
    DrConfigError as DrConfigError,
    DrError as DrError,
    DrillError as DrillError,
    DrTargetRefused as DrTargetRefused,
    ReplicationError as ReplicationError,
)
from hybrid_dagster.dr.targets import check_dr_target as check_dr_target, secondary_plane as secondary_plane

if TYPE_CHECKING:
    from hybrid_dagster.dr.drill import DrillResult as DrillResult, FailoverResult as FailoverResult
    from hybrid_dagster.dr.lag import TableLag as TableLag, table_lag as table_lag
    from hybrid_dagster.dr.local import run_drill as run_drill
    from hybrid_dagster.dr.plane import (
        PlaneReplication as PlaneReplication,
        replicate_plane as replicate_plane,
    )
    from hybrid_dagster.dr.replicate import (
        TableReplication as TableReplication,
        replicate_table as replicate_table,
    )

_LAZY = {
    "DrillResult": "hybrid_dagster.dr.drill",
    "FailoverResult": "hybrid_dagster.dr.drill",
    "TableLag": "hybrid_dagster.dr.lag",
    "table_lag": "hybrid_dagster.dr.lag",
    "run_drill": "hybrid_dagster.dr.local",
    "PlaneReplication": "hybrid_dagster.dr.plane",
    "replicate_plane": "hybrid_dagster.dr.plane",
    "TableReplication": "hybrid_dagster.dr.replicate",
    "replicate_table": "hybrid_dagster.dr.replicate",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hybrid_dagster.dr' has no attribute {name!r}")
