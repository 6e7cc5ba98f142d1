"""Errors of GPU pools, leases and placement.

Correctness rule: every message names pools, planes, jurisdictions, runs and GPU counts - never a row value
or a secret - so every class here is a :class:`~hybrid_dagster.errors.ValueFreeError`.

Example:
    .. code-block:: python

        from hybrid_dagster.gpu.errors import NoEligiblePool

        try:
            place(demand, pools, free)
        except NoEligiblePool as refused:
            print(refused.exclusions)  # {pool name: why it was excluded}
"""

from __future__ import annotations

from collections.abc import Mapping

from hybrid_dagster.errors import ValueFreeError


class GpuError(ValueFreeError):
    """Base class of GPU pool errors."""


class NoEligiblePool(GpuError):
    """No GPU pool may take a training run; ``exclusions`` says why each pool was excluded."""

    def __init__(self, what: str, exclusions: Mapping[str, str]) -> None:
        self.exclusions = dict(exclusions)
        lines = "; ".join(f"{pool}: {why}" for pool, why in sorted(self.exclusions.items())) or "no pools"
        super().__init__(f"no GPU pool may take {what}: {lines}")


class PoolFull(GpuError):
    """A lease could not be granted: the pool has fewer free GPUs than asked for."""


class LeaseStoreError(GpuError):
    """The lease store cannot be read or written (names the store, never its credentials)."""


class BackendUnavailable(GpuError):
    """A capacity backend (EC2, Kubernetes, local) could not be listed or changed."""
