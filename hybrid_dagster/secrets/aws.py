"""AWS Secrets Manager through boto3, with the plane's own IAM identity.

Correctness rules:

- The client uses the plane's keys (read from the variables the plane names) or, when none are named,
  boto3's default chain inside the plane (instance role, IRSA); never the orchestrator's keys.
- ``version`` is a Secrets Manager version id; the answer's ``VersionId`` is what the audit log records.
- Errors are built from the reference, the region and the endpoint; botocore's message (which can quote
  the request) is never shown.

Example:
    .. code-block:: python

        backend = AwsSecretsManagerBackend(plane="us-cloud", region="us-east-1")
        backend.read(SecretRef(backend="aws", path="us-cloud/claims-api", key="token"))
"""

from __future__ import annotations

from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from hybrid_dagster.secrets.base import ResolvedSecret, SecretsBackend
from hybrid_dagster.secrets.errors import (
    SecretAccessDenied,
    SecretAuthError,
    SecretBackendUnavailable,
    SecretError,
    SecretNotFound,
)
from hybrid_dagster.secrets.ref import SecretRef

DENIED_CODES = {"AccessDeniedException", "AccessDenied"}
AUTH_CODES = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredTokenException",
    "InvalidSignatureException",
}
NOT_FOUND_CODES = {"ResourceNotFoundException"}


class AwsSecretsManagerBackend(SecretsBackend):
    """Secrets Manager secrets read with the plane's IAM identity.

    Example:
        .. code-block:: python

            backend = AwsSecretsManagerBackend(
                plane="us-cloud", region="us-east-1", endpoint_url="http://127.0.0.1:5000",
                access_key_id=os.environ["US_CLOUD_AWS_KEY_ID"],
                secret_access_key=os.environ["US_CLOUD_AWS_SECRET_KEY"],
            )
    """

    kind = "aws"

    def __init__(
        self,
        *,
        plane: str,
        region: str | None = None,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        path_prefix: str = "",
    ) -> None:
        super().__init__(plane=plane, path_prefix=path_prefix)
        self.region = region or "us-east-1"
        self.endpoint_url = endpoint_url
        self._key_id = access_key_id
        self._client: Any = boto3.client(
            "secretsmanager",
            region_name=self.region,
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=10),
        )

    @property
    def identity(self) -> str:
        return f"aws-iam:{self._key_id}" if self._key_id else f"aws-iam:default-chain:{self.plane}"

    @property
    def location(self) -> str:
        return self.endpoint_url or f"secretsmanager.{self.region}"

    def read(self, ref: SecretRef) -> ResolvedSecret:
        name = self.full_path(ref)
        request: dict[str, Any] = {"SecretId": name}
        if ref.version is not None:
            request["VersionId"] = str(ref.version)
        try:
            answer = self._client.get_secret_value(**request)
        except Exception as error:
            raise self._error(error, ref) from None
        if "SecretString" not in answer:
            raise SecretNotFound(
                f"aws secret {name} at {self.location} holds binary data: store it as a string "
                "(SecretString) for hybrid-dagster"
            )
        return self.pick_key(ref, str(answer["SecretString"]), str(answer.get("VersionId") or ""))

    def _error(self, error: Exception, ref: SecretRef) -> SecretError:
        where = f"aws secret {self.full_path(ref)}"
        if ref.version is not None:
            where += f" version {ref.version}"
        where += f" at {self.location} (plane {self.plane!r}, {self.identity})"
        if isinstance(error, botocore.exceptions.ClientError):
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in NOT_FOUND_CODES:
                return SecretNotFound(f"{where} does not exist: create it or fix the SecretRef")
            if code in AUTH_CODES or (status == 403 and _error_text_has(error, AUTH_CODES)):
                return SecretAuthError(f"{where}: the plane's AWS keys were refused - renew them")
            if code in DENIED_CODES or status == 403:
                return SecretAccessDenied(
                    f"{where}: access denied by IAM - read only this plane's secrets, or grant the path in "
                    "the access tiers (hybrid-dagster access render writes the plane's IAM policy)"
                )
            return SecretBackendUnavailable(f"{where}: Secrets Manager answered {code or 'an error'}")
        if isinstance(error, botocore.exceptions.NoCredentialsError):
            return SecretAuthError(
                f"{where}: no AWS credentials in the plane - set the variables named by "
                "SecretsConfig.access_key_id_env / secret_access_key_env or give the plane an IAM role"
            )
        if isinstance(
            error, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectionError
        ):
            return SecretBackendUnavailable(f"{where}: the endpoint cannot be reached - check the address")
        return SecretBackendUnavailable(f"{where}: the read failed ({type(error).__name__})")


def _error_text_has(error: botocore.exceptions.ClientError, codes: set[str]) -> bool:
    """Whether the error's message names one of ``codes`` (moto wraps some codes in an XML message)."""
    message = str(error.response.get("Error", {}).get("Message", ""))
    return any(code in message for code in codes)
