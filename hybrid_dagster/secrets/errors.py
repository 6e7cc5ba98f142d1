"""Errors of secret resolution: they name backend, path and what to do, never a value.

Correctness rule: every message is built from the reference (backend, path, key, version), the plane
and the server address only; the text of a server's or library's error is never quoted, since some
backends echo request bodies.
"""

from __future__ import annotations

from hybrid_dagster.errors import ValueFreeError


class SecretError(ValueFreeError):
    """A secret could not be resolved inside a plane.

    Example:
        >>> from hybrid_dagster.secrets import SecretRef, resolve_secret
        >>> try:
        ...     resolve_secret(SecretRef(backend="vault", path="eu-onprem/db", key="password"))
        ... except SecretError as failed:
        ...     print(failed)  # backend, path and what to do
    """


class SecretNotFound(SecretError):
    """The path, key or version does not exist in the backend."""


class SecretAccessDenied(SecretError):
    """The plane's identity may not read the path (policy or IAM denies it)."""


class SecretAuthError(SecretError):
    """The plane could not log in, or its token expired or was revoked."""


class SecretBackendUnavailable(SecretError):
    """The backend is unreachable, sealed or answered with a server error."""


class SecretConfigError(SecretError):
    """The plane's secrets settings are incomplete (e.g. a credential variable is not set)."""
