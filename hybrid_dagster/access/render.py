"""Write every artifact of the access tiers into a folder.

Layout (one file per object, stable names, so that a diff of two renders reads well):

```
vault/policies/hd-<plane>-<tier>.hcl
vault/approles/hd-<plane>-<tier>.json
vault/kubernetes-roles/hd-<plane>-<tier>.json
kubernetes/<plane>.yaml            Namespace, ServiceAccounts, Roles, RoleBindings (validated)
aws/iam/hd-<plane>-<tier>.json     IAM policy documents
```

Example:
    >>> written = render_all(access, Path("access-out"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from hybrid_dagster.access.aws import render_iam
from hybrid_dagster.access.kubernetes import kubernetes_manifests, validate_manifests
from hybrid_dagster.access.model import AccessTiers
from hybrid_dagster.access.vault import render_vault


def render_all(access: AccessTiers, out: Path) -> list[Path]:
    """Render Vault/OpenBao, Kubernetes and AWS artifacts under ``out``; return the files written.

    Kubernetes manifests are validated against the OpenAPI schema before they are written.
    """
    written: list[Path] = []

    def write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)

    vault = render_vault(access)
    for name, hcl in vault["policies"].items():
        write(out / "vault" / "policies" / f"{name}.hcl", hcl)
    for name, settings in vault["approles"].items():
        write(out / "vault" / "approles" / f"{name}.json", json.dumps(settings, indent=2) + "\n")
    for name, settings in vault["kubernetes_roles"].items():
        write(out / "vault" / "kubernetes-roles" / f"{name}.json", json.dumps(settings, indent=2) + "\n")
    for plane in access.planes:
        docs = kubernetes_manifests(access, plane.plane)
        validate_manifests(docs)
        write(out / "kubernetes" / f"{plane.plane}.yaml", yaml.safe_dump_all(docs, sort_keys=False))
    for name, policy in render_iam(access).items():
        write(out / "aws" / "iam" / f"{name}.json", json.dumps(policy, indent=2) + "\n")
    return written
