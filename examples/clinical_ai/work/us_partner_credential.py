"""US cloud plane: resolve the claims-partner API token from AWS Secrets Manager, with the plane's own IAM
keys, and report only that (and which version) it was resolved - never the token."""

from hybrid_dagster.plane.work import open_plane_work
from hybrid_dagster.secrets import SecretRef

with open_plane_work() as work:
    ref = SecretRef.model_validate(work.pipes.get_extra("api_token"))
    secret = work.secrets.read(ref)  # resolved here; masked in this process's output; audited
    work.pipes.log.info(f"partner API token resolved ({len(secret.value)} characters): {secret.value}")
    work.report(
        work.pipes.get_extra("asset"),
        {"credential_version": {"raw_value": secret.version or "", "type": "text"}},
    )
