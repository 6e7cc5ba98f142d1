"""Errors of disaster recovery. Messages name planes, tables and paths - never a row value or a secret."""

from __future__ import annotations

from hybrid_dagster.errors import ResidencyViolation, ValueFreeError


class DrError(ValueFreeError):
    """Base of the disaster-recovery errors."""


class DrConfigError(DrError):
    """A plane's DR secondary is missing or inconsistent (unknown plane, no warehouse, ...)."""


class DrTargetRefused(ResidencyViolation, DrError):
    """The DR secondary may not hold the plane's data (another jurisdiction without a declared route)."""


class ReplicationError(DrError):
    """A table or artifact could not be replicated; the secondary keeps its previous registered state."""


class DrillError(DrError):
    """A DR drill could not inject the outage, fail over or clean up after itself."""
