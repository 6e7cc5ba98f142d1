"""A plane's secrets settings as the plane's work reads them (the ``secrets`` part of its config).

Correctness rules:

- The settings hold addresses, mount points, role names and the *names* of environment variables that
  hold credentials (role id, secret id, token, AWS keys) - never a credential itself. The variables are
  read inside the plane, when a backend is built.
- The field names are those of ``hybrid_dagster.resources.SecretsConfig`` (a test keeps them equal); this
  model lives here so that plane code needs no resource class.

Example:
    >>> BackendSettings.model_validate({"backend": "vault", "address": "http://127.0.0.1:8200",
    ...                                 "auth_method": "approle", "role_id_env": "EU_ROLE_ID",
    ...                                 "secret_id_env": "EU_SECRET_ID"}).auth_method
    'approle'
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hybrid_dagster.secrets.ref import BackendKind

DEFAULT_SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


class BackendSettings(BaseModel):
    """Which backend a plane uses and with which identity.

    Example:
        >>> BackendSettings(backend="aws", region="us-east-1", access_key_id_env="US_CLOUD_AWS_KEY_ID",
        ...                 secret_access_key_env="US_CLOUD_AWS_SECRET_KEY").backend
        'aws'
    """

    model_config = ConfigDict(extra="ignore")

    backend: BackendKind = "env"
    address: str | None = None
    path_prefix: str = ""
    region: str | None = None
    mount_point: str = "secret"
    auth_method: Literal["token", "approle", "kubernetes"] = "token"
    auth_mount_point: str | None = None
    token_env: str | None = None
    role_id_env: str | None = None
    secret_id_env: str | None = None
    kubernetes_role: str | None = None
    kubernetes_token_path: str = DEFAULT_SERVICE_ACCOUNT_TOKEN
    access_key_id_env: str | None = None
    secret_access_key_env: str | None = None
    renew_token: bool = Field(default=True)
