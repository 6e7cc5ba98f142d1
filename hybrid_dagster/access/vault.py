"""Vault / OpenBao artifacts of the access tiers: one policy, one AppRole and one Kubernetes-auth role per
tier of each plane.

Correctness rules: a policy grants paths under its own plane's secrets prefix only, one stanza per
classification the tier lists (KV v2 ``data/`` and ``metadata/`` paths); nothing else - in particular no
wildcard above the plane's prefix. The AppRole and the Kubernetes-auth role carry exactly that policy.

Example:
    >>> print(policy_hcl(access.role("eu-onprem", "reader"), kv_mount="secret"))  # doctest: +SKIP
    # hd-eu-onprem-reader: tier reader of plane eu-onprem (EU) - public, internal
    path "secret/data/eu-onprem/public/*" {
      capabilities = ["read"]
    }
    ...
"""

from __future__ import annotations

from typing import Any

from hybrid_dagster.access.model import AccessTiers, PlaneRole

DATA_CAPABILITIES = {
    "read": ["read"],
    "write": ["read"],
    "admin": ["create", "read", "update", "patch", "delete"],
}
METADATA_CAPABILITIES = {
    "read": ["read", "list"],
    "write": ["read", "list"],
    "admin": ["read", "list", "delete"],
}


def _stanza(path: str, capabilities: list[str]) -> str:
    quoted = ", ".join(f'"{c}"' for c in capabilities)
    return f'path "{path}" {{\n  capabilities = [{quoted}]\n}}\n'


def policy_hcl(role: PlaneRole, *, kv_mount: str) -> str:
    """The HCL policy of ``role``: its plane's paths of the classifications its tier lists.

    Example:
        >>> policy_hcl(access.role("eu-onprem", "admin"), kv_mount="secret")  # doctest: +SKIP
    """
    tier, plane = role.tier, role.plane
    classes = ", ".join(c.value for c in tier.classifications)
    text = f"# {role.name}: tier {tier.name} of plane {plane.plane} ({plane.jurisdiction}) - {classes}\n"
    for classification in tier.classifications:
        base = plane.secrets_path(classification)
        text += _stanza(f"{kv_mount}/data/{base}/*", DATA_CAPABILITIES[tier.capability])
        text += _stanza(f"{kv_mount}/metadata/{base}/*", METADATA_CAPABILITIES[tier.capability])
        if tier.capability == "admin":
            for verb in ("delete", "undelete", "destroy"):
                text += _stanza(f"{kv_mount}/{verb}/{base}/*", ["update"])
    return text


def approle_settings(role: PlaneRole, access: AccessTiers) -> dict[str, Any]:
    """The AppRole of ``role`` (arguments of hvac's ``create_or_update_approle``).

    Example:
        >>> approle_settings(access.role("eu-onprem", "engineer"), access)["token_policies"]  # doctest: +SKIP
        ['hd-eu-onprem-engineer']
    """
    return {
        "token_policies": [role.name],
        "token_ttl": role.tier.token_ttl,
        "token_max_ttl": role.tier.token_max_ttl,
        "secret_id_ttl": access.secret_id_ttl,
    }


def kubernetes_role_settings(role: PlaneRole) -> dict[str, Any]:
    """The Kubernetes-auth role of ``role``: the tier's service account in the plane's namespace.

    Example:
        >>> kubernetes_role_settings(access.role("eu-onprem", "engineer"))["bound_service_account_names"]
        ['hd-engineer']
    """
    return {
        "bound_service_account_names": [role.service_account],
        "bound_service_account_namespaces": [role.plane.namespace],
        "policies": [role.name],
        "ttl": role.tier.token_ttl,
        "max_ttl": role.tier.token_max_ttl,
    }


def render_vault(access: AccessTiers) -> dict[str, dict[str, Any]]:
    """Every Vault artifact: ``{"policies": {name: hcl}, "approles": {...}, "kubernetes_roles": {...}}``.

    Example:
        >>> sorted(render_vault(access)["policies"])[:1]  # doctest: +SKIP
        ['hd-eu-onprem-admin']
    """
    return {
        "policies": {r.name: policy_hcl(r, kv_mount=access.kv_mount) for r in access.roles()},
        "approles": {r.name: approle_settings(r, access) for r in access.roles()},
        "kubernetes_roles": {r.name: kubernetes_role_settings(r) for r in access.roles()},
    }
