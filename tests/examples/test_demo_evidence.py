"""The evidence demo step, standalone: a transfer is recorded, the chain verifies, the pack is written."""

import json
import os
import subprocess
import sys
from pathlib import Path

from hybrid_dagster.audit import AuditLog

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_demo_evidence_runs_standalone(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "HYBRID_DAGSTER_AUDIT_URL")}
    env.update(PYTHONPATH=str(REPO_ROOT), HYBRID_DAGSTER_HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "examples.clinical_ai.demo_evidence", "--home", str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    audit = summary["audit"]
    assert audit["url"] == f"sqlite:///{tmp_path / 'dagster' / 'hybrid_audit.db'}"
    assert audit["verified"] is True and audit["records"] >= 3
    assert audit["checkpoint_count"] == audit["records"]
    route = summary["transfers"]["by_route"]["EU->US"]
    assert route["transfers"] == 1 and route["legal_bases"] == [
        "GDPR Art. 46(2)(c) standard contractual clauses"
    ]
    assert route["cost_usd"] > 0
    assert all(summary["checks"].values()), summary["checks"]
    assert summary["compliance_report"]["controls"]["GDPR Art. 44-49"] == "covered"
    markdown = Path(summary["compliance_report"]["markdown"]).read_text()
    assert (
        "| EU->US | GDPR Art. 46(2)(c) standard contractual clauses | confidential | 0.090000 |" in markdown
    )
    with AuditLog(audit["url"]) as log:
        [transfer] = list(log.records(kind="transfer"))
        assert transfer.details["source_table"] == "analytics.ward_occupancy"
        assert transfer.details["target_table"] == "analytics.group_ward_benchmark"
        assert len(transfer.details["source_sha256"]) == 64
