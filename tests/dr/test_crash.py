"""SIGKILL at a random point of a replication or a drill (the whole process group): the primary stays
intact, the secondary holds only complete tables (each equal to the primary at the snapshot it names),
and a rerun succeeds."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa

from hybrid_dagster.dr import replicate_plane, run_drill, secondary_plane
from hybrid_dagster.dr.isolation import AUDIT_HOOK, MOUNT_NAMESPACE, mount_namespace_available
from hybrid_dagster.plane import storage
from hybrid_dagster.residency import ResidencyPolicy
from tests.dr.planes import TABLES, ClinicalPlane, eu_plane

REPO_ROOT = Path(__file__).resolve().parents[2]


def _kill_at_random(mode: str, root: Path, latest_s: float) -> tuple[float, bool]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.dr.crash_worker", mode, str(root)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    delay = random.uniform(0.0, latest_s)
    time.sleep(delay)
    finished = proc.poll() is not None
    if not finished:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    return delay, finished


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by("id")


def test_replication_killed_midway_registers_nothing_half_copied(tmp_path: Path) -> None:
    primary = eu_plane(tmp_path)
    secondary = secondary_plane(primary)
    clinical = ClinicalPlane(primary)
    clinical.fill(2)
    replicate_plane(primary, secondary, ResidencyPolicy(), tables=[TABLES[0]])  # one table already there
    clinical.fill(5)
    want = clinical.rows()

    delay, finished = _kill_at_random("replicate", tmp_path, 2.5)
    context = f"killed after {delay:.2f}s (finished before: {finished})"
    assert clinical.rows() == want, context  # the primary is intact
    catalog = storage.open_catalog(secondary.spec())
    for identifier in TABLES:
        if not catalog.table_exists(identifier):
            continue
        copy = catalog.load_table(identifier)
        snapshot = copy.current_snapshot()
        assert snapshot is not None, context
        at_primary = clinical.catalog.load_table(identifier).scan(snapshot_id=snapshot.snapshot_id).to_arrow()
        assert _sorted(copy.scan().to_arrow()).equals(_sorted(at_primary)), context

    replicate_plane(primary, secondary, ResidencyPolicy())  # the rerun completes
    assert clinical.rows(storage.open_catalog(secondary.spec())) == want, context


def test_drill_killed_midway_leaves_primary_intact_and_rerun_passes(tmp_path: Path) -> None:
    primary = eu_plane(tmp_path)
    secondary = secondary_plane(primary)
    clinical = ClinicalPlane(primary)
    clinical.fill(2)
    replicate_plane(primary, secondary, ResidencyPolicy())
    want = clinical.rows()

    delay, finished = _kill_at_random("drill", tmp_path, 6.0)
    context = f"killed after {delay:.2f}s (finished before: {finished})"
    assert os.listdir(tmp_path / "eu-onprem"), context  # the outage never reached the primary itself
    assert clinical.rows() == want, context

    result = run_drill(primary, secondary)  # the rerun: current replica, so every objective is met
    assert (result.rpo_changes, result.rpo_s, result.tables) == (0, 0.0, 3), context
    assert result.primary_intact and result.leftovers == 0 and result.objectives_met, context
    assert result.isolation == (MOUNT_NAMESPACE if mount_namespace_available() else AUDIT_HOOK)
    assert clinical.rows(storage.open_catalog(secondary.spec())) == want
