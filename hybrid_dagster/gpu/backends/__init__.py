"""Capacity backends: one shape (:class:`GpuBackend`), small concrete backends (local, Kubernetes, EC2)."""

from hybrid_dagster.gpu.backends.base import GpuBackend as GpuBackend, Listing as Listing
