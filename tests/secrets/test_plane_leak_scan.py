"""End to end: plane work started by DataPlane.run (a real subprocess, Dagster Pipes) resolves a secret
from OpenBao with the plane's AppRole; the value appears nowhere outside the plane's memory - not in the
event log storage, compute logs, the plane's own work log, nor the audit log."""

import sys
from pathlib import Path

import dagster as dg
import pytest

from hybrid_dagster.audit import AuditLog
from hybrid_dagster.pinning import pinned
from hybrid_dagster.resources import DataPlane, SecretsConfig
from hybrid_dagster.secrets import SecretRef
from hybrid_dagster.testing.openbao import OpenBaoServer
from tests.planes import make_plane
from tests.secrets.vault_setup import approle, read_policy, unique

WORK = Path(__file__).parent / "work" / "use_secret.py"
KNOWN = "Leak-Canary-8c1f2e9b7d"


def files_containing(root: Path, needle: str) -> list[Path]:
    data = needle.encode()
    return [p for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


def secret_asset(classification: str, extras: dict[str, object]) -> dg.AssetsDefinition:
    @dg.asset(name="cohort", **pinned("eu-onprem", classification))
    def cohort(context: dg.AssetExecutionContext, eu_onprem: DataPlane) -> dg.MaterializeResult:
        return eu_onprem.run(
            context,
            command=[sys.executable, str(WORK)],
            extras={"asset": "cohort", **extras},
            allowed_text_metadata=["dsn"],  # declared text: it still may not carry the value
            allowed_metadata_keys=["same"],
        ).get_materialize_result()

    return cohort


@pytest.fixture
def eu_plane(
    tmp_path: Path, openbao: OpenBaoServer, monkeypatch: pytest.MonkeyPatch
) -> tuple[DataPlane, str]:
    """The EU plane logs in to OpenBao with its own AppRole (short token TTL), whose ids are in its env."""
    path = f"{unique('eu-onprem')}/clinical-db"
    root = openbao.root_client()
    root.secrets.kv.v2.create_or_update_secret(path=path, secret={"password": KNOWN}, mount_point="secret")
    role_id, secret_id = approle(
        root, unique("eu-onprem-engineer"), read_policy(path), token_ttl="2s", token_max_ttl="60s"
    )
    monkeypatch.setenv("EU_ONPREM_ROLE_ID", role_id)  # the plane host's environment, not run config
    monkeypatch.setenv("EU_ONPREM_SECRET_ID", secret_id)
    monkeypatch.setenv("HYBRID_DAGSTER_AUDIT_URL", f"sqlite:///{tmp_path / 'audit' / 'hybrid_audit.db'}")
    plane = make_plane(
        tmp_path / "eu",
        secrets=SecretsConfig(
            backend="vault",
            address=openbao.address,
            auth_method="approle",
            role_id_env="EU_ONPREM_ROLE_ID",
            secret_id_env="EU_ONPREM_SECRET_ID",
        ),
    )
    return plane, path


@pytest.mark.parametrize("classification", ["restricted", "internal"])
def test_a_resolved_secret_never_leaves_the_plane(
    tmp_path: Path, eu_plane: tuple[DataPlane, str], classification: str
) -> None:
    plane, path = eu_plane
    ref = SecretRef(backend="vault", path=path, key="password")
    sleep_s = 3.0 if classification == "restricted" else 0.0  # a long job: 1.5 token lifetimes
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = dg.materialize(
            [secret_asset(classification, {"db_password": ref.model_dump(), "sleep_s": sleep_s})],
            resources={"eu_onprem": plane},
            instance=instance,
        )
        assert result.success
        metadata = result.asset_materializations_for_node("cohort")[0].metadata
        assert metadata["dsn"].value == "host=db password=***"
        assert metadata["same"].value is True  # read again (after 1.5 token lifetimes when restricted)
        events = "\n".join(dg.serialize_value(r) for r in instance.all_logs(result.run_id))
        assert "password is ***" in events or classification == "restricted"
        assert KNOWN not in events
    assert files_containing(tmp_path / "dagster", KNOWN) == []
    audit = AuditLog(f"sqlite:///{tmp_path / 'audit' / 'hybrid_audit.db'}")
    reads = [r for r in audit.records("secret.read") if r.run_id == result.run_id]
    assert len(reads) == 2 and audit.verify().ok
    assert {r.details["path"] for r in reads} == {path} and reads[0].plane == "eu-onprem"
    assert reads[0].details["outcome"] == "ok" and reads[0].details["version"] == "1"
    assert str(reads[0].actor).startswith("vault-approle:eu-onprem-engineer-")
    audit.close()
    if classification == "restricted":
        work_log = plane.work_log_path(result.run_id, "cohort").read_text()
        assert "stdout: connecting with ***" in work_log and "logger: password is ***" in work_log
    assert files_containing(tmp_path, KNOWN) == []


def test_an_exception_carrying_the_secret_is_replaced(
    tmp_path: Path, eu_plane: tuple[DataPlane, str]
) -> None:
    plane, path = eu_plane
    ref = SecretRef(backend="vault", path=path, key="password")
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = dg.materialize(
            [secret_asset("internal", {"db_password": ref.model_dump(), "fail": True})],
            resources={"eu_onprem": plane},
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        events = "\n".join(dg.serialize_value(r) for r in instance.all_logs(result.run_id))
        assert "its message carried a secret value" in events
        assert KNOWN not in events
    assert files_containing(tmp_path, KNOWN) == []
