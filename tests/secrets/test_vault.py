"""Vault / OpenBao KV v2 through hvac, against a real OpenBao dev server (or VAULT_ADDR)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybrid_dagster.secrets import (
    SecretAccessDenied,
    SecretAuthError,
    SecretBackendUnavailable,
    SecretConfigError,
    SecretNotFound,
    SecretRef,
    VaultAuth,
    VaultBackend,
)
from hybrid_dagster.testing.openbao import OpenBaoServer, start_openbao_dev
from tests.secrets.vault_setup import approle, read_policy, unique

VALUE_1 = "first-Pw-7f3b9c"
VALUE_2 = "second-Pw-2d81ea"


@pytest.fixture
def plane_path(openbao: OpenBaoServer) -> str:
    path = f"{unique('eu-onprem')}/clinical-db"
    root = openbao.root_client()
    root.secrets.kv.v2.create_or_update_secret(path=path, secret={"password": VALUE_1}, mount_point="secret")
    root.secrets.kv.v2.create_or_update_secret(
        path=path, secret={"password": VALUE_2, "user": "cdc"}, mount_point="secret"
    )
    return path


@pytest.fixture
def approle_backend(openbao: OpenBaoServer, plane_path: str) -> Iterator[VaultBackend]:
    name = unique("eu-reader")
    role_id, secret_id = approle(openbao.root_client(), name, read_policy(plane_path))
    backend = VaultBackend(
        plane="eu-onprem",
        address=openbao.address,
        auth=VaultAuth(method="approle", role_id=role_id, secret_id=secret_id),
    )
    yield backend
    backend.close()


def test_reads_kv_v2_versions_with_the_planes_approle(approle_backend: VaultBackend, plane_path: str) -> None:
    current = approle_backend.read(SecretRef(backend="vault", path=plane_path, key="password"))
    assert (current.value, current.version) == (VALUE_2, "2")
    first = approle_backend.read(SecretRef(backend="vault", path=plane_path, key="password", version=1))
    assert (first.value, first.version) == (VALUE_1, "1")
    assert VALUE_1 not in repr(first)
    assert approle_backend.identity.startswith("vault-approle:eu-reader-")


def test_other_paths_are_denied_and_errors_never_show_a_value(
    openbao: OpenBaoServer, approle_backend: VaultBackend, plane_path: str
) -> None:
    other = f"{unique('us-cloud')}/claims"
    openbao.root_client().secrets.kv.v2.create_or_update_secret(
        path=other, secret={"token": VALUE_1}, mount_point="secret"
    )
    with pytest.raises(SecretAccessDenied) as denied:
        approle_backend.read(SecretRef(backend="vault", path=other, key="token"))
    message = str(denied.value)
    assert f"secret/{other}" in message and openbao.address in message and "permission denied" in message
    assert VALUE_1 not in message

    with pytest.raises(SecretNotFound, match="has no field 'pin'") as no_key:
        approle_backend.read(SecretRef(backend="vault", path=plane_path, key="pin"))
    assert "password" in str(no_key.value) and VALUE_2 not in str(no_key.value)
    with pytest.raises(SecretNotFound, match="version 9"):
        approle_backend.read(SecretRef(backend="vault", path=plane_path, key="password", version=9))


def test_a_missing_path_says_how_to_create_it(openbao: OpenBaoServer) -> None:
    backend = VaultBackend(
        plane="eu-onprem", address=openbao.address, auth=VaultAuth(token=openbao.root_token)
    )
    try:
        with pytest.raises(SecretNotFound, match=r"does not exist .* write it \(bao kv put -mount=secret"):
            backend.read(SecretRef(backend="vault", path="nowhere/at-all", key="password"))
    finally:
        backend.close()


def test_bad_credentials_and_unreachable_servers_are_named(openbao: OpenBaoServer) -> None:
    with pytest.raises(SecretAuthError, match=r"approle login of plane 'eu-onprem'.*refused"):
        VaultBackend(
            plane="eu-onprem",
            address=openbao.address,
            auth=VaultAuth(method="approle", role_id="no-such-role", secret_id="wrong"),
        )
    with pytest.raises(SecretConfigError, match="needs role id and"):
        VaultBackend(plane="eu-onprem", address=openbao.address, auth=VaultAuth(method="approle"))
    with pytest.raises(SecretBackendUnavailable, match="cannot be reached"):
        VaultBackend(plane="eu-onprem", address="http://127.0.0.1:9", auth=VaultAuth(token="t"), timeout=2)


def test_a_sealed_server_says_to_unseal_it(tmp_path: Path) -> None:
    server = start_openbao_dev(tmp_path / "bao.log")
    try:
        root = server.root_client()
        root.secrets.kv.v2.create_or_update_secret(path="p/db", secret={"k": VALUE_1}, mount_point="secret")
        backend = VaultBackend(
            plane="eu-onprem", address=server.address, auth=VaultAuth(token=server.root_token), renew=False
        )
        root.sys.seal()
        with pytest.raises(SecretBackendUnavailable, match="sealed - unseal it") as sealed:
            backend.read(SecretRef(backend="vault", path="p/db", key="k"))
        assert VALUE_1 not in str(sealed.value)
        backend.close()
    finally:
        server.stop()


def short_token(openbao: OpenBaoServer, path: str, *, ttl: str) -> str:
    root = openbao.root_client()
    name = unique("short")
    root.sys.create_or_update_policy(name, read_policy(path))
    answer = root.auth.token.create(policies=[name], ttl=ttl, explicit_max_ttl="120s", renewable=True)
    return str(answer["auth"]["client_token"])


def test_a_short_ttl_token_is_renewed_during_a_long_job(openbao: OpenBaoServer, plane_path: str) -> None:
    backend = VaultBackend(
        plane="eu-onprem",
        address=openbao.address,
        auth=VaultAuth(token=short_token(openbao, plane_path, ttl="2s")),
    )
    try:
        ref = SecretRef(backend="vault", path=plane_path, key="password")
        assert backend.read(ref).value == VALUE_2
        time.sleep(5)  # the job works for 2.5 token lifetimes without reading
        assert backend.read(ref).value == VALUE_2
        assert backend.renewals >= 2
    finally:
        backend.close()


def test_an_expired_token_gives_a_clear_error(openbao: OpenBaoServer, plane_path: str) -> None:
    backend = VaultBackend(
        plane="eu-onprem",
        address=openbao.address,
        auth=VaultAuth(token=short_token(openbao, plane_path, ttl="2s")),
        renew=False,
    )
    try:
        time.sleep(3.5)
        with pytest.raises(SecretAuthError, match=r"token of plane 'eu-onprem' .* expired") as expired:
            backend.read(SecretRef(backend="vault", path=plane_path, key="password"))
        assert "renewal off" in str(expired.value)
    finally:
        backend.close()
