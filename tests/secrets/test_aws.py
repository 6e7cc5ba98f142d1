"""AWS Secrets Manager through boto3, against moto in server mode with IAM enforcement on."""

from __future__ import annotations

import json
import uuid

import pytest

from hybrid_dagster.secrets import (
    AwsSecretsManagerBackend,
    SecretAccessDenied,
    SecretAuthError,
    SecretBackendUnavailable,
    SecretNotFound,
    SecretRef,
)
from hybrid_dagster.testing.moto import MotoProcess

TOKEN_V1 = "claims-token-v1-61d0"
TOKEN_V2 = "claims-token-v2-9e44"


def own_secrets_policy(prefix: str) -> dict[str, object]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                "Resource": f"arn:aws:secretsmanager:*:*:secret:{prefix}/*",
            }
        ],
    }


def test_reads_versions_with_the_planes_keys_and_is_denied_elsewhere(moto_iam: MotoProcess) -> None:
    suffix = uuid.uuid4().hex[:6]
    admin = moto_iam.client("secretsmanager")
    mine = f"us-cloud-{suffix}/claims-api"
    first = admin.create_secret(Name=mine, SecretString=json.dumps({"token": TOKEN_V1}))["VersionId"]
    admin.put_secret_value(SecretId=mine, SecretString=json.dumps({"token": TOKEN_V2}))
    theirs = f"eu-cloud-{suffix}/registry"
    admin.create_secret(Name=theirs, SecretString=TOKEN_V1)
    keys = moto_iam.user_with_policy(f"us-cloud-{suffix}", own_secrets_policy(f"us-cloud-{suffix}"))

    backend = AwsSecretsManagerBackend(
        plane="us-cloud",
        endpoint_url=moto_iam.endpoint,
        access_key_id=keys.access_key_id,
        secret_access_key=keys.secret_access_key,
    )
    current = backend.read(SecretRef(backend="aws", path=mine, key="token"))
    assert current.value == TOKEN_V2 and current.version
    assert backend.read(SecretRef(backend="aws", path=mine, key="token", version=first)).value == TOKEN_V1
    assert backend.identity == f"aws-iam:{keys.access_key_id}"

    with pytest.raises(SecretAccessDenied, match=f"aws secret {theirs} at .*access denied by IAM") as denied:
        backend.read(SecretRef(backend="aws", path=theirs))
    assert TOKEN_V1 not in str(denied.value)

    with pytest.raises(SecretNotFound, match="does not exist"):
        AwsSecretsManagerBackend(
            plane="us-cloud",
            endpoint_url=moto_iam.endpoint,
            access_key_id=moto_iam.admin.access_key_id,
            secret_access_key=moto_iam.admin.secret_access_key,
        ).read(SecretRef(backend="aws", path=f"us-cloud-{suffix}/nothing"))


def test_unknown_keys_and_unreachable_endpoints_are_named(moto_iam: MotoProcess) -> None:
    stranger = AwsSecretsManagerBackend(
        plane="us-cloud", endpoint_url=moto_iam.endpoint, access_key_id="AKIANOBODY", secret_access_key="x"
    )
    with pytest.raises((SecretAuthError, SecretAccessDenied)):
        stranger.read(SecretRef(backend="aws", path="us-cloud/anything"))
    nowhere = AwsSecretsManagerBackend(
        plane="us-cloud", endpoint_url="http://127.0.0.1:9", access_key_id="a", secret_access_key="b"
    )
    with pytest.raises(SecretBackendUnavailable, match="cannot be reached"):
        nowhere.read(SecretRef(backend="aws", path="us-cloud/anything"))
