"""Rendering the access tiers: files, schema-valid Kubernetes RBAC, IAM scoped to one plane."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from hybrid_dagster.access import (
    AccessTiers,
    PlaneAccess,
    iam_policy,
    kubernetes_manifests,
    policy_hcl,
    render_all,
    validate_manifests,
)
from tests.access.declaration import declaration


def test_render_writes_every_artifact_and_the_manifests_are_schema_valid(tmp_path: Path) -> None:
    access = declaration("t1")
    written = render_all(access, tmp_path)
    names = sorted(str(p.relative_to(tmp_path)) for p in written)
    assert "vault/policies/hd-eu-t1-reader.hcl" in names
    assert "vault/approles/hd-us-t1-admin.json" in names
    assert "vault/kubernetes-roles/hd-eu-t1-engineer.json" in names
    assert "kubernetes/eu-t1.yaml" in names and "aws/iam/hd-us-t1-engineer.json" in names
    assert len(names) == 6 * 4 + 2

    docs = list(yaml.safe_load_all((tmp_path / "kubernetes" / "eu-t1.yaml").read_text()))
    assert [d["kind"] for d in docs[:4]] == ["Namespace", "ServiceAccount", "Role", "RoleBinding"]
    assert {d["metadata"].get("namespace", d["metadata"]["name"]) for d in docs} == {"clinical-eu-t1"}
    assert not any(d["kind"].startswith("Cluster") for d in docs)
    validate_manifests(docs)


def test_an_invalid_manifest_is_refused_by_the_schema() -> None:
    docs = kubernetes_manifests(declaration("t2"), "eu-t2")
    role = next(d for d in docs if d["kind"] == "Role")
    role["rules"][0]["verb"] = role["rules"][0].pop("verbs")  # a typo the API server would reject
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifests([role])


def test_vault_policies_grant_the_tiers_classifications_of_their_own_plane_only() -> None:
    access = declaration("t3")
    reader = policy_hcl(access.role("eu-t3", "reader"), kv_mount="secret")
    assert 'path "secret/data/eu-t3/internal/*"' in reader and "restricted" not in reader
    assert "us-t3" not in reader and '"read"' in reader and '"update"' not in reader
    admin = policy_hcl(access.role("eu-t3", "admin"), kv_mount="secret")
    assert 'path "secret/data/eu-t3/restricted/*"' in admin and '"update"' in admin


def test_iam_policies_name_only_the_planes_prefix_and_secrets() -> None:
    access = declaration("t4")
    policy = iam_policy(access.role("eu-t4", "reader"))
    resources = json.dumps([s["Resource"] for s in policy["Statement"]])
    assert "us-t4" not in resources and '"*"' not in resources
    objects = next(s for s in policy["Statement"] if s["Sid"] == "OwnObjects")
    assert objects["Resource"] == "arn:aws:s3:::meridian-warehouse/eu-t4/*"
    assert objects["Action"] == ["s3:GetObject"]
    secrets = next(s for s in policy["Statement"] if s["Sid"] == "OwnSecrets")["Resource"]
    assert secrets == [
        "arn:aws:secretsmanager:*:*:secret:eu-t4/public/*",
        "arn:aws:secretsmanager:*:*:secret:eu-t4/internal/*",
    ]


def test_a_declaration_refuses_nested_or_duplicate_planes() -> None:
    with pytest.raises(ValidationError, match="duplicate plane names: eu"):
        AccessTiers(
            planes=[
                PlaneAccess(plane="eu", jurisdiction="EU", namespace="a"),
                PlaneAccess(plane="eu", jurisdiction="EU", namespace="b"),
            ]
        )
    with pytest.raises(ValidationError, match="lies inside"):
        AccessTiers(
            planes=[
                PlaneAccess(plane="eu", jurisdiction="EU", namespace="a", secrets_prefix="eu"),
                PlaneAccess(plane="eu2", jurisdiction="EU", namespace="b", secrets_prefix="eu/nested"),
            ]
        )
