"""Crash safety: the sensor's process is SIGKILLed at random points while it delivers over http."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hybrid_dagster.sensors import openlineage_sensor
from tests.conftest import REPO_ROOT
from tests.planes import make_plane
from tests.sensors.lineage_harness import (
    definitions,
    drain,
    http_receiver,
    identity,
    lineage_content,
    local_instance,
    materialize_clinical,
    read_jsonl,
)

BATCH = 3


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing_and_only_resends_the_unstored_tick(tmp_path: Path) -> None:
    (tmp_path / "warehouse").mkdir()
    plane = make_plane(tmp_path / "warehouse")
    instance = local_instance(tmp_path / "home")
    materialize_clinical(instance, plane)
    out = tmp_path / "reference.jsonl"
    reference_sensor = openlineage_sensor(
        planes=[plane], transport={"type": "file", "log_file_path": str(out), "append": True}
    )
    drain(reference_sensor, instance, definitions(plane, reference_sensor))
    reference = lineage_content(read_jsonl(out))

    rng = random.Random(20261202)
    cursor_file = tmp_path / "cursor.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    kills = 0
    with http_receiver() as receiver:
        argv = [
            sys.executable,
            "-m",
            "tests.sensors.lineage_worker",
            str(tmp_path / "home"),
            str(tmp_path / "warehouse"),
            str(cursor_file),
            receiver.url,
            str(BATCH),
        ]
        for _ in range(20):
            worker = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
            assert worker.stdout is not None
            ticks_before_kill = rng.randint(1, 4) if kills < 3 else 10**6
            seen = 0
            for line in worker.stdout:
                if line.strip() == "tick":
                    seen += 1
                    if seen == ticks_before_kill:
                        time.sleep(rng.uniform(0.0, 0.03))  # ticks take milliseconds
                        worker.send_signal(signal.SIGKILL)
                        kills += 1
                        break
            worker.wait(timeout=300)
            worker.stdout.close()
            if worker.returncode == 0:
                break
            assert worker.returncode == -signal.SIGKILL
        else:
            pytest.fail("the worker never caught up")
    assert kills == 3

    # A re-sent event is the same event (same JSON: a tick restarted from the stored cursor folds the
    # same records), and each kill re-sends at most one batch.
    by_identity: dict[tuple[str, str, str, str], set[str]] = {}
    for event in receiver.accepted:
        by_identity.setdefault(identity(event), set()).add(json.dumps(event, sort_keys=True))
    assert all(len(bodies) == 1 for bodies in by_identity.values())
    first_seen: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for event in receiver.accepted:
        first_seen.setdefault(identity(event), event)
    assert len(receiver.accepted) - len(first_seen) <= kills * BATCH
    # Nothing lost, and in order: the first deliveries tell a consumer exactly what the reference does.
    assert lineage_content(list(first_seen.values())) == reference
