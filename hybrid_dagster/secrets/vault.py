"""Vault / OpenBao KV v2 through hvac, logged in with the plane's own identity.

Correctness rules:

- The plane logs in with its own identity: a token from a variable (``token``), an AppRole role id and
  secret id from variables (``approle``) or its Kubernetes service-account token (``kubernetes``). There
  is no fallback to any other credential.
- Tokens are renewed before they expire: a background thread renews at half the remaining TTL (and logs
  in again when the token cannot be renewed further and the method allows it); every read also checks.
  A token that expired anyway gives :class:`SecretAuthError` saying so.
- Errors are built from the reference, the mount and the address; hvac's message (which quotes the
  server's answer) is never shown.

Example:
    .. code-block:: python

        backend = VaultBackend(
            plane="eu-onprem",
            address="https://bao.eu.example.org",
            auth=VaultAuth(method="approle", role_id=os.environ["EU_ROLE_ID"],
                           secret_id=os.environ["EU_SECRET_ID"]),
        )
        backend.read(SecretRef(backend="vault", path="eu-onprem/clinical-db", key="password", version=3))
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import hvac
import hvac.exceptions
import requests

from hybrid_dagster.secrets.base import ResolvedSecret, SecretsBackend
from hybrid_dagster.secrets.errors import (
    SecretAccessDenied,
    SecretAuthError,
    SecretBackendUnavailable,
    SecretConfigError,
    SecretError,
    SecretNotFound,
)
from hybrid_dagster.secrets.ref import SecretRef
from hybrid_dagster.secrets.settings import DEFAULT_SERVICE_ACCOUNT_TOKEN

AuthMethod = Literal["token", "approle", "kubernetes"]


@dataclass(frozen=True)
class VaultAuth:
    """How a plane logs in to Vault / OpenBao (the credentials are hidden from ``repr``).

    Example:
        >>> VaultAuth(method="approle", role_id="2f1c...", secret_id="9a7e...")
        VaultAuth(method='approle', mount_point=None, role='', jwt_path='/var/run/secrets/...')
    """

    method: AuthMethod = "token"
    mount_point: str | None = None
    token: str = field(default="", repr=False)
    role_id: str = field(default="", repr=False)
    secret_id: str = field(default="", repr=False)
    role: str = ""
    jwt_path: str = DEFAULT_SERVICE_ACCOUNT_TOKEN

    @property
    def mount(self) -> str:
        return self.mount_point or self.method


@dataclass
class _TokenState:
    ttl: float = 0.0  # seconds the token was valid for when last checked; 0 = never expires
    renewable: bool = False
    checked_at: float = field(default_factory=time.monotonic)

    @property
    def expires_at(self) -> float | None:
        return self.checked_at + self.ttl if self.ttl > 0 else None

    def due(self, now: float) -> bool:
        return self.ttl > 0 and now >= self.checked_at + self.ttl / 2


class VaultBackend(SecretsBackend):
    """KV v2 secrets of a Vault or OpenBao server, read with the plane's identity.

    Example:
        .. code-block:: python

            backend = VaultBackend(plane="eu-onprem", address="http://127.0.0.1:8200",
                                   auth=VaultAuth(method="token", token=os.environ["VAULT_TOKEN"]))
            secret = backend.read(SecretRef(backend="vault", path="eu-onprem/db", key="password"))
    """

    kind = "vault"

    def __init__(
        self,
        *,
        plane: str,
        address: str,
        auth: VaultAuth,
        mount_point: str = "secret",
        path_prefix: str = "",
        renew: bool = True,
        verify: bool | str = True,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(plane=plane, path_prefix=path_prefix)
        self.address = address.rstrip("/")
        self.auth = auth
        self.mount_point = mount_point
        self.renew = renew
        self.renewals = 0
        self.logins = 0
        self._client = hvac.Client(url=self.address, verify=verify, timeout=timeout)
        self._lock = threading.RLock()
        self._state = _TokenState()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._role_name = ""
        self._display_name = ""
        self._login()
        if renew:
            self._thread = threading.Thread(target=self._renew_loop, name=f"vault-renew-{plane}", daemon=True)
            self._thread.start()

    # -- identity -----------------------------------------------------------------------------------

    @property
    def identity(self) -> str:
        if self.auth.method == "approle":
            return f"vault-approle:{self._role_name or self.plane}"
        if self.auth.method == "kubernetes":
            return f"vault-kubernetes:{self.auth.role}"
        return f"vault-token:{self._display_name or self.plane}"

    @property
    def location(self) -> str:
        return self.address

    def _login(self) -> None:
        """Log in (or adopt the token) and record its TTL."""
        with self._lock:
            try:
                if self.auth.method == "token":
                    if not self.auth.token:
                        raise SecretConfigError(
                            f"vault at {self.address}, plane {self.plane!r}: no token - name the variable "
                            "holding the plane's own token (SecretsConfig.token_env) "
                            "or use approle / kubernetes auth"
                        )
                    self._client.token = self.auth.token
                elif self.auth.method == "approle":
                    if not (self.auth.role_id and self.auth.secret_id):
                        raise SecretConfigError(
                            f"vault at {self.address}, plane {self.plane!r}: AppRole login needs role id and "
                            "a secret id - set the variables named by SecretsConfig.role_id_env and "
                            "secret_id_env in the plane"
                        )
                    self._client.auth.approle.login(
                        role_id=self.auth.role_id, secret_id=self.auth.secret_id, mount_point=self.auth.mount
                    )
                else:
                    jwt = self._service_account_token()
                    self._client.auth.kubernetes.login(
                        role=self.auth.role, jwt=jwt, mount_point=self.auth.mount
                    )
                self.logins += 1
                self._refresh_state()
            except SecretError:
                raise
            except Exception as error:
                raise self._login_error(error) from None

    def _service_account_token(self) -> str:
        if not self.auth.role:
            raise SecretConfigError(
                f"vault at {self.address}, plane {self.plane!r}: kubernetes auth needs the role name "
                "(SecretsConfig.kubernetes_role)"
            )
        try:
            return Path(self.auth.jwt_path).read_text().strip()
        except OSError:
            raise SecretConfigError(
                f"vault at {self.address}, plane {self.plane!r}: no service-account token at "
                f"{self.auth.jwt_path} - run the work in a pod with the plane's service account or set "
                "SecretsConfig.kubernetes_token_path"
            ) from None

    def _refresh_state(self) -> None:
        data = self._client.auth.token.lookup_self()["data"]
        meta = data.get("meta") or {}
        self._role_name = str(meta.get("role_name") or meta.get("role") or "")
        self._display_name = str(data.get("display_name") or "")
        ttl = float(data.get("ttl") or 0)
        if ttl <= 0 and data.get("expire_time"):
            ttl = 0.001  # expires within the second; 0 without expire_time means a token that never expires
        self._state = _TokenState(ttl=ttl, renewable=bool(data.get("renewable")))

    def _login_error(self, error: Exception) -> SecretError:
        what = f"{self.auth.method} login of plane {self.plane!r} at {self.address}"
        what += f" (auth mount {self.auth.mount})"
        if isinstance(error, requests.exceptions.RequestException):
            return SecretBackendUnavailable(f"{what}: the server cannot be reached - check the address")
        if isinstance(error, hvac.exceptions.VaultDown):
            return SecretBackendUnavailable(f"{what}: the server is sealed - unseal it (bao operator unseal)")
        if isinstance(error, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized):
            return SecretAuthError(
                f"{what} was refused: the credential is invalid, expired or revoked - issue a new one "
                "(hybrid-dagster access apply creates the plane's roles)"
            )
        if isinstance(error, hvac.exceptions.InvalidRequest | hvac.exceptions.InvalidPath):
            return SecretAuthError(
                f"{what} was refused ({type(error).__name__}): check that the auth method is enabled at "
                "that mount and the role exists"
            )
        return SecretBackendUnavailable(f"{what} failed ({type(error).__name__}): check the server's log")

    # -- renewal ------------------------------------------------------------------------------------

    def ensure_token(self) -> None:
        """Renew the token when half its TTL has passed; log in again when it cannot be renewed.

        Example:
            >>> backend.ensure_token()  # called before every read and by the renewal thread
        """
        with self._lock:
            now = time.monotonic()
            if not self._state.due(now):
                return
            expires_at = self._state.expires_at
            if self._state.renewable and self.renew:
                try:
                    answer = self._client.auth.token.renew_self()
                    lease = float(answer["auth"]["lease_duration"])
                    self._state = _TokenState(ttl=lease, renewable=bool(answer["auth"]["renewable"]))
                    self.renewals += 1
                    if lease > 1 or self.auth.method == "token":
                        return  # renewed; near its max TTL a token of a login method logs in again
                except Exception:  # fall through to a fresh login or the expiry error
                    pass
            if self.auth.method != "token":
                self._login()
                return
            if expires_at is not None and now >= expires_at:
                raise self._expired()

    def _expired(self) -> SecretAuthError:
        return SecretAuthError(
            f"the vault token of plane {self.plane!r} at {self.address} expired (renewal "
            f"{'on' if self.renew else 'off'}, "
            f"token {'renewable' if self._state.renewable else 'not renewable'}): "
            "give the plane a renewable token with a longer max TTL, or use approle / kubernetes auth, "
            "which log in again"
        )

    def _renew_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                state = self._state
            wait = max(0.2, state.ttl / 4) if state.ttl > 0 else 30.0
            if self._stop.wait(wait):
                return
            try:
                self.ensure_token()
            except SecretError:
                return  # the next read raises the same, clear error

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._client.adapter.close()

    # -- reads --------------------------------------------------------------------------------------

    def read(self, ref: SecretRef) -> ResolvedSecret:
        path = self.full_path(ref)
        version = _kv_version(ref, self)
        self.ensure_token()
        with self._lock:
            try:
                answer = self._client.secrets.kv.v2.read_secret_version(
                    path=path, version=version, mount_point=self.mount_point, raise_on_deleted_version=True
                )
            except Exception as error:
                raise self._read_error(error, ref) from None
        body: dict[str, Any] = answer["data"]
        return self.pick_key(ref, dict(body.get("data") or {}), str(body["metadata"]["version"]))

    def _read_error(self, error: Exception, ref: SecretRef) -> SecretError:
        where = f"vault secret {self.mount_point}/{self.full_path(ref)}"
        if ref.version is not None:
            where += f" version {ref.version}"
        where += f" at {self.address} (plane {self.plane!r}, {self.identity})"
        if isinstance(error, requests.exceptions.RequestException):
            return SecretBackendUnavailable(f"{where}: the server cannot be reached - check the address")
        if isinstance(error, hvac.exceptions.VaultDown):
            return SecretBackendUnavailable(
                f"{where}: the server is sealed - unseal it (bao operator unseal)"
            )
        if isinstance(error, hvac.exceptions.InvalidPath):
            return SecretNotFound(
                f"{where} does not exist (or that version was deleted): write it "
                f"(bao kv put -mount={self.mount_point} {self.full_path(ref)} ...) or fix the SecretRef"
            )
        if isinstance(error, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized):
            if not self._token_alive():
                expires_at = self._state.expires_at
                if expires_at is not None and time.monotonic() >= expires_at:
                    return self._expired()
                return SecretAuthError(f"{where}: the plane's token is invalid or was revoked - log in again")
            return SecretAccessDenied(
                f"{where}: permission denied by the plane's policy - read only this plane's paths, or grant "
                "the path in the access tiers (hybrid-dagster access render / apply)"
            )
        return SecretBackendUnavailable(f"{where}: the server failed ({type(error).__name__}) - see its log")

    def _token_alive(self) -> bool:
        try:
            self._client.auth.token.lookup_self()
        except Exception:
            return False
        return True


def _kv_version(ref: SecretRef, backend: VaultBackend) -> int | None:
    if ref.version is None:
        return None
    try:
        return int(ref.version)
    except ValueError:
        raise SecretConfigError(
            f"vault secret {backend.full_path(ref)}: KV v2 versions are numbers, not {ref.version!r}"
        ) from None
