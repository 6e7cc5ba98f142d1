"""The one shape every secrets backend has.

Correctness rules:

- ``read`` returns the value and the version actually read; it raises a :class:`SecretError` subclass
  whose message names backend, path and what to do, and never quotes the server's answer.
- A backend reads with the plane's own identity (``identity`` says which, for the audit log); it never
  falls back to another credential.
- The value never appears in ``repr``: :class:`ResolvedSecret` hides it.

Example:
    .. code-block:: python

        backend = EnvBackend(plane="eu-onprem")
        secret = backend.read(SecretRef(backend="env", path="CLINICAL_DB_PASSWORD"))
        secret.value  # the string; repr(secret) does not show it
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

from hybrid_dagster.secrets.errors import SecretNotFound
from hybrid_dagster.secrets.ref import BackendKind, SecretRef


@dataclass(frozen=True)
class ResolvedSecret:
    """A value read from a backend and the version it came from (``repr`` hides the value).

    Example:
        >>> ResolvedSecret(value="s3cr3t", version="2")
        ResolvedSecret(version='2')
    """

    value: str = field(repr=False)
    version: str | None = None


class SecretsBackend(ABC):
    """Base of the env, vault and aws backends.

    Example:
        .. code-block:: python

            class MyBackend(SecretsBackend):
                kind = "env"

                def read(self, ref: SecretRef) -> ResolvedSecret: ...
    """

    kind: ClassVar[BackendKind]

    def __init__(self, *, plane: str, path_prefix: str = "") -> None:
        self.plane = plane
        self.path_prefix = path_prefix.strip("/")

    @abstractmethod
    def read(self, ref: SecretRef) -> ResolvedSecret:
        """Read ``ref`` with the plane's identity."""

    @property
    @abstractmethod
    def identity(self) -> str:
        """Who reads: the plane's role, service account or IAM principal (for the audit log)."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the backend is (an address or 'environment'), for error messages."""

    def full_path(self, ref: SecretRef) -> str:
        """``ref.path`` under the plane's ``path_prefix``."""
        path = ref.path.strip("/")
        return f"{self.path_prefix}/{path}" if self.path_prefix else path

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release connections and stop background work (token renewal)."""

    def pick_key(self, ref: SecretRef, data: dict[str, object] | str, version: str | None) -> ResolvedSecret:
        """The ``ref.key`` field of ``data`` (a mapping, or a JSON object string), or the whole string."""
        if ref.key is None:
            if isinstance(data, str):
                return ResolvedSecret(data, version)
            raise SecretNotFound(
                f"{self.kind} secret {self.full_path(ref)} at {self.location} holds several fields "
                f"({', '.join(sorted(data))}): name one with SecretRef(key=...)"
            )
        if isinstance(data, str):
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise SecretNotFound(
                    f"{self.kind} secret {self.full_path(ref)} at {self.location} is a plain string, not a "
                    f"JSON object with field {ref.key!r}: drop key= from the SecretRef or store JSON"
                ) from None
            data = parsed
        if ref.key not in data:
            raise SecretNotFound(
                f"{self.kind} secret {self.full_path(ref)} at {self.location} has no field {ref.key!r} "
                f"(fields: {', '.join(sorted(data)) or 'none'}): fix the SecretRef or add the field"
            )
        value = data[ref.key]
        return ResolvedSecret(value if isinstance(value, str) else json.dumps(value), version)
