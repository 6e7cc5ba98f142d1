"""AWS IAM policies of the access tiers: each tier of each plane may reach its own plane's bucket prefix and
Secrets Manager paths, nothing else.

Correctness rules: every ``Resource`` names the plane's bucket prefix (``arn:aws:s3:::<bucket>/<prefix>/*``)
or its secrets of the tier's classifications (``arn:aws:secretsmanager:<region>:<account>:secret:
<plane>/<class>/*``); listing the bucket is limited to the plane's prefix by an ``s3:prefix`` condition. No
``*`` resource is ever granted.

Example:
    >>> iam_policy(access.role("us-cloud", "reader"))["Statement"][0]["Sid"]  # doctest: +SKIP
    'ListOwnPrefix'
"""

from __future__ import annotations

from typing import Any

from hybrid_dagster.access.model import AccessTiers, PlaneRole

S3_ACTIONS = {
    "read": ["s3:GetObject"],
    "write": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
    "admin": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
}
SECRETS_ACTIONS = {
    "read": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
    "write": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
    "admin": [
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecret",
        "secretsmanager:TagResource",
    ],
}


def iam_policy(role: PlaneRole) -> dict[str, Any]:
    """The IAM policy document of ``role``.

    Example:
        >>> iam_policy(access.role("eu-cloud", "engineer"))["Version"]  # doctest: +SKIP
        '2012-10-17'
    """
    plane, tier = role.plane, role.tier
    statements: list[dict[str, Any]] = []
    if plane.bucket:
        prefix = plane.object_prefix
        objects = f"arn:aws:s3:::{plane.bucket}/{prefix}/*" if prefix else f"arn:aws:s3:::{plane.bucket}/*"
        listing: dict[str, Any] = {
            "Sid": "ListOwnPrefix",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": f"arn:aws:s3:::{plane.bucket}",
        }
        if prefix:
            listing["Condition"] = {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}
        statements.append(listing)
        statements.append(
            {
                "Sid": "OwnObjects",
                "Effect": "Allow",
                "Action": S3_ACTIONS[tier.capability],
                "Resource": objects,
            }
        )
    secrets = [
        f"arn:aws:secretsmanager:{plane.region}:{plane.account}:secret:{plane.secrets_path(c)}/*"
        for c in tier.classifications
    ]
    statements.append(
        {
            "Sid": "OwnSecrets",
            "Effect": "Allow",
            "Action": SECRETS_ACTIONS[tier.capability],
            "Resource": secrets,
        }
    )
    return {"Version": "2012-10-17", "Statement": statements}


def render_iam(access: AccessTiers) -> dict[str, dict[str, Any]]:
    """``{"hd-<plane>-<tier>": policy document}`` for every tier of every plane."""
    return {role.name: iam_policy(role) for role in access.roles()}
