"""`hybrid-dagster audit verify` over a real store, and the audit_checkpoint asset it compares against."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from hybrid_dagster.assets.audit_checkpoint import audit_checkpoint_asset, audit_checkpoint_schedule
from hybrid_dagster.audit import AuditLog
from hybrid_dagster.audit.checkpoint import COUNT_KEY, HEAD_KEY, latest_checkpoint
from hybrid_dagster.cli import main
from hybrid_dagster.resources.audit import AuditLogResource
from tests.conftest import REPO_ROOT


def cli(home: Path, *args: str) -> tuple[int, str]:
    """``hybrid-dagster audit verify ARGS`` in this process (one test runs the real console entry)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(home))
        patch.delenv("HYBRID_DAGSTER_AUDIT_URL", raising=False)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["audit", "verify", *args])
    return code, out.getvalue()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "dagster_home"
    path.mkdir()
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return path


def fill(url: str, n: int) -> None:
    with AuditLog(url) as log:
        for i in range(n):
            log.append("transfer", actor="tester", details={"i": i})


def test_verify_exits_0_on_an_intact_chain_and_1_naming_the_broken_record(home: Path) -> None:
    url = f"sqlite:///{home / 'hybrid_audit.db'}"
    fill(url, 5)
    code, out = cli(home, "--url", url)
    assert code == 0, out
    assert out.startswith("audit ok: 5 records, head ")
    assert cli(home)[0] == 0  # the default store is $DAGSTER_HOME/hybrid_audit.db
    with AuditLog(url) as log, log.engine.begin() as conn:
        conn.execute(sa.text("UPDATE hybrid_audit_records SET actor = 'someone else' WHERE seq = 2"))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "DAGSTER_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "hybrid_dagster.cli", "audit", "verify", "--url", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout.strip() == "audit broken at record 2: hash does not match the record's content"


def test_checkpoint_asset_anchors_the_head_and_catches_a_truncated_tail(home: Path) -> None:
    url = f"sqlite:///{home / 'hybrid_audit.db'}"
    fill(url, 5)
    checkpoint = audit_checkpoint_asset()
    resources = {"audit_log": AuditLogResource(url=url)}
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        assert dg.materialize([checkpoint], resources=resources, instance=instance).success
        event = instance.get_latest_materialization_event(dg.AssetKey("audit_checkpoint"))
        assert event is not None and event.asset_materialization is not None
        metadata = event.asset_materialization.metadata
        with AuditLog(url) as log:
            assert (metadata[COUNT_KEY].value, metadata[HEAD_KEY].value) == log.head()
            assert latest_checkpoint(instance) == log.head()
        fill(url, 2)  # the chain grows after the checkpoint: still fine
        assert dg.materialize([checkpoint], resources=resources, instance=instance).success
        assert latest_checkpoint(instance) is not None and latest_checkpoint(instance)[0] == 7

        with AuditLog(url) as log, log.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM hybrid_audit_records WHERE seq > 5"))
        with AuditLog(url) as log:
            assert log.verify().ok  # without the checkpoint, a cut tail looks fine
        result = dg.materialize([checkpoint], resources=resources, instance=instance, raise_on_error=False)
        assert not result.success  # ... and the broken chain is not re-anchored
        assert latest_checkpoint(instance) is not None and latest_checkpoint(instance)[0] == 7

    code, out = cli(home, "--url", url)
    assert code == 1
    assert out.startswith("audit broken at record 6: the chain ends at record 5 but a checkpoint")
    assert cli(home, "--url", url, "--no-checkpoint")[0] == 0


def test_schedule_targets_the_checkpoint_asset() -> None:
    checkpoint = audit_checkpoint_asset()
    schedule = audit_checkpoint_schedule(checkpoint, "0 * * * *")
    defs = dg.Definitions(
        assets=[checkpoint], schedules=[schedule], resources={"audit_log": AuditLogResource()}
    )
    assert defs.resolve_schedule_def("audit_checkpoint_schedule").cron_schedule == "0 * * * *"


def test_missing_store_is_a_usage_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "HYBRID_DAGSTER_AUDIT_URL")}
    done = subprocess.run(
        [sys.executable, "-m", "hybrid_dagster.cli", "audit", "verify"],
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "DAGSTER_HOME" in done.stderr
