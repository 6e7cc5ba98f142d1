"""The residency model: jurisdictions, classifications, transfer routes and the policy that joins them.

Everything here is plain data with no Dagster dependency beyond ``Config`` so that the same objects can
be checked statically over a ``Definitions`` object (:mod:`hybrid_dagster.validation`) and again at run
time by the code that writes data (:mod:`hybrid_dagster.guard`).
"""

from __future__ import annotations

from enum import StrEnum

import dagster as dg
from pydantic import Field, field_validator

from hybrid_dagster.errors import ResidencyError as ResidencyError, ResidencyViolation as ResidencyViolation

PLANE_TAG = "hybrid/plane"
CLASSIFICATION_TAG = "hybrid/classification"
DECLASSIFIED_METADATA_KEY = "hybrid/declassified"
"""Asset metadata key holding the written justification of a declassification."""


class Jurisdiction(StrEnum):
    """Legal areas a data plane can sit in. Codes are upper-case ISO 3166 / EU conventions."""

    EU = "EU"
    EEA = "EEA"
    UK = "UK"
    US = "US"
    CH = "CH"
    CA = "CA"
    JP = "JP"
    AU = "AU"
    SG = "SG"
    IN = "IN"
    BR = "BR"

    @classmethod
    def parse(cls, value: str | Jurisdiction) -> Jurisdiction:
        """Parse a code case-insensitively, naming the valid codes on error.

        Example:
            >>> Jurisdiction.parse("eu")
            <Jurisdiction.EU: 'EU'>
        """
        try:
            return cls(str(value).upper())
        except ValueError:
            valid = ", ".join(j.value for j in cls)
            raise ValueError(f"unknown jurisdiction {value!r}; expected one of {valid}") from None


class Classification(StrEnum):
    """How sensitive an asset's data is, ordered ``public < internal < confidential < restricted``."""

    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    RESTRICTED = "restricted"

    @property
    def rank(self) -> int:
        return _CLASSIFICATION_ORDER.index(self)

    @property
    def is_regulated(self) -> bool:
        """Confidential and restricted data may not leave its jurisdiction without a declared route."""
        return self.rank >= Classification.CONFIDENTIAL.rank

    # StrEnum inherits str's alphabetical comparisons; every operator must compare by sensitivity.
    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Classification):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Classification):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Classification):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Classification):
            return NotImplemented
        return self.rank >= other.rank

    def __hash__(self) -> int:
        return str.__hash__(self)

    @classmethod
    def parse(cls, value: str | Classification) -> Classification:
        """Parse a classification name, naming the valid ones on error.

        Example:
            >>> Classification.parse("Restricted") > Classification.INTERNAL
            True
        """
        try:
            return cls(str(value).lower())
        except ValueError:
            valid = " < ".join(c.value for c in _CLASSIFICATION_ORDER)
            raise ValueError(f"unknown classification {value!r}; expected one of {valid}") from None

    @classmethod
    def highest(cls, values: list[Classification]) -> Classification:
        return max(values, default=cls.PUBLIC)


_CLASSIFICATION_ORDER = [
    Classification.PUBLIC,
    Classification.INTERNAL,
    Classification.CONFIDENTIAL,
    Classification.RESTRICTED,
]


