"""The shape every capacity backend has: list the GPU capacity of some pools, terminate one incarnation.

Correctness rules: ``list`` never raises for a backend that cannot be read - it returns a
:class:`Listing` with ``error`` set, so that the teardown sensor counts that capacity as busy; and
``terminate`` acts on an incarnation (instance id, pod or job uid, local node id), never on a name alone, so
a re-created unit with the same name is never hit by a decision made about its predecessor.

Example:
    .. code-block:: python

        class MyBackend(GpuBackend):
            kind = "mine"

            def list(self, pools):
                return Listing(self.kind, units=[...])

            def terminate(self, unit):
                ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from hybrid_dagster.gpu.errors import BackendUnavailable
from hybrid_dagster.gpu.model import CapacityUnit

POOL_LABEL = "hybrid-dagster/gpu-pool"
"""Label (Kubernetes) or tag (EC2) naming the GPU pool a unit of capacity belongs to."""
LEASE_LABEL = "hybrid-dagster/gpu-lease"
"""Label/tag naming the lease a training run holds on the unit."""
RUN_LABEL = "hybrid-dagster/run-id"
"""Label/tag naming the Dagster run that created the unit."""
PROTECTED_LABEL = "hybrid-dagster/protected"
"""Label/tag that keeps a unit from ever being torn down ("true")."""
GPUS_LABEL = "hybrid-dagster/gpus"
"""Label/tag with the unit's GPU count."""


@dataclass
class Listing:
    """What one backend reported: its units, or why it could not be read.

    Example:
        >>> Listing("ec2", error="EndpointConnectionError", pools=("us-cloud-a10g",))
        Listing(backend='ec2', units=[], error='EndpointConnectionError', pools=('us-cloud-a10g',))
    """

    backend: str
    units: list[CapacityUnit] = field(default_factory=list)
    error: str | None = None
    pools: tuple[str, ...] = ()


class GpuBackend(ABC):
    """Discovers and tears down GPU capacity of the pools it serves.

    Example:
        >>> listing = backend.list(["us-cloud-a10g"])
        >>> for unit in listing.units:
        ...     backend.terminate(unit)
    """

    kind: str = "base"

    @abstractmethod
    def list(self, pools: Sequence[str]) -> Listing:
        """The capacity units of ``pools``; a failure is reported in ``Listing.error``, never raised."""

    @abstractmethod
    def terminate(self, unit: CapacityUnit) -> None:
        """Tear down exactly this incarnation (raises :class:`BackendUnavailable` if that fails)."""

    def terminate_many(self, units: Sequence[CapacityUnit]) -> dict[str, str | None]:
        """Tear down several units; per incarnation, None when it went or why it was refused.

        Backends whose API takes many ids in one call (EC2) override this.
        """
        outcome: dict[str, str | None] = {}
        for unit in units:
            try:
                self.terminate(unit)
                outcome[unit.incarnation] = None
            except BackendUnavailable as refused:
                outcome[unit.incarnation] = str(refused)
        return outcome

    def key(self) -> str:
        """Backends with equal keys reach the same API and are listed once per tick."""
        return self.kind


def parse_gpus(value: str | None, default: int) -> int | None:
    """A GPU count from a tag or label value; None when it is present but unreadable."""
    if value is None:
        return default
    try:
        count = int(value)
    except ValueError:
        return None
    return count if count >= 0 else None
