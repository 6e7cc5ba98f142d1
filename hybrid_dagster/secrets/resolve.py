"""Resolving secret references inside a plane: the plane's backend, masking and the audit trail.

Correctness rules:

- Resolution happens in the plane's work process only; the orchestrator hands over
  :class:`~hybrid_dagster.secrets.ref.SecretRef` objects.
- A reference must name the plane's own backend kind; the plane's identity (from its settings and the
  variables they name) is the only one used.
- Before a value is returned it is registered with the process's masker and masking is installed, so
  no log line, ``print`` or traceback of the process shows it.
- Every read - allowed or refused - is appended to the audit log (kind ``secret.read``: who, run, plane,
  backend, path, key, version, outcome; never the value). The log is the one named by
  ``HYBRID_DAGSTER_AUDIT_URL`` in the plane, else the default one under ``DAGSTER_HOME`` when that is set
  (:class:`hybrid_dagster.audit.AuditLog`); when the append fails, the value is not returned.

Example:
    .. code-block:: python

        from hybrid_dagster.secrets import SecretRef, resolve_secret

        # inside plane work started by DataPlane.run
        password = resolve_secret(SecretRef(backend="vault", path="eu-onprem/clinical-db", key="password"))
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from dagster_pipes import PipesContext

from hybrid_dagster.audit import AuditLog
from hybrid_dagster.audit.log import AUDIT_URL_ENV
from hybrid_dagster.secrets.aws import AwsSecretsManagerBackend
from hybrid_dagster.secrets.base import ResolvedSecret, SecretsBackend
from hybrid_dagster.secrets.env import EnvBackend
from hybrid_dagster.secrets.errors import SecretConfigError, SecretError
from hybrid_dagster.secrets.masking import MASKER, install_masking
from hybrid_dagster.secrets.ref import SecretRef
from hybrid_dagster.secrets.settings import BackendSettings
from hybrid_dagster.secrets.vault import VaultAuth, VaultBackend

PLANE_CONFIG_ENV = "HYBRID_DAGSTER_PLANE"
"""Where DataPlane.run puts the plane's (secret-free) configuration (same name as in resources)."""

READ_KIND = "secret.read"
"""Audit record kind of a secret read."""


class AuditSink(Protocol):
    """What secret resolution needs from an audit log (:class:`hybrid_dagster.audit.AuditLog` has it).

    Example:
        >>> audit = AuditLog("sqlite:////srv/audit/hybrid_audit.db")
        >>> PlaneSecrets(plane="eu-onprem", settings=BackendSettings(), audit=audit)
    """

    def append(
        self,
        kind: str,
        *,
        actor: str,
        plane: str | None = None,
        run_id: str | None = None,
        details: Mapping[str, Any] = ...,
    ) -> Any: ...


def build_backend(
    plane: str, settings: BackendSettings, environ: Mapping[str, str] | None = None
) -> SecretsBackend:
    """The backend ``settings`` name, logged in with the identity whose credentials are in ``environ``.

    Example:
        >>> build_backend("eu-onprem", BackendSettings(backend="env")).kind
        'env'
    """
    env = environ if environ is not None else os.environ
    if settings.backend == "env":
        return EnvBackend(plane=plane, path_prefix=settings.path_prefix, environ=env)
    if settings.backend == "aws":
        return AwsSecretsManagerBackend(
            plane=plane,
            region=settings.region,
            endpoint_url=settings.address,
            access_key_id=_variable(env, settings.access_key_id_env, plane, "access_key_id_env"),
            secret_access_key=_variable(env, settings.secret_access_key_env, plane, "secret_access_key_env"),
            path_prefix=settings.path_prefix,
        )
    address = settings.address or env.get("VAULT_ADDR")
    if not address:
        raise SecretConfigError(
            f"plane {plane!r} uses the vault backend but gives no address: set SecretsConfig.address "
            "(or VAULT_ADDR in the plane)"
        )
    auth = VaultAuth(
        method=settings.auth_method,
        mount_point=settings.auth_mount_point,
        token=(_variable(env, settings.token_env, plane, "token_env") or "")
        if settings.auth_method == "token"
        else "",
        role_id=_variable(env, settings.role_id_env, plane, "role_id_env") or "",
        secret_id=_variable(env, settings.secret_id_env, plane, "secret_id_env") or "",
        role=settings.kubernetes_role or "",
        jwt_path=settings.kubernetes_token_path,
    )
    return VaultBackend(
        plane=plane,
        address=address,
        auth=auth,
        mount_point=settings.mount_point,
        path_prefix=settings.path_prefix,
        renew=settings.renew_token,
    )


def _variable(env: Mapping[str, str], name: str | None, plane: str, field: str) -> str | None:
    if not name:
        return None
    value = env.get(name)
    if not value:
        raise SecretConfigError(
            f"plane {plane!r}: variable {name} (SecretsConfig.{field}) is not set in its environment: "
            "set it where the plane's work runs (a Kubernetes secret, the host's environment)"
        )
    return value


