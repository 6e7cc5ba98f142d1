"""Access tiers declared once: the roles of each plane and the classifications each tier may touch.

Correctness rules:

- One declaration (:class:`AccessTiers`) is the source of every rendered artifact (Vault/OpenBao
  policies and roles, Kubernetes RBAC, AWS IAM policies); nothing is written by hand.
- A plane's secrets live under ``<secrets_prefix>/<classification>/...`` (``secrets_prefix`` defaults to
  the plane's name); a tier may read exactly the classifications it lists, in its own plane only. Paths of
  other planes are never granted, whatever the tier.
- A plane's objects live under ``s3://<bucket>/<prefix>/``; each tier's IAM policy names that prefix only.
- Names are derived, never free text: ``hd-<plane>-<tier>`` for Vault policies, AppRoles, Kubernetes-auth
  roles and IAM policies; ``hd-<tier>`` for service accounts and Roles in the plane's namespace.

Example:
    .. code-block:: python

        from hybrid_dagster.access import AccessTiers, PlaneAccess

        access = AccessTiers(planes=[
            PlaneAccess(plane="eu-onprem", jurisdiction="EU", namespace="clinical-eu",
                        bucket="meridian-eu", bucket_prefix="warehouse"),
            PlaneAccess(plane="us-cloud", jurisdiction="US", namespace="clinical-us",
                        bucket="meridian-us", bucket_prefix="warehouse"),
        ])
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hybrid_dagster.residency import Classification, Jurisdiction

NAME_PREFIX = "hd"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

Capability = Literal["read", "write", "admin"]


class Tier(BaseModel):
    """A role every plane has: which classifications it may touch and what it may do.

    ``read`` reads secrets and objects; ``write`` also writes objects and launches plane work (pods);
    ``admin`` also writes the plane's secrets and manages its RBAC.

    Example:
        >>> Tier(name="engineer", classifications=["public", "internal", "confidential", "restricted"],
        ...      capability="write").name
        'engineer'
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Tier name, a DNS label (e.g. reader, engineer, admin).")
    classifications: list[Classification] = Field(description="Classifications this tier may touch.")
    capability: Capability = Field(default="read", description="read, write or admin.")
    token_ttl: str = Field(default="1h", description="TTL of tokens issued to this tier (Vault duration).")
    token_max_ttl: str = Field(default="4h", description="Longest a token may be renewed to.")

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not _DNS_LABEL.match(value):
            raise ValueError(f"tier name {value!r} must be a DNS label (lower-case letters, digits, '-')")
        return value

    @field_validator("classifications")
    @classmethod
    def _sorted(cls, value: list[Classification]) -> list[Classification]:
        return sorted(set(value))


DEFAULT_TIERS = (
    Tier(name="reader", classifications=[Classification.PUBLIC, Classification.INTERNAL], capability="read"),
    Tier(name="engineer", classifications=list(Classification), capability="write"),
    Tier(name="admin", classifications=list(Classification), capability="admin"),
)
"""Readers see public and internal data; engineers (and the plane's pipelines) all of their plane's data;
admins also manage the plane's secrets and RBAC."""


