"""The secrets demo step end to end, with a known password: the CDC logs in with it (resolved inside the
plane from OpenBao), the US plane reads its token from moto, and the known value appears in no file the
run leaves behind - Dagster's event log storage and compute logs, the planes' logs, the audit log and
the OpenLineage events of its runs."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
KNOWN = "Demo-Canary-Pw-5e7d3a91"


@pytest.fixture
def short_home() -> Iterator[Path]:
    # short: the embedded PostgreSQL's unix socket lives in here
    path = Path(tempfile.mkdtemp(prefix="hd-ds-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_demo_secrets_resolves_inside_the_planes_and_leaks_nothing(short_home: Path) -> None:
    dagster_home = short_home / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "HYBRID_DAGSTER_HOME": str(short_home),
        "HYBRID_DAGSTER_DEMO_DB_PASSWORD": KNOWN,
        "PYTHONPATH": str(REPO_ROOT),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "examples.clinical_ai.demo_secrets",
            "--home",
            str(short_home),
            "--patients",
            "20",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{") :])["secrets"]
    assert summary == {"backends": ["vault", "aws"], "reads_audited": 2}
    # two audited reads: the CDC password (vault, the CDC step fails without it), the partner token (aws)
    assert KNOWN not in proc.stdout + proc.stderr
    assert (dagster_home / "hybrid_audit.db").is_file()  # the default audit log under DAGSTER_HOME
    # the lineage of those runs, as OpenLineage events written into the same folder, is scanned too
    lineage = subprocess.run(
        [sys.executable, "-m", "examples.clinical_ai.demo_lineage", "--home", str(short_home)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert lineage.returncode == 0, lineage.stderr[-3000:]
    assert (short_home / "lineage.jsonl").stat().st_size > 0
    leaked = [p for p in short_home.rglob("*") if p.is_file() and KNOWN.encode() in p.read_bytes()]
    assert leaked == []
