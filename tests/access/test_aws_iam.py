"""The rendered IAM policies on moto with IAM enforcement on: an EU plane's keys read the EU prefix and
EU secrets and are denied the US prefix and US secrets - denied by the rendered policy, not by absence."""

from __future__ import annotations

import uuid

import botocore.exceptions
import pytest

from hybrid_dagster.access import iam_policy
from hybrid_dagster.residency import Classification
from hybrid_dagster.secrets import AwsSecretsManagerBackend, SecretAccessDenied, SecretRef
from hybrid_dagster.testing.moto import MotoProcess
from tests.access.declaration import declaration


@pytest.mark.parametrize("tier", ["reader", "engineer"])
def test_each_planes_keys_reach_only_their_own_prefix_and_secrets(moto_iam: MotoProcess, tier: str) -> None:
    access = declaration()
    bucket = f"meridian-{uuid.uuid4().hex[:8]}"
    access = access.model_copy(
        update={"planes": [p.model_copy(update={"bucket": bucket}) for p in access.planes]}
    )
    s3, secrets = moto_iam.client("s3"), moto_iam.client("secretsmanager")
    s3.create_bucket(Bucket=bucket)
    for plane in access.planes:
        s3.put_object(Bucket=bucket, Key=f"{plane.object_prefix}/clinical/data.parquet", Body=b"rows")
        for classification in Classification:
            secrets.create_secret(
                Name=f"{plane.secrets_path(classification)}/db",
                SecretString=f"{plane.plane}-{classification}",
            )

    for plane in access.planes:
        role = access.role(plane.plane, tier)
        keys = moto_iam.user_with_policy(role.name, iam_policy(role))
        own_s3 = moto_iam.client("s3", keys)
        backend = AwsSecretsManagerBackend(
            plane=plane.plane,
            endpoint_url=moto_iam.endpoint,
            access_key_id=keys.access_key_id,
            secret_access_key=keys.secret_access_key,
        )
        for other in access.planes:
            key = f"{other.object_prefix}/clinical/data.parquet"
            if other.plane == plane.plane:
                assert own_s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"rows"
            else:
                with pytest.raises(botocore.exceptions.ClientError) as denied:
                    own_s3.get_object(Bucket=bucket, Key=key)
                assert denied.value.response["Error"]["Code"] == "AccessDenied"
            for classification in Classification:
                ref = SecretRef(backend="aws", path=f"{other.secrets_path(classification)}/db")
                if other.plane == plane.plane and classification in role.tier.classifications:
                    assert backend.read(ref).value == f"{other.plane}-{classification}"
                else:
                    with pytest.raises(SecretAccessDenied, match="access denied by IAM"):
                        backend.read(ref)
        if tier == "reader":
            with pytest.raises(botocore.exceptions.ClientError):
                own_s3.put_object(Bucket=bucket, Key=f"{plane.object_prefix}/new.parquet", Body=b"x")
        else:
            own_s3.put_object(Bucket=bucket, Key=f"{plane.object_prefix}/new.parquet", Body=b"x")