class PlaneAccess(BaseModel):
    """Where a plane's secrets, objects and workloads live, for rendering its access.

    Example:
        >>> PlaneAccess(plane="eu-onprem", jurisdiction="EU", namespace="clinical-eu",
        ...             bucket="meridian-eu", bucket_prefix="warehouse").secrets_root
        'eu-onprem'
    """

    model_config = ConfigDict(frozen=True)

    plane: str = Field(description="Plane name (the hybrid/plane tag value).")
    jurisdiction: str = Field(description="Jurisdiction code of the plane, e.g. EU.")
    namespace: str = Field(description="Kubernetes namespace of the plane's workloads.")
    secrets_prefix: str | None = Field(
        default=None, description="Vault path / Secrets Manager name prefix (default: the plane name)."
    )
    bucket: str | None = Field(default=None, description="S3 bucket of the plane's warehouse.")
    bucket_prefix: str = Field(default="", description="Key prefix of the plane inside the bucket.")
    region: str = Field(default="*", description="AWS region of the plane's secrets ('*': any).")
    account: str = Field(default="*", description="AWS account id of the plane's secrets ('*': any).")

    @field_validator("jurisdiction")
    @classmethod
    def _jurisdiction(cls, value: str) -> str:
        return Jurisdiction.parse(value).value

    @field_validator("plane", "namespace")
    @classmethod
    def _label(cls, value: str) -> str:
        if not _DNS_LABEL.match(value):
            raise ValueError(f"{value!r} must be a DNS label (lower-case letters, digits, '-')")
        return value

    @property
    def secrets_root(self) -> str:
        return (self.secrets_prefix or self.plane).strip("/")

    def secrets_path(self, classification: Classification) -> str:
        """The path (under the KV mount or in Secrets Manager) of this plane's secrets of a class."""
        return f"{self.secrets_root}/{classification.value}"

    @property
    def object_prefix(self) -> str:
        return self.bucket_prefix.strip("/")


class AccessTiers(BaseModel):
    """The whole declaration: planes, tiers, and where the Vault/OpenBao pieces are mounted.

    Example:
        >>> access = AccessTiers(planes=[PlaneAccess(plane="eu-onprem", jurisdiction="EU",
        ...                                          namespace="clinical-eu")])
        >>> [role.name for role in access.roles()]
        ['hd-eu-onprem-reader', 'hd-eu-onprem-engineer', 'hd-eu-onprem-admin']
    """

    planes: list[PlaneAccess] = Field(description="The planes whose access is rendered.")
    tiers: list[Tier] = Field(
        default_factory=lambda: list(DEFAULT_TIERS), description="Tiers every plane has."
    )
    kv_mount: str = Field(default="secret", description="KV v2 mount of the planes' secrets.")
    approle_mount: str = Field(default="approle", description="Mount of the AppRole auth method.")
    kubernetes_mount: str = Field(default="kubernetes", description="Mount of the Kubernetes auth method.")
    secret_id_ttl: str = Field(default="24h", description="Lifetime of AppRole secret ids.")

    @model_validator(mode="after")
    def _unique(self) -> AccessTiers:
        for what, names in (
            ("plane", [p.plane for p in self.planes]),
            ("tier", [t.name for t in self.tiers]),
            ("secrets prefix", [p.secrets_root for p in self.planes]),
        ):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"duplicate {what} names: {', '.join(duplicates)}")
        roots = [p.secrets_root for p in self.planes]
        for root in roots:
            for other in roots:
                if root != other and other.startswith(root + "/"):
                    raise ValueError(f"secrets prefix {other!r} lies inside {root!r}: planes must not nest")
        return self

    def roles(self) -> list[PlaneRole]:
        """Every (plane, tier) pair, in declaration order."""
        return [PlaneRole(plane=p, tier=t) for p in self.planes for t in self.tiers]

    def role(self, plane: str, tier: str) -> PlaneRole:
        for role in self.roles():
            if role.plane.plane == plane and role.tier.name == tier:
                return role
        raise KeyError(f"no tier {tier!r} on plane {plane!r}")


class PlaneRole(BaseModel):
    """One tier of one plane: the unit every renderer produces artifacts for."""

    model_config = ConfigDict(frozen=True)

    plane: PlaneAccess
    tier: Tier

    @property
    def name(self) -> str:
        """``hd-<plane>-<tier>``: the Vault policy, AppRole, Kubernetes-auth role and IAM policy name."""
        return f"{NAME_PREFIX}-{self.plane.plane}-{self.tier.name}"

    @property
    def service_account(self) -> str:
        """``hd-<tier>``: the service account (and Role) in the plane's namespace."""
        return f"{NAME_PREFIX}-{self.tier.name}"
