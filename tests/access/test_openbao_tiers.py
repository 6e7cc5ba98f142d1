"""The rendered tiers on a real OpenBao: apply is idempotent and shows its diff; logged in as each tier
(AppRole, and Kubernetes auth through a TokenReview test server), every allowed read succeeds and every
other plane's path - and every classification above the tier - is denied."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_dagster.access import AccessTiers, apply_vault, plan_vault
from hybrid_dagster.residency import Classification
from hybrid_dagster.secrets import SecretAccessDenied, SecretAuthError, SecretRef, VaultAuth, VaultBackend
from hybrid_dagster.testing.openbao import OpenBaoServer
from tests.access.declaration import declaration
from tests.fixtures.tokenreview import TokenReviewTestServer


def seed(openbao: OpenBaoServer, access: AccessTiers) -> None:
    root = openbao.root_client()
    for plane in access.planes:
        for classification in Classification:
            root.secrets.kv.v2.create_or_update_secret(
                path=f"{plane.secrets_path(classification)}/db",
                secret={"password": f"{plane.plane}-{classification.value}-pw"},
                mount_point="secret",
            )


def check_reads(backend: VaultBackend, access: AccessTiers, plane: str, tier: str) -> None:
    role = access.role(plane, tier)
    for place in access.planes:
        for classification in Classification:
            ref = SecretRef(backend="vault", path=f"{place.secrets_path(classification)}/db", key="password")
            if place.plane == plane and classification in role.tier.classifications:
                assert backend.read(ref).value == f"{plane}-{classification.value}-pw"
            else:
                with pytest.raises(SecretAccessDenied, match="permission denied"):
                    backend.read(ref)


def test_apply_shows_the_diff_then_is_idempotent(openbao: OpenBaoServer) -> None:
    access = declaration()
    root = openbao.root_client()
    planned = plan_vault(root, access)
    assert {str(c).splitlines()[0] for c in planned} >= {
        f"+ policy hd-{access.planes[0].plane}-reader",
        f"+ approle hd-{access.planes[1].plane}-admin",
    }
    assert apply_vault(root, access) == planned
    assert plan_vault(root, access) == []
    assert apply_vault(root, access) == []

    changed = access.model_copy(
        update={"tiers": [access.tiers[0].model_copy(update={"token_ttl": "30m"}), *access.tiers[1:]]}
    )
    drift = [str(c) for c in plan_vault(root, changed)]
    assert f"~ approle hd-{access.planes[0].plane}-reader\n    token_ttl: 3600 -> 1800" in drift


@pytest.mark.parametrize("tier", ["reader", "engineer", "admin"])
def test_each_tier_reads_its_own_plane_and_is_denied_elsewhere(openbao: OpenBaoServer, tier: str) -> None:
    access = declaration()
    root = openbao.root_client()
    apply_vault(root, access, kubernetes=False)
    seed(openbao, access)
    for plane in access.planes:
        name = access.role(plane.plane, tier).name
        role_id = root.auth.approle.read_role_id(name)["data"]["role_id"]
        secret_id = root.auth.approle.generate_secret_id(name)["data"]["secret_id"]
        backend = VaultBackend(
            plane=plane.plane,
            address=openbao.address,
            auth=VaultAuth(method="approle", role_id=role_id, secret_id=secret_id),
        )
        try:
            assert backend.identity == f"vault-approle:{name}"
            check_reads(backend, access, plane.plane, tier)
        finally:
            backend.close()


def test_kubernetes_auth_logs_a_service_account_in_as_its_tier(
    openbao: OpenBaoServer, tokenreview_server: TokenReviewTestServer, tmp_path: Path
) -> None:
    access = declaration()
    access = access.model_copy(update={"kubernetes_mount": f"k8s-{access.planes[0].plane}"})
    root = openbao.root_client()
    apply_vault(root, access)
    root.auth.kubernetes.configure(
        kubernetes_host=tokenreview_server.address,
        kubernetes_ca_cert=tokenreview_server.ca_cert_pem(),
        disable_local_ca_jwt=True,
        mount_point=access.kubernetes_mount,
    )
    seed(openbao, access)
    eu = access.planes[0]
    token_file = tmp_path / "token"
    token_file.write_text(tokenreview_server.issue(eu.namespace, "hd-engineer"))
    backend = VaultBackend(
        plane=eu.plane,
        address=openbao.address,
        auth=VaultAuth(
            method="kubernetes",
            mount_point=access.kubernetes_mount,
            role=access.role(eu.plane, "engineer").name,
            jwt_path=str(token_file),
        ),
    )
    try:
        check_reads(backend, access, eu.plane, "engineer")
    finally:
        backend.close()
    assert tokenreview_server.reviews >= 1

    # a reader's service account cannot log in as the engineer role
    token_file.write_text(tokenreview_server.issue(eu.namespace, "hd-reader"))
    with pytest.raises(SecretAuthError, match="kubernetes login of plane"):
        VaultBackend(
            plane=eu.plane,
            address=openbao.address,
            auth=VaultAuth(
                method="kubernetes",
                mount_point=access.kubernetes_mount,
                role=access.role(eu.plane, "engineer").name,
                jwt_path=str(token_file),
            ),
        )
