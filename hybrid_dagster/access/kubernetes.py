"""Kubernetes RBAC of the access tiers: per plane namespace a Namespace, and per tier a ServiceAccount, a
Role and a RoleBinding, validated against the Kubernetes OpenAPI schema (``kubernetes-validate``).

Correctness rules: every object lives in (or is) the plane's own namespace - no ClusterRole, no
ClusterRoleBinding; ``read`` tiers see pods and their logs, ``write`` tiers also launch and delete the
plane's work pods and jobs (Dagster Pipes), ``admin`` tiers also manage the namespace's secrets and RBAC.

Example:
    >>> docs = kubernetes_manifests(access, "eu-onprem")  # doctest: +SKIP
    >>> [d["kind"] for d in docs][:4]  # doctest: +SKIP
    ['Namespace', 'ServiceAccount', 'Role', 'RoleBinding']
"""

from __future__ import annotations

from typing import Any

from hybrid_dagster.access.model import AccessTiers, PlaneRole
from hybrid_dagster.errors import ValueFreeError


class AccessRenderError(ValueFreeError):
    """Artifacts of the access tiers could not be rendered (a missing optional dependency)."""


KUBERNETES_VERSION = "1.30.0"
"""Schema version the manifests are validated against."""

_READ = [
    {
        "apiGroups": [""],
        "resources": ["pods", "pods/log", "events", "configmaps"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch"]},
]
_WRITE = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete", "patch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "delete", "patch"]},
]
_ADMIN = [
    {"apiGroups": [""], "resources": ["secrets", "serviceaccounts"], "verbs": ["*"]},
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": ["*"]},
]
RULES = {"read": _READ, "write": _READ + _WRITE, "admin": _READ + _WRITE + _ADMIN}


def _labels(role: PlaneRole | None, plane: str, jurisdiction: str) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/managed-by": "hybrid-dagster",
        "hybrid-dagster/plane": plane,
        "hybrid-dagster/jurisdiction": jurisdiction,
    }
    if role is not None:
        labels["hybrid-dagster/tier"] = role.tier.name
    return labels


def kubernetes_manifests(access: AccessTiers, plane: str) -> list[dict[str, Any]]:
    """The manifests of ``plane``'s namespace, in apply order.

    Example:
        >>> kubernetes_manifests(access, "eu-onprem")[0]["metadata"]["name"]  # doctest: +SKIP
        'clinical-eu'
    """
    roles = [r for r in access.roles() if r.plane.plane == plane]
    if not roles:
        raise KeyError(f"no plane {plane!r} in the access tiers")
    place = roles[0].plane
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": place.namespace, "labels": _labels(None, place.plane, place.jurisdiction)},
        }
    ]
    for role in roles:
        meta = {
            "name": role.service_account,
            "namespace": place.namespace,
            "labels": _labels(role, place.plane, place.jurisdiction),
            "annotations": {
                "hybrid-dagster/classifications": ",".join(c.value for c in role.tier.classifications),
                "hybrid-dagster/vault-role": role.name,
            },
        }
        docs.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta})
        docs.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": meta,
                "rules": RULES[role.tier.capability],
            }
        )
        docs.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": meta,
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": role.service_account,
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": role.service_account, "namespace": place.namespace}
                ],
            }
        )
    return docs


def validate_manifests(docs: list[dict[str, Any]], version: str = KUBERNETES_VERSION) -> None:
    """Validate each manifest against the Kubernetes OpenAPI schema (strict: unknown fields fail).

    Example:
        >>> validate_manifests(kubernetes_manifests(access, "eu-onprem"))  # doctest: +SKIP
    """
    try:
        import kubernetes_validate
    except ImportError:
        raise AccessRenderError(
            "validating Kubernetes manifests needs kubernetes-validate: pip install 'hybrid-dagster[access]'"
        ) from None
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
