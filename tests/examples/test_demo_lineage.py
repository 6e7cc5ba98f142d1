"""The demo's lineage step: the OpenLineage sensor over the real demo event log, into lineage.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from tests.examples.conftest import Demo
from tests.sensors.ol_schema import validate_event


def test_demo_lineage_writes_valid_physically_named_events(demo: Demo) -> None:
    home = demo.home
    section = demo.summary["lineage"]
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
