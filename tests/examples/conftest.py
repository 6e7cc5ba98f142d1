"""One `make demo` run per test session, shared by every test of the demo and of its capability steps.

The demo runs at small sizes with a known database password, so the tests can scan everything it left
behind for that value. Each capability's hook (documents, secrets, GPU, evidence, lineage, DR) is
checked on this one run: its section in ``summary.json`` and the files it wrote under the demo home.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_DB_PASSWORD = "Demo-Canary-Pw-5e7d3a91"
"""The demo database's password for the shared run; it must never appear in anything the demo writes."""


@dataclass(frozen=True)
class Demo:
    home: Path
    stdout: str
    stderr: str
    summary: dict[str, Any]


@pytest.fixture(scope="session")
def demo() -> Iterator[Demo]:
    # Not under pytest's basetemp: a pytest starting elsewhere on the machine resets its parent to 0700,
    # and the embedded server (its own system user when run as root) must reach its data directory.
    # Short: the embedded PostgreSQL's unix socket lives in here (108-byte limit).
    tmp = Path(tempfile.mkdtemp(prefix="hd-demo-"))
    try:
        yield _run_demo(tmp / "home")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_demo(home: Path) -> Demo:
    env = {k: v for k, v in os.environ.items() if k not in ("HYBRID_DAGSTER_HOME", "DAGSTER_HOME")}
    env.update(PYTHONPATH=str(REPO_ROOT), HYBRID_DAGSTER_DEMO_DB_PASSWORD=DEMO_DB_PASSWORD)
    argv = ["--home", str(home), "--patients", "40", "--transactions", "60"]
    result = subprocess.run(
        [sys.executable, "-m", "examples.clinical_ai.demo", *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return Demo(home, result.stdout, result.stderr, json.loads((home / "summary.json").read_text()))
