"""A data plane's settings, apart from the resource, and the secret-free spec that crosses into a plane.

Correctness rules:

- No secret value is ever part of a plane's configuration: catalog properties and URIs that look like
  credentials must be ``{env:NAME}`` references (resolved inside the plane when the catalog is opened),
  and a plane's ``env`` may not carry credentials (they belong in the plane's secrets backend). The UI's
  resource view, run config, Pipes extras and pod environments therefore never show a secret.
- A :class:`PlaneSpec` is what a plane's work learns about a plane: name, jurisdiction, storage and
  catalog location - never the executor of another plane, never a resolved secret.
"""

from __future__ import annotations

import posixpath
import re
import sys
from typing import Any, Literal
from urllib.parse import urlparse

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hybrid_dagster.residency.model import Jurisdiction

ENV_REFERENCE = re.compile(r"\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
"""``{env:NAME}``: a reference to an environment variable of the process that opens the catalog."""

_SECRET_NAME = re.compile(r"(secret|password|passwd|token|credential|access[-_.]?key|private[-_.]?key)", re.I)


def looks_secret(name: str) -> bool:
    """Whether a property or variable name names a credential.

    Example:
        >>> looks_secret("s3.secret-access-key"), looks_secret("s3.endpoint")
        (True, False)
    """
    return bool(_SECRET_NAME.search(name))


def require_reference(owner: str, name: str, value: str) -> str:
    """``value`` unchanged if it holds no literal credential, else a ``ValueError`` naming ``name``."""
    if looks_secret(name) and not ENV_REFERENCE.fullmatch(value.strip()):
        raise ValueError(
            f"{owner}: {name!r} looks like a credential and is given literally; give it as a reference "
            f"'{{env:VARIABLE}}' resolved inside the plane (the value is not shown here)"
        )
    parsed = urlparse(value) if "://" in value else None
    if parsed is not None and parsed.password and not ENV_REFERENCE.fullmatch(parsed.password):
        raise ValueError(
            f"{owner}: {name!r} is a URI with a literal password; write the password as '{{env:VARIABLE}}' "
            "(resolved inside the plane; the value is not shown here)"
        )
    return value


def warehouses_overlap(first: str, second: str) -> bool:
    """Whether two warehouse URIs share storage, after normalising ``.``, ``..`` and trailing slashes.

    Example:
        >>> warehouses_overlap("file:///srv/eu/../us/warehouse", "file:///srv/us")
        True
    """

    def normalised(uri: str) -> str:
        parsed = urlparse(uri)
        path = posixpath.normpath(parsed.path or "/")
        return f"{parsed.scheme}://{parsed.netloc}{path.rstrip('/')}/"

    a, b = normalised(first), normalised(second)
    return a.startswith(b) or b.startswith(a)


class CatalogConfig(dg.Config):
    """Where the plane's Iceberg catalog lives.

    The embedded default is a SQLite ``SqlCatalog`` file under a ``file://`` warehouse (dev only: SQLite
    is not for concurrent writers). Production planes give a PostgreSQL URI or a REST catalog. Credentials
    are references (``{env:NAME}``), never literals.

    Example:
        >>> CatalogConfig(kind="rest", uri="https://catalog.eu.example.org",
        ...               properties={"credential": "{env:EU_CATALOG_CREDENTIAL}"})
    """

    model_config = ConfigDict(hide_input_in_errors=True)  # a refused credential is never echoed

    kind: Literal["sql", "rest"] = Field(default="sql", description="pyiceberg catalog type.")
    uri: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URI (sql) or REST endpoint (rest). Empty for sql means a SQLite file "
            "'catalog.db' inside a file:// warehouse. A password is written '{env:NAME}'."
        ),
    )
    properties: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra pyiceberg catalog properties, e.g. s3.endpoint or s3.region. Credentials are given as "
            "'{env:NAME}' references, resolved inside the plane."
        ),
    )

    @field_validator("uri")
    @classmethod
    def _no_literal_password(cls, value: str | None) -> str | None:
        return None if value is None else require_reference("catalog", "uri", value)

    @field_validator("properties")
    @classmethod
    def _no_literal_secrets(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            require_reference("catalog", key, item)
        return value


class ExecutorConfig(dg.Config):
    """How work is launched inside the plane.

    ``subprocess`` runs a local process through ``PipesSubprocessClient`` (the embedded default and what
    the tests use); ``kubernetes`` launches a pod in the plane's own cluster through dagster-k8s
    ``PipesK8sClient``.

    Example:
        >>> ExecutorConfig(
        ...     kind="kubernetes",
        ...     kube_context="eu-onprem",
        ...     namespace="clinical",
        ...     node_selector={"topology.kubernetes.io/region": "eu-central"},
        ...     image="ghcr.io/acme/clinical-plane:1.4",
        ... )
    """

    kind: Literal["subprocess", "kubernetes"] = Field(
        default="subprocess", description="Launcher for the plane's work."
    )
    kube_context: str | None = Field(
        default=None, description="kubeconfig context of the plane's own cluster (kubernetes only)."
    )
    kubeconfig_file: str | None = Field(default=None, description="Path to a kubeconfig file.")
    load_incluster_config: bool = Field(
        default=False, description="Use the in-cluster service account (code location runs in the plane)."
    )
    namespace: str = Field(default="default", description="Namespace pods are launched in.")
    image: str | None = Field(default=None, description="Container image holding the plane's work code.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node selector pinning pods to the plane's nodes."
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Extra pod labels.")
    tolerations: list[dict[str, str]] = Field(
        default_factory=list,
        description="Pod tolerations (snake_case keys of V1Toleration), e.g. for tainted GPU nodes.",
    )
    service_account_name: str | None = Field(default=None, description="Pod service account.")
    resources: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Container resources, e.g. {'requests': {'cpu': '1'}, 'limits': {'memory': '4Gi'}}.",
    )
    work_log_dir: str | None = Field(
        default=None,
        description=(
            "Plane-local folder for the stdout/stderr of regulated steps (default: <warehouse>/_logs for a "
            "file:// warehouse, /var/log/hybrid-dagster inside Kubernetes pods)."
        ),
    )
    python: str = Field(
        default=sys.executable,
        description="Python interpreter used for module work (subprocess) - the plane's own environment.",
    )


class SecretsConfig(dg.Config):
    """The plane's secrets backend and the plane's own identity there. Values are resolved inside the
    plane (``hybrid_dagster.secrets``), never here; credentials are named by environment variables that
    are set only where the plane's work runs.

    Example:
        >>> SecretsConfig(backend="vault", address="https://bao.eu.example.org", auth_method="approle",
        ...               role_id_env="EU_ONPREM_ROLE_ID", secret_id_env="EU_ONPREM_SECRET_ID")
    """

    backend: Literal["env", "vault", "aws"] = Field(default="env", description="Secrets backend kind.")
    address: str | None = Field(
        default=None, description="Vault address or AWS Secrets Manager endpoint; empty for the default."
    )
    path_prefix: str = Field(default="", description="Prefix under which the plane's secrets live.")
    region: str | None = Field(default=None, description="AWS region (aws backend).")
    mount_point: str = Field(default="secret", description="KV v2 mount (vault backend).")
    auth_method: Literal["token", "approle", "kubernetes"] = Field(
        default="token", description="How the plane logs in to Vault/OpenBao (vault backend)."
    )
    auth_mount_point: str | None = Field(
        default=None, description="Mount of the auth method (default: the method's name)."
    )
    token_env: str | None = Field(
        default=None,
        description="Variable in the plane holding its own Vault token (token auth; no default, so that a "
        "plane never picks up an orchestrator's VAULT_TOKEN).",
    )
    role_id_env: str | None = Field(
        default=None, description="Variable in the plane holding its AppRole role id (approle auth)."
    )
    secret_id_env: str | None = Field(
        default=None, description="Variable in the plane holding its AppRole secret id (approle auth)."
    )
    kubernetes_role: str | None = Field(
        default=None, description="Vault role the plane's service account logs in as (kubernetes auth)."
    )
    kubernetes_token_path: str = Field(
        default="/var/run/secrets/kubernetes.io/serviceaccount/token",
        description="Service-account token file (kubernetes auth).",
    )
    access_key_id_env: str | None = Field(
        default=None, description="Variable in the plane holding its AWS access key id (aws backend)."
    )
    secret_access_key_env: str | None = Field(
        default=None, description="Variable in the plane holding its AWS secret access key (aws backend)."
    )
    renew_token: bool = Field(default=True, description="Renew the Vault token before it expires.")


class CatalogSpec(BaseModel):
    """The catalog part of a :class:`PlaneSpec` (credentials only as ``{env:NAME}`` references)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["sql", "rest"] = "sql"
    uri: str | None = None
    properties: dict[str, str] = Field(default_factory=dict)


class PlaneSpec(BaseModel):
    """What a plane's work knows of a plane: identity, jurisdiction and storage - no secrets, no executor.

    Example:
        >>> spec = PlaneSpec(name="eu-onprem", jurisdiction="EU", warehouse="file:///srv/eu/warehouse")
        >>> spec.jurisdiction
        'EU'
    """

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    name: str
    jurisdiction: str
    region: str = ""
    location: Literal["on_prem", "cloud"] = "on_prem"
    warehouse: str
    catalog: CatalogSpec = Field(default_factory=CatalogSpec)
    secrets: dict[str, Any] = Field(default_factory=dict)

    @field_validator("jurisdiction")
    @classmethod
    def _valid_jurisdiction(cls, value: str) -> str:
        return Jurisdiction.parse(value).value

    @field_validator("catalog")
    @classmethod
    def _no_literal_secrets(cls, value: CatalogSpec) -> CatalogSpec:
        if value.uri is not None:
            require_reference("catalog", "uri", value.uri)
        for key, item in value.properties.items():
            require_reference("catalog", key, item)
        return value


class DrSecondaryConfig(dg.Config):
    """Where a plane's disaster-recovery copy lives and what it must achieve (RTO/RPO objectives).

    Either ``plane`` names another DataPlane of the Definitions, or ``warehouse`` and ``jurisdiction``
    (with a catalog for an ``s3://`` warehouse) describe the secondary directly. Confidential or restricted
    data may only go to a secondary of another jurisdiction on a declared transfer route: the static
    residency check and the replication refuse any other target before a byte is copied.

    Example:
        >>> DrSecondaryConfig(name="eu-onprem-dr", jurisdiction="EU", region="eu-central-1",
        ...                   warehouse="s3://meridian-eu-dr/warehouse",
        ...                   catalog=CatalogConfig(uri="postgresql+psycopg2://dr@db/{env:DR_CATALOG_PW}"),
        ...                   rto_objective_s=900, rpo_objective_s=300)
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    plane: str | None = Field(
        default=None, description="Name of another DataPlane of the Definitions that is the secondary."
    )
    name: str | None = Field(default=None, description="Name of the secondary (default: '<primary>-dr').")
    jurisdiction: str | None = Field(default=None, description="Jurisdiction of the secondary, e.g. 'EU'.")
    region: str = Field(default="", description="Region or site of the secondary.")
    location: Literal["on_prem", "cloud"] = Field(default="cloud", description="On-prem or cloud.")
    warehouse: str | None = Field(default=None, description="Root URI of the secondary's storage.")
    catalog: CatalogConfig = Field(
        default_factory=CatalogConfig,
        description="The secondary's Iceberg catalog (credentials by reference).",
    )
    secrets: SecretsConfig = Field(
        default_factory=SecretsConfig, description="The secondary's secrets backend (checked for presence)."
    )
    secret_refs: list[str] = Field(
        default_factory=list,
        description="Secret references the plane's work needs, as 'backend:path#key' - checked for presence "
        "in the secondary's backend at every replication (values are never read out or copied).",
    )
    work_log_dir: str | None = Field(
        default=None, description="Local folder for the failover work's logs (default: a temporary folder)."
    )
    rto_objective_s: float = Field(default=900.0, description="Recovery time objective in seconds.")
    rpo_objective_s: float = Field(default=300.0, description="Recovery point objective in seconds.")
    rpo_objective_changes: int | None = Field(
        default=None, description="Recovery point objective as source changes (default: none lost, 0)."
    )
    replication_cron: str = Field(default="*/15 * * * *", description="Schedule of the replication job.")
    drill_cron: str = Field(
        default="0 3 1 1,4,7,10 *", description="Schedule of the DR drill (default: quarterly)."
    )

    @field_validator("jurisdiction")
    @classmethod
    def _valid_jurisdiction(cls, value: str | None) -> str | None:
        return None if value is None else Jurisdiction.parse(value).value
