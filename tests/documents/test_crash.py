"""SIGKILL the ingest process at random points, rerun: the tables equal those of a clean run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest

from examples.clinical_ai.document_corpus import synthetic_encounters, write_corpus
from hybrid_dagster.documents.ingest import IngestConfig, ingest
from hybrid_dagster.documents.tables import DocumentTables
from hybrid_dagster.documents.worker import AssetTarget, DocumentJobSpec
from hybrid_dagster.resources import DataPlane
from tests.documents.files import config_for, table_rows
from tests.planes import make_plane

REPO_ROOT = Path(__file__).resolve().parents[2]


def _target(asset: str) -> AssetTarget:
    return AssetTarget(
        asset_key=asset, classification="restricted", home_plane="eu-onprem", data_jurisdictions=["EU"]
    )


def _committed(plane: DataPlane, config: IngestConfig) -> int:
    if not plane.load_catalog().table_exists(config.names.documents):
        return 0
    return DocumentTables(plane.load_catalog(), config.names, before_write=lambda _: None).committed_batch()


def _duplicates(plane: DataPlane, identifier: str, keys: list[str]) -> int:
    table = plane.load_catalog().load_table(identifier).scan(selected_fields=tuple(keys)).to_arrow()
    if table.num_rows == 0:
        return 0
    grouped = table.group_by(keys).aggregate([([], "count_all")])
    return int(pc.sum(pc.greater(grouped["count_all"], 1)).as_py() or 0)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 15
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
        time.sleep(0.05)
    assert not alive, f"extraction processes {alive} outlived the killed ingest"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_equals_a_clean_run(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write_corpus(
        root, synthetic_encounters(30), letters=50, transcripts=45, logs=25, pages=(1, 3), unicode=False
    )
    # Two extraction processes: they work ahead of the commits, and must die with the killed ingest.
    config = config_for(root, batch_files=4, chunking={"size": 300, "overlap": 50}, workers=2)
    plane = make_plane(tmp_path / "warehouse")
    spec = DocumentJobSpec(ingest=config, documents=_target("docs/documents"), chunks=_target("docs/chunks"))
    (tmp_path / "job.json").write_text(spec.model_dump_json())
    (tmp_path / "plane.json").write_text(json.dumps(plane.to_config()))
    argv = [
        sys.executable,
        "-m",
        "hybrid_dagster.documents.worker",
        "--spec",
        str(tmp_path / "job.json"),
        "--plane",
        str(tmp_path / "plane.json"),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    rng = random.Random(20261202)
    kills = 0
    progress: list[int] = []
    for _ in range(12):
        worker = subprocess.Popen(
            argv, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        # Kill once the worker has committed 1-3 more batches, a random moment later: mid-batch, not at
        # start-up, however slow the machine is.
        target = (progress[-1] if progress else 0) + rng.randint(1, 3)
        deadline = time.monotonic() + 180
        while worker.poll() is None and time.monotonic() < deadline and _committed(plane, config) < target:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.8))
        if worker.poll() is not None:
            assert worker.returncode == 0, worker.stderr.read().decode() if worker.stderr else ""
            break
        extractors = _children(worker.pid)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        _wait_gone(extractors)
        kills += 1
        progress.append(_committed(plane, config))
        assert _duplicates(plane, config.names.documents, ["document_id", "position"]) == 0
        if kills >= 6:
            break
    assert kills >= 4, "the ingest finished before it could be killed 4 times; enlarge the corpus"
    assert len(set(progress)) >= 3, "kills should land while batches are being committed"

    finished = subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, timeout=300)
    assert finished.returncode == 0, finished.stderr.decode()
    assert _duplicates(plane, config.names.chunks, ["chunk_id"]) == 0

    clean = make_plane(tmp_path / "clean")  # in one process: the same rows as with extraction processes
    ingest(config.model_copy(update={"workers": 1}), clean.load_catalog(), before_write=lambda _: None)
    assert table_rows(plane, config) == table_rows(clean, config)
    report = json.loads(finished.stdout)
    assert report["tables"]["documents"] + report["tables"]["dead_letters"] == 122
