"""The demo's lineage step: the OpenLineage sensor over the real demo event log, into lineage.jsonl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.sensors.ol_schema import validate_event


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_demo_lineage_writes_valid_physically_named_events() -> None:
    # A short folder: PostgreSQL's unix socket path must stay under 108 bytes.
    with tempfile.TemporaryDirectory(prefix="hd-lineage-") as scratch:
        _check_demo_lineage(Path(scratch) / "demo")


def _check_demo_lineage(home: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("HYBRID_DAGSTER_HOME", None)
    env.pop("DAGSTER_HOME", None)
    demo = _run(
        ["examples.clinical_ai.demo", "--home", str(home), "--patients", "40", "--transactions", "60"], env
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]

    lineage = _run(["examples.clinical_ai.demo_lineage", "--home", str(home)], env)
    assert lineage.returncode == 0, lineage.stdout[-3000:] + lineage.stderr[-3000:]
    section = json.loads(lineage.stdout.strip().splitlines()[-1])["lineage"]
    path = Path(section["path"])
    assert path == home.resolve() / "lineage.jsonl" and path.is_file()
    events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert section["events"] == len(events) > 30
    for event in events:
        validate_event(event)

    outputs = {
        link["name"]: output
        for event in events
        for output in event["outputs"]
        for link in output["facets"]["symlinks"]["identifiers"]
        if link["type"] == "DAGSTER_ASSET"
    }
    patients = outputs["clinical/patients"]
    assert patients["namespace"] == "file"
    assert patients["name"].startswith(str(home.resolve() / "planes" / "eu-onprem" / "warehouse"))
    residency = patients["facets"]["hybridDagster_residency"]
    assert (residency["plane"], residency["jurisdiction"], residency["classification"]) == (
        "eu-onprem",
        "EU",
        "restricted",
    )
    # The cross-border benchmark (US cloud) shows its EU input: the transfer is visible in lineage.
    benchmark_runs = [
        e
        for e in events
        if any(o["name"] == outputs["analytics/group_ward_benchmark"]["name"] for o in e["outputs"])
    ]
    inputs = {i["name"] for e in benchmark_runs for i in e["inputs"]}
    assert any("/planes/eu-" in name for name in inputs) and any("/planes/us-" in name for name in inputs)
