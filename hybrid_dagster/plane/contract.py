"""The typed contract of what crosses Dagster Pipes between the orchestrator and a plane's work.

One set of pydantic models, used by every kind of plane work (CDC, table writes, and the coming
training and replication jobs). The orchestrator sends :class:`ResidencyExtras` under the Pipes extras
key ``hybrid_residency``; the plane validates it back. A renamed field is then a validation error at the
boundary, not a silently missing residency decision.

Correctness rules: the contract carries references and decisions, never secret values (plane specs
are secret-free by construction) and never row values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hybrid_dagster.errors import ResidencyError
from hybrid_dagster.keys import RESIDENCY_EXTRAS_KEY
from hybrid_dagster.plane.config import PlaneSpec
from hybrid_dagster.residency.guard import WriteIntent
from hybrid_dagster.residency.model import Classification, TransferRoute


class IntentSpec(BaseModel):
    """A :class:`~hybrid_dagster.residency.guard.WriteIntent` on the wire."""

    model_config = ConfigDict(frozen=True)

    asset: str
    classification: Classification
    home_plane: str
    data_jurisdictions: list[str]
    clearance: Classification | None = None
    declassified: bool = False

    @classmethod
    def from_intent(cls, intent: WriteIntent) -> IntentSpec:
        return cls(
            asset=intent.asset,
            classification=intent.classification,
            home_plane=intent.home_plane,
            data_jurisdictions=sorted(intent.data_jurisdictions),
            clearance=intent.clearance,
            declassified=intent.declassified,
        )

    def to_intent(self) -> WriteIntent:
        return WriteIntent(
            asset=self.asset,
            classification=self.classification,
            home_plane=self.home_plane,
            data_jurisdictions=frozenset(self.data_jurisdictions),
            clearance=self.clearance,
            declassified=self.declassified,
        )


class RouteSpec(BaseModel):
    """A declared transfer route on the wire."""

    model_config = ConfigDict(frozen=True)

    source: str
    target: str
    legal_basis: str
    classifications: list[str]
    description: str = ""
    egress_usd_per_gb: float | None = None

    def to_route(self) -> TransferRoute:
        return TransferRoute(**self.model_dump())


class ResidencyExtras(BaseModel):
    """Everything the plane's work needs to enforce residency on its side.

    Example:
        >>> extras = ResidencyExtras(plane=spec, step="ward_occupancy", clearance="restricted")
        >>> ResidencyExtras.from_extras({"hybrid_residency": extras.model_dump(mode="json")}).step
        'ward_occupancy'
    """

    model_config = ConfigDict(frozen=True)

    plane: PlaneSpec
    step: str
    clearance: Classification
    readable_planes: dict[str, PlaneSpec] = Field(default_factory=dict)
    routes: list[RouteSpec] = Field(default_factory=list)
    policy_visible: bool = False
    intents: dict[str, IntentSpec] = Field(default_factory=dict)

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any]) -> ResidencyExtras:
        """Validate the contract from Pipes extras; missing means DataPlane.run did not launch the work."""
        raw = extras.get(RESIDENCY_EXTRAS_KEY)
        if raw is None:
            raise ResidencyError(
                f"the Pipes extras carry no {RESIDENCY_EXTRAS_KEY!r}: plane work must be launched by "
                "DataPlane.run, which computes what the step may read and write"
            )
        return cls.model_validate(raw)

    def to_extras(self) -> dict[str, Any]:
        return {RESIDENCY_EXTRAS_KEY: self.model_dump(mode="json")}


class ScreenSpec(BaseModel):
    """What the in-plane launcher lets through for a regulated step (see residency.screen)."""

    model_config = ConfigDict(frozen=True)

    plane: str
    step: str
    keys: list[str] = Field(default_factory=list)
    text_keys: list[str] = Field(default_factory=list)
