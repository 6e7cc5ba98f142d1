"""Plain facts about GPU pools, demands and capacity, shared by placement, leases and teardown.

Correctness rules: a pool's jurisdiction is its plane's jurisdiction (copied when the facts are built,
never typed in separately); a capacity unit is identified by its incarnation (EC2 instance id, pod or job
uid, local node id), never by its name alone.

Example:
    >>> pool = PoolFacts(name="eu-onprem-a100", plane="eu-onprem", jurisdiction="EU", location="on_prem",
    ...                  accelerator="A100", capacity_gpus=8, price_per_gpu_hour=1.1,
    ...                  driver_version="550.54", cuda_version="12.4")
    >>> Demand(gpus=2, jurisdictions=frozenset({"EU"}), lineage="readmission").allow_burst
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Location = Literal["on_prem", "cloud"]
BackendKind = Literal["local", "kubernetes", "ec2"]


@dataclass(frozen=True)
class PoolFacts:
    """What placement and teardown need to know about one GPU pool.

    Example:
        >>> PoolFacts("us-cloud-a10g", "us-cloud", "US", "cloud", "A10G", 16, 1.2, "535.104", "12.2").burst
        True
    """

    name: str
    plane: str
    jurisdiction: str
    location: Location
    accelerator: str
    capacity_gpus: int
    price_per_gpu_hour: float
    driver_version: str
    cuda_version: str
    idle_minutes: float = 30.0
    max_lifetime_hours: float | None = 72.0
    protected: bool = False
    team: str = "unassigned"
    backend: BackendKind = "local"

    @property
    def burst(self) -> bool:
        """Cloud pools are the burst tier."""
        return self.location == "cloud"

    @property
    def versions(self) -> tuple[str, str]:
        return (self.driver_version, self.cuda_version)


@dataclass(frozen=True)
class Demand:
    """What one training run asks for: GPUs, the jurisdictions of its input data, its model lineage.

    ``lineage_versions`` are the (driver, CUDA) versions the lineage was trained with before, if any.

    Example:
        >>> Demand(gpus=1, jurisdictions=frozenset({"US"}), lineage="claims-cost", allow_burst=False).gpus
        1
    """

    gpus: int
    jurisdictions: frozenset[str]
    lineage: str | None = None
    lineage_versions: tuple[str, str] | None = None
    allow_burst: bool = True
    accelerator: str | None = None


@dataclass(frozen=True)
class CapacityUnit:
    """One piece of GPU capacity a backend reports: an EC2 instance, a pod or job, a local node.

    ``readable`` is False when the backend could not tell its state (counts as busy); ``lease_id`` and
    ``run_id`` come from labels/tags a training run put on it.

    Example:
        >>> CapacityUnit("ec2", "us-cloud-a10g", "i-0abc", "gpu-a", gpus=4, launched_at=0.0, state="running")
        >>> _.readable
        True
    """

    backend: str
    pool: str
    incarnation: str
    name: str
    gpus: int
    launched_at: float | None
    state: str
    readable: bool = True
    why_unreadable: str | None = None
    protected: bool = False
    lease_id: str | None = None
    run_id: str | None = None
    kind: str = "instance"
    namespace: str | None = None


@dataclass(frozen=True)
class Lease:
    """A grant of GPUs of one pool to one run, on one incarnation of capacity.

    Example:
        >>> Lease("l-1", "eu-onprem-a100", 2, (0, 1), "run-1", "node-7", since=0.0, heartbeat=5.0)
        >>> _.cuda_visible_devices
        '0,1'
    """

    lease_id: str
    pool: str
    gpus: int
    devices: tuple[int, ...]
    run_id: str
    incarnation: str | None
    since: float
    heartbeat: float
    released_at: float | None = None
    release_reason: str | None = None

    @property
    def cuda_visible_devices(self) -> str:
        return ",".join(str(d) for d in self.devices)


@dataclass(frozen=True)
class Placement:
    """Where a training run goes and why the other pools were not chosen.

    Example:
        >>> Placement(pool="eu-onprem-a100", burst=False, exclusions={"eu-cloud-h100": "on-prem has room"})
        Placement(pool='eu-onprem-a100', burst=False, exclusions={'eu-cloud-h100': 'on-prem has room'})
    """

    pool: str
    burst: bool
    exclusions: dict[str, str] = field(default_factory=dict)
