"""GPU pools: facts, placement, leases, capacity backends and teardown decisions.

Depends on nothing else in hybrid_dagster except :mod:`hybrid_dagster.errors` (the ``GpuPool`` resource in
:mod:`hybrid_dagster.resources.gpu_pool` builds on it).

Example:
    .. code-block:: python

        from hybrid_dagster.gpu import Demand, LeaseStore, place

        store = LeaseStore("sqlite:////srv/hybrid/gpu_leases.db")
        placement = place(Demand(gpus=2, jurisdictions=frozenset({"EU"})), pools, store.free_gpus(capacities))
"""

from hybrid_dagster.gpu.errors import (
    BackendUnavailable as BackendUnavailable,
    GpuError as GpuError,
    LeaseStoreError as LeaseStoreError,
    NoEligiblePool as NoEligiblePool,
    PoolFull as PoolFull,
)
from hybrid_dagster.gpu.leases import LeaseStore as LeaseStore
from hybrid_dagster.gpu.model import (
    CapacityUnit as CapacityUnit,
    Demand as Demand,
    Lease as Lease,
    Placement as Placement,
    PoolFacts as PoolFacts,
)
from hybrid_dagster.gpu.placement import place as place