def audit_from_env(environ: Mapping[str, str] | None = None) -> AuditSink | None:
    """The plane's audit log: ``HYBRID_DAGSTER_AUDIT_URL``, else the default one under ``DAGSTER_HOME``,
    else None (reads are then not recorded).

    Example:
        >>> audit_from_env({"HYBRID_DAGSTER_AUDIT_URL": "sqlite:////srv/audit/hybrid_audit.db"})
    """
    env = environ if environ is not None else os.environ
    url = env.get(AUDIT_URL_ENV)
    if url:
        return AuditLog(url)
    if env.get("DAGSTER_HOME"):
        return AuditLog()
    return None


class PlaneSecrets:
    """The secrets of one plane, resolved in the plane's process: masked and audited.

    Example:
        .. code-block:: python

            secrets = PlaneSecrets(plane="eu-onprem", settings=BackendSettings(backend="env"), run_id="r1")
            password = secrets.resolve(SecretRef(backend="env", path="CLINICAL_DB_PASSWORD"))
    """

    def __init__(
        self,
        *,
        plane: str,
        settings: BackendSettings,
        run_id: str | None = None,
        audit: AuditSink | None = None,
        environ: Mapping[str, str] | None = None,
        backend: SecretsBackend | None = None,
    ) -> None:
        self.plane = plane
        self.settings = settings
        self.run_id = run_id
        self.audit = audit
        self._audit_from_env = False
        self.reads = 0
        self._environ = environ
        self._backend = backend
        self._lock = threading.Lock()

    @classmethod
    def from_plane_config(
        cls, config: Mapping[str, Any], *, run_id: str | None = None, audit: AuditSink | None = None
    ) -> PlaneSecrets:
        """From a plane's configuration (``DataPlane.to_config()``), audited where the env says."""
        secrets = cls(
            plane=str(config["name"]),
            settings=BackendSettings.model_validate(config.get("secrets") or {}),
            run_id=run_id,
            audit=audit,
        )
        secrets._audit_from_env = audit is None  # opened on the first read, not before
        return secrets

    @property
    def backend(self) -> SecretsBackend:
        with self._lock:
            if self._backend is None:
                self._backend = build_backend(self.plane, self.settings, self._environ)
            return self._backend

    def resolve(self, ref: SecretRef) -> str:
        """The value of ``ref``, read with the plane's identity, masked in this process, audited."""
        return self.read(ref).value

    def read(self, ref: SecretRef) -> ResolvedSecret:
        """Like :meth:`resolve`, with the version that was read."""
        if ref.backend != self.settings.backend:
            raise SecretConfigError(
                f"secret {ref} names the {ref.backend} backend, but plane {self.plane!r} uses "
                f"{self.settings.backend}: reference the plane's own backend"
            )
        install_masking()
        backend = self.backend
        try:
            secret = backend.read(ref)
        except SecretError as error:
            self._audit(backend, ref, None, outcome=type(error).__name__)
            raise
        MASKER.add(secret.value)
        self._audit(backend, ref, secret.version, outcome="ok")
        self.reads += 1
        return secret

    def _audit(self, backend: SecretsBackend, ref: SecretRef, version: str | None, *, outcome: str) -> None:
        if self.audit is None and self._audit_from_env:
            self.audit, self._audit_from_env = audit_from_env(), False
        if self.audit is None:
            return
        self.audit.append(
            READ_KIND,
            actor=backend.identity,
            plane=self.plane,
            run_id=self.run_id,
            details={
                "backend": ref.backend,
                "location": backend.location,
                "path": backend.full_path(ref),
                "field": ref.key,
                "requested_version": None if ref.version is None else str(ref.version),
                "version": version,
                "outcome": outcome,
            },
        )

    def close(self) -> None:
        with self._lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None
            close_audit = getattr(self.audit, "close", None)
            if callable(close_audit):
                close_audit()


_process_secrets: PlaneSecrets | None = None
_process_lock = threading.Lock()


def plane_secrets() -> PlaneSecrets:
    """This plane process's :class:`PlaneSecrets`, from the configuration DataPlane.run passed in.

    Example:
        >>> plane_secrets().plane
        'eu-onprem'
    """
    global _process_secrets
    with _process_lock:
        if _process_secrets is None:
            raw = os.environ.get(PLANE_CONFIG_ENV)
            if not raw:
                raise SecretConfigError(
                    f"{PLANE_CONFIG_ENV} is not set: secrets are resolved only inside plane work started "
                    "by DataPlane.run (or give PlaneSecrets a plane and settings)"
                )
            _process_secrets = PlaneSecrets.from_plane_config(json.loads(raw), run_id=pipes_run_id())
        return _process_secrets


def use_plane_secrets(secrets: PlaneSecrets | None) -> None:
    """Make ``secrets`` this process's plane secrets (PlaneWork does so), or forget them (None)."""
    global _process_secrets
    with _process_lock:
        _process_secrets = secrets


def resolve_secret(ref: SecretRef) -> str:
    """Resolve ``ref`` with this plane's backend and identity (inside plane work only).

    Example:
        >>> resolve_secret(SecretRef(backend="vault", path="eu-onprem/clinical-db", key="password"))
    """
    return plane_secrets().resolve(ref)


def pipes_run_id() -> str | None:
    """The Dagster run id when this process runs under Dagster Pipes, else None."""
    if PipesContext.is_initialized():
        return PipesContext.get().run_id
    return None
