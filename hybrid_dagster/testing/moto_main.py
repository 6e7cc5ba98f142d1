"""``python -m hybrid_dagster.testing.moto_main``: moto's server, with Secrets Manager calls authorized
against the secret's ARN.

moto's IAM enforcement checks resource ARNs for S3, SQS, IAM and STS only; every other service is
checked against the resource ``*``, so a policy scoped to ``arn:aws:secretsmanager:...:secret:us-cloud/*``
would deny everything. This launcher gives moto's Secrets Manager responses the ``_determine_resource``
hook its SQS responses already have (the ARN of the secret named by ``SecretId``), so moto's own policy
engine evaluates our rendered policies the way AWS does. Everything else is moto as shipped. Test and
demo use only.
"""

from __future__ import annotations

import sys

from moto.secretsmanager.responses import SecretsManagerResponse
from moto.server import main as moto_main


def _secret_arn(self: SecretsManagerResponse) -> str:
    secret_id = self._get_param("SecretId")
    if isinstance(secret_id, str) and secret_id in self.backend.secrets:
        return str(self.backend.secrets[secret_id].arn)
    return "*"


SecretsManagerResponse._determine_resource = _secret_arn  # type: ignore[attr-defined]

if __name__ == "__main__":
    moto_main(sys.argv[1:])
