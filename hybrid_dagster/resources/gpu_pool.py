"""The GpuPool resource: GPUs of one data plane, on-prem or in a cloud, with their price and versions.

Correctness rules: a pool's jurisdiction is its plane's jurisdiction (the pool holds the plane, so the two
cannot disagree); leases go through one SQL lease store shared by every run and the teardown sensor; the
plane a training run executes in is the pool's plane, given the lease's devices (``CUDA_VISIBLE_DEVICES``)
or, on Kubernetes, the pool's node selector, tolerations, ``nvidia.com/gpu`` limits and the labels the
teardown sensor reads.

Example:
    .. code-block:: python

        from hybrid_dagster.resources import DataPlane, GpuPool

        eu_onprem = DataPlane(name="eu-onprem", jurisdiction="EU", region="fra-dc2", location="on_prem",
                              warehouse="file:///srv/eu/warehouse")
        pool = GpuPool(name="eu-onprem-a100", plane=eu_onprem, location="on_prem", accelerator="A100",
                       capacity_gpus=8, price_per_gpu_hour=1.10, driver_version="550.54.15",
                       cuda_version="12.4", lease_store="postgresql+psycopg2://gpu@db.eu.internal/leases")
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from hybrid_dagster.gpu.backends.base import (
    GPUS_LABEL,
    LEASE_LABEL,
    POOL_LABEL,
    RUN_LABEL,
    GpuBackend,
)
from hybrid_dagster.gpu.backends.ec2 import Ec2Backend
from hybrid_dagster.gpu.backends.k8s import KubernetesBackend
from hybrid_dagster.gpu.backends.local import LocalBackend
from hybrid_dagster.gpu.leases import DEFAULT_TTL_S, LeaseStore
from hybrid_dagster.gpu.model import Lease, PoolFacts
from hybrid_dagster.resources.data_plane import DataPlane
from hybrid_dagster.resources.gpu_pool_settings import Ec2GpuSettings, KubernetesGpuSettings

GPU_POOL_TAG = "hybrid/gpu_pool"
"""Asset tag naming the GPU pool a training asset is pinned to."""

_STORES: dict[tuple[str, float], LeaseStore] = {}
_STORES_LOCK = threading.Lock()


def default_lease_store_url() -> str:
    """SQLite file under ``$DAGSTER_HOME`` (or the working folder): the embedded default."""
    root = Path(os.environ.get("DAGSTER_HOME") or ".").resolve()
    return f"sqlite:///{root / 'gpu_leases.db'}"


def lease_store_for(url: str, ttl_s: float = DEFAULT_TTL_S) -> LeaseStore:
    """One :class:`LeaseStore` (and engine) per URL and TTL in this process."""
    with _STORES_LOCK:
        store = _STORES.get((url, ttl_s))
        if store is None:
            store = _STORES[(url, ttl_s)] = LeaseStore(url, ttl_s=ttl_s)
        return store


class GpuPool(dg.ConfigurableResource):
    """A pool of GPUs in one data plane: placement candidates, leases and teardown are per pool.

    Example:
        .. code-block:: python

            us_burst = GpuPool(
                name="us-cloud-a10g", plane=us_cloud, location="cloud", accelerator="A10G",
                capacity_gpus=16, price_per_gpu_hour=1.21, driver_version="535.104.05", cuda_version="12.2",
                idle_minutes=20, max_lifetime_hours=24, backend="ec2",
                ec2=Ec2GpuSettings(region="us-east-1", instance_type="g5.12xlarge"),
            )
    """

    name: str = Field(description="Unique pool name; the value of the hybrid/gpu_pool asset tag.")
    plane: DataPlane = Field(description="The data plane the pool's GPUs sit in; gives its jurisdiction.")
    location: Literal["on_prem", "cloud"] = Field(
        description="on_prem pools take steady training; cloud pools of the same jurisdiction take the burst."
    )
    accelerator: str = Field(description="GPU model, e.g. 'A100-80GB', 'H100', 'L40S'.")
    capacity_gpus: int = Field(ge=1, description="How many GPUs the pool can lease at once.")
    price_per_gpu_hour: float = Field(
        ge=0, description="USD per GPU-hour (amortised hardware and power for on-prem pools)."
    )
    driver_version: str = Field(description="NVIDIA driver version on the pool's nodes, e.g. '550.54.15'.")
    cuda_version: str = Field(description="CUDA version of the pool's runtime, e.g. '12.4'.")
    idle_minutes: float = Field(
        default=30.0, gt=0, description="Minutes without a live run's lease before capacity is torn down."
    )
    max_lifetime_hours: float | None = Field(
        default=72.0, description="Capacity older than this is torn down even if busy (with a warning)."
    )
    protected: bool = Field(default=False, description="Never tear down this pool's capacity.")
    team: str = Field(default="unassigned", description="Team the pool's spend is reported under.")
    backend: Literal["local", "kubernetes", "ec2"] = Field(
        default="local", description="Where the pool's capacity is discovered and torn down."
    )
    kubernetes: KubernetesGpuSettings = Field(
        default_factory=KubernetesGpuSettings, description="Settings of the kubernetes backend."
    )
    ec2: Ec2GpuSettings = Field(default_factory=Ec2GpuSettings, description="Settings of the ec2 backend.")
    lease_store: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the lease store shared by all pools (default: SQLite in "
        "$DAGSTER_HOME; PostgreSQL in production).",
    )
    lease_ttl_s: float = Field(
        default=DEFAULT_TTL_S, gt=0, description="A lease without a heartbeat for this long has expired."
    )

    @property
    def jurisdiction(self) -> str:
        return self.plane.jurisdiction

    def facts(self) -> PoolFacts:
        """The plain facts placement and teardown use.

        Example:
            >>> pool.facts().jurisdiction
            'EU'
        """
        return PoolFacts(
            name=self.name,
            plane=self.plane.name,
            jurisdiction=self.plane.jurisdiction,
            location=self.location,
            accelerator=self.accelerator,
            capacity_gpus=self.capacity_gpus,
            price_per_gpu_hour=self.price_per_gpu_hour,
            driver_version=self.driver_version,
            cuda_version=self.cuda_version,
            idle_minutes=self.idle_minutes,
            max_lifetime_hours=self.max_lifetime_hours,
            protected=self.protected,
            team=self.team,
            backend=self.backend,
        )

    def store(self) -> LeaseStore:
        """The lease store (one per URL per process)."""
        return lease_store_for(self.lease_store or default_lease_store_url(), self.lease_ttl_s)

    def capacity_backend(self) -> GpuBackend:
        """The backend that discovers and tears down this pool's capacity.

        Example:
            >>> pool.capacity_backend().list([pool.name]).units
        """
        if self.backend == "ec2":
            return Ec2Backend(
                region=self.ec2.region, endpoint_url=self.ec2.endpoint_url, default_gpus={self.name: 1}
            )
        if self.backend == "kubernetes":
            k8s = self.kubernetes
            return KubernetesBackend(
                namespace=k8s.namespace,
                kube_context=k8s.kube_context,
                kubeconfig_file=k8s.kubeconfig_file,
                host=k8s.host,
            )
        return LocalBackend(self.store())

    @contextmanager
    def leased(
        self, run_id: str, gpus: int, *, heartbeat_s: float | None = None, incarnation: str | None = None
    ) -> Iterator[Lease]:
        """Hold a new lease for the duration of the block (raises ``PoolFull`` when the pool is full).

        Example:
            >>> with pool.leased(context.run.run_id, gpus=1) as lease:
            ...     lease.cuda_visible_devices
            '0'
        """
        lease = self.store().acquire(
            self.name, gpus=gpus, capacity=self.capacity_gpus, run_id=run_id, incarnation=incarnation
        )
        with self.held(lease, heartbeat_s=heartbeat_s):
            yield lease

    @contextmanager
    def held(self, lease: Lease, *, heartbeat_s: float | None = None) -> Iterator[Lease]:
        """Heartbeat ``lease`` while the block runs; release it however the block ends (success, failure,
        cancellation). A process killed outright stops heartbeating, and the lease expires.

        Example:
            >>> with pool.held(lease):
            ...     plane.run(context, module="training.work")
        """
        store = self.store()
        stop = threading.Event()
        interval = heartbeat_s if heartbeat_s is not None else max(1.0, self.lease_ttl_s / 5)

        def beat() -> None:
            while not stop.wait(interval):
                store.heartbeat(lease.lease_id)

        thread = threading.Thread(target=beat, name=f"gpu-lease-{lease.lease_id[:8]}", daemon=True)
        thread.start()
        outcome = "failed"
        try:
            yield lease
            outcome = "succeeded"
        except BaseException as error:
            interrupted = isinstance(error, KeyboardInterrupt | SystemExit)
            if interrupted or type(error).__name__ == "DagsterExecutionInterruptedError":
                outcome = "cancelled"
            raise
        finally:
            stop.set()
            thread.join(timeout=5)
            store.release(lease.lease_id, f"run {outcome}")

    # -- the plane a leased run executes in -------------------------------------------------------------

    def labels(self, lease: Lease) -> dict[str, str]:
        """Labels the teardown sensor reads on a training pod."""
        return {
            POOL_LABEL: self.name,
            LEASE_LABEL: lease.lease_id,
            RUN_LABEL: lease.run_id,
            GPUS_LABEL: str(lease.gpus),
        }

    def leased_plane(self, lease: Lease) -> DataPlane:
        """The pool's plane, set up for a run holding ``lease``.

        On the subprocess executor the work sees ``CUDA_VISIBLE_DEVICES`` from the lease. On Kubernetes the
        pod gets the pool's node selector and tolerations, ``nvidia.com/gpu`` limits of the lease's GPU
        count and the pool/lease/run labels.

        Example:
            >>> pool.leased_plane(lease).executor.resources["limits"]["nvidia.com/gpu"]
            '2'
        """
        config: dict[str, Any] = self.plane.to_config()
        if self.plane.executor.kind == "kubernetes":
            executor = dict(config["executor"])
            k8s = self.kubernetes
            executor["node_selector"] = {**executor.get("node_selector", {}), **k8s.node_selector}
            executor["tolerations"] = [*executor.get("tolerations", []), *k8s.tolerations]
            executor["labels"] = {**executor.get("labels", {}), **self.labels(lease)}
            resources = {k: dict(v) for k, v in executor.get("resources", {}).items()}
            resources.setdefault("limits", {})["nvidia.com/gpu"] = str(lease.gpus)
            executor["resources"] = resources
            if k8s.image:
                executor["image"] = k8s.image
            config["executor"] = executor
        else:
            config["env"] = {**config.get("env", {}), "CUDA_VISIBLE_DEVICES": lease.cuda_visible_devices}
        return DataPlane.from_config(config)
