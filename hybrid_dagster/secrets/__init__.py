"""Secrets resolved inside a data plane: references cross Dagster Pipes, values never do.

Backends of one shape (:class:`SecretsBackend`): Vault / OpenBao KV v2 through hvac (token, AppRole and
Kubernetes auth, tokens renewed before expiry), AWS Secrets Manager through boto3, and the environment
for local use. Values are masked in the plane process's output and every read is audited.

Example:
    .. code-block:: python

        from hybrid_dagster.secrets import SecretRef, resolve_secret

        password = resolve_secret(SecretRef(backend="vault", path="eu-onprem/clinical-db", key="password"))
"""

from hybrid_dagster.secrets.aws import AwsSecretsManagerBackend as AwsSecretsManagerBackend
from hybrid_dagster.secrets.base import ResolvedSecret as ResolvedSecret, SecretsBackend as SecretsBackend
from hybrid_dagster.secrets.env import EnvBackend as EnvBackend
from hybrid_dagster.secrets.errors import (
    SecretAccessDenied as SecretAccessDenied,
    SecretAuthError as SecretAuthError,
    SecretBackendUnavailable as SecretBackendUnavailable,
    SecretConfigError as SecretConfigError,
    SecretError as SecretError,
    SecretNotFound as SecretNotFound,
)
from hybrid_dagster.secrets.masking import (
    MASKER as MASKER,
    MaskingFilter as MaskingFilter,
    MaskingStream as MaskingStream,
    SecretMasker as SecretMasker,
    install_masking as install_masking,
)
from hybrid_dagster.secrets.ref import BackendKind as BackendKind, SecretRef as SecretRef
from hybrid_dagster.secrets.resolve import (
    READ_KIND as READ_KIND,
    AuditSink as AuditSink,
    PlaneSecrets as PlaneSecrets,
    audit_from_env as audit_from_env,
    build_backend as build_backend,
    pipes_run_id as pipes_run_id,
    plane_secrets as plane_secrets,
    resolve_secret as resolve_secret,
    use_plane_secrets as use_plane_secrets,
)
from hybrid_dagster.secrets.settings import BackendSettings as BackendSettings
from hybrid_dagster.secrets.vault import VaultAuth as VaultAuth, VaultBackend as VaultBackend
