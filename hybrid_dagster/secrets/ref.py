"""A reference to one secret: what crosses Dagster Pipes instead of the value.

Correctness rules:

- A :class:`SecretRef` names a backend, a path, an optional key and an optional version, never a value;
  it is what the orchestrator puts into run config, Pipes extras and job specs.
- Its text form (``str(ref)``) is what errors and the audit log show.

Example:
    >>> ref = SecretRef(backend="vault", path="eu-onprem/clinical-db", key="password", version=2)
    >>> str(ref)
    'vault:eu-onprem/clinical-db#password@2'
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

BackendKind = Literal["env", "vault", "aws"]
"""The backend kinds a plane can name (``SecretsConfig.backend``)."""


class SecretRef(BaseModel):
    """Where a secret lives: backend, path, key and version. Never the value.

    ``path`` is relative to the plane's ``path_prefix`` for ``vault`` (a KV v2 path under the mount) and
    ``aws`` (a Secrets Manager secret name); for ``env`` it is the environment variable's name.
    ``key`` picks one field of a KV v2 secret or of a JSON ``SecretString``; ``version`` is a KV v2
    version number or a Secrets Manager version id (default: the current one).

    Example:
        >>> SecretRef(backend="aws", path="us-cloud/claims-api", key="token")
        SecretRef(backend='aws', path='us-cloud/claims-api', key='token', version=None)
    """

    model_config = ConfigDict(frozen=True)

    backend: BackendKind = Field(description="Backend kind: env, vault or aws (the plane's configured one).")
    path: str = Field(min_length=1, description="Secret path (vault, aws) or variable name (env).")
    key: str | None = Field(default=None, description="Field of the secret; empty for a plain string.")
    version: int | str | None = Field(
        default=None, description="KV v2 version number or AWS version id; empty for the current version."
    )

    def __str__(self) -> str:
        text = f"{self.backend}:{self.path}"
        if self.key:
            text += f"#{self.key}"
        if self.version is not None:
            text += f"@{self.version}"
        return text