class TransferRoute(dg.Config):
    """A declared, lawful path for regulated data from one jurisdiction to another.

    Example:
        >>> TransferRoute(
        ...     source="EU",
        ...     target="US",
        ...     legal_basis="GDPR Art. 46(2)(c) standard contractual clauses",
        ...     classifications=["confidential"],
        ... )
    """

    source: str = Field(description="Jurisdiction the data leaves, e.g. 'EU'.")
    target: str = Field(description="Jurisdiction the data enters, e.g. 'US'.")
    legal_basis: str = Field(
        description="The legal instrument that allows the transfer, e.g. 'GDPR Art. 45 adequacy decision'."
    )
    classifications: list[str] = Field(
        description="Classifications this route covers; data of any other classification may not use it."
    )
    description: str = Field(default="", description="What travels on this route and why.")
    egress_usd_per_gb: float | None = Field(
        default=None,
        description="Egress price per GB (10^9 bytes) on this route; the ledger reports cost.",
    )

    @field_validator("source", "target")
    @classmethod
    def _valid_jurisdiction(cls, value: str) -> str:
        return Jurisdiction.parse(value).value

    @field_validator("legal_basis")
    @classmethod
    def _non_empty_basis(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a transfer route needs a legal basis")
        return value

    @field_validator("egress_usd_per_gb")
    @classmethod
    def _non_negative_price(cls, value: float | None) -> float | None:
        if value is not None and value < 0:
            raise ValueError("egress_usd_per_gb must not be negative")
        return value

    @field_validator("classifications")
    @classmethod
    def _valid_classifications(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("a transfer route must name the classifications it covers")
        return [Classification.parse(v).value for v in value]

    def covers(self, source: str, target: str, classification: Classification) -> bool:
        return (
            self.source == Jurisdiction.parse(source)
            and self.target == Jurisdiction.parse(target)
            and classification.value in self.classifications
        )

    def describe(self) -> str:
        return f"{self.source}->{self.target} ({self.legal_basis})"


class ResidencyPolicy(dg.ConfigurableResource):
    """The organisation's residency rules: which cross-jurisdiction transfers are lawful.

    Data classified confidential or restricted may reach a plane of another jurisdiction only along a
    declared :class:`TransferRoute` whose classifications include the data's classification. Public and
    internal data move freely. Put the policy in your ``Definitions`` under the resource key
    ``residency_policy`` so that ``hybrid-dagster validate`` and the run-time guard both find it.

    Example:
        .. code-block:: python

            from hybrid_dagster import ResidencyPolicy, TransferRoute
            from hybrid_dagster.validation import hybrid_definitions

            policy = ResidencyPolicy(
                routes=[
                    TransferRoute(
                        source="EU",
                        target="US",
                        legal_basis="GDPR Art. 46(2)(c) standard contractual clauses",
                        classifications=["confidential"],
                    )
                ],
                strict=True,
            )
            defs = hybrid_definitions(assets=[...], resources={"residency_policy": policy, ...})
    """

    routes: list[TransferRoute] = Field(
        default_factory=list, description="Declared cross-jurisdiction routes for regulated data."
    )
    strict: bool = Field(
        default=False,
        description="When true, hybrid_definitions() makes the Definitions fail to load on any violation.",
    )

    def route_for(self, source: str, target: str, classification: Classification) -> TransferRoute | None:
        """The declared route allowing this transfer, or None.

        Example:
            >>> ResidencyPolicy().route_for("EU", "US", Classification.RESTRICTED) is None
            True
        """
        for route in self.routes:
            if route.covers(source, target, classification):
                return route
        return None

    def transfer_allowed(self, source: str, target: str, classification: Classification) -> bool:
        if Jurisdiction.parse(source) == Jurisdiction.parse(target):
            return True
        if not classification.is_regulated:
            return True
        return self.route_for(source, target, classification) is not None

    def check_transfer(
        self, *, what: str, source: str, target: str, classification: Classification
    ) -> TransferRoute | None:
        """Raise :class:`ResidencyViolation` if ``what`` may not move from ``source`` to ``target``.

        Returns the route used, or None when no route is needed (same jurisdiction or unregulated data).
        """
        if not self.transfer_allowed(source, target, classification):
            raise ResidencyViolation(
                f"{what}: {classification.value} data may not move from {source} to {target}: "
                f"no declared transfer route covers {classification.value} data {source}->{target}"
                + self._near_miss(source, target)
            )
        if Jurisdiction.parse(source) == Jurisdiction.parse(target) or not classification.is_regulated:
            return None
        return self.route_for(source, target, classification)

    def _near_miss(self, source: str, target: str) -> str:
        same_path = [
            r
            for r in self.routes
            if r.source == Jurisdiction.parse(source) and r.target == Jurisdiction.parse(target)
        ]
        if not same_path:
            return ""
        covered = sorted({c for r in same_path for c in r.classifications})
        return f" (the declared route {same_path[0].describe()} covers only {', '.join(covered)})"
