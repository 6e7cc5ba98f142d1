"""Copy-on-write helpers: the key mask's lookup-table path and the slicing of large parts for parallel
writes, each against the plain definition; and an apply whose one cluster is written as several files."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from hybrid_dagster.cdc.changes import TableChanges
from hybrid_dagster.cdc.sink import pruning, rewrite
from hybrid_dagster.cdc.sink.apply import IcebergApplier
from hybrid_dagster.cdc.sink.rewrite import key_mask, split_for_writers, usable_cpus

SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("name", pa.string())])


@pytest.mark.parametrize(
    ("rows", "wanted"),
    [
        (pa.chunked_array([[5, 1, 9], [3, 7]]), pa.chunked_array([[7, 1], [2]])),  # dense: lookup table
        (pa.chunked_array([[1, 2**40, -(2**40)]]), pa.chunked_array([[2**40, 3]])),  # sparse: hash set
        (pa.chunked_array([pa.array([4, 8], pa.int32())]), pa.chunked_array([[8, 9]])),  # int32 vs int64
        (pa.chunked_array([[4, None, 8]]), pa.chunked_array([[8]])),  # a null key: hash set
        (pa.chunked_array([["a", "b"]]), pa.chunked_array([["b"]])),
    ],
)
def test_key_mask_is_membership(rows: pa.ChunkedArray, wanted: pa.ChunkedArray) -> None:
    mask = key_mask(pa.table({"k": rows}), pa.table({"k": wanted}), ["k"])
    expected = pc.is_in(rows, value_set=wanted.combine_chunks())
    assert pa.chunked_array([mask]).to_pylist() == expected.to_pylist()


def test_split_keeps_every_row_in_order_within_its_part(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rewrite, "MIN_SPLIT_BYTES", 800)
    big = pa.table({"id": np.arange(1000, dtype=np.int64)})  # 8,000 bytes
    small = pa.table({"id": np.arange(1000, 1100, dtype=np.int64)})  # under twice the minimum
    pieces = split_for_writers([big, small], writers=4)
    assert len(pieces) == 5 and pieces[-1] == small
    assert pa.concat_tables(pieces[:4]) == big
    assert split_for_writers([big, small], writers=1) == [big, small]
    assert split_for_writers([small], writers=4) == [small]


def test_a_cluster_written_as_several_files_holds_exactly_the_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/w")
    applier = IcebergApplier(catalog, source_id="pg")
    position = itertools.count(1)

    def changes(op: str, ids: range, name: str) -> TableChanges:
        rows = [
            {"__op": op, "__commit_pos": next(position), "__event_pos": 0, "id": i, "name": name} for i in ids
        ]
        return TableChanges.from_rows("t", ["id"], SCHEMA, rows)

    applier.apply("db.t", changes("c", range(3000), "a"))
    monkeypatch.setattr(rewrite, "MIN_SPLIT_BYTES", 4096)
    monkeypatch.setattr(rewrite, "usable_cpus", lambda: 3)
    result = applier.apply("db.t", changes("u", range(0, 3000, 7), "b"))
    assert (result.files_rewritten, result.files_added, result.updated) == (1, 3, 429)
    assert result.evidence is not None and result.evidence.matches
    rows = catalog.load_table("db.t").scan().to_arrow().sort_by("id").to_pylist()
    assert rows == [{"id": i, "name": "b" if i % 7 == 0 else "a"} for i in range(3000)]


def test_the_file_list_kept_after_a_commit_is_the_one_its_manifests_hold(tmp_path: Path) -> None:
    """Each overwrite keeps its snapshot's file list (the list before it, less the rewritten files, plus
    the written ones); it equals a fresh read of the snapshot's manifests."""
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/w")
    applier = IcebergApplier(catalog, source_id="pg", target_file_size_bytes=4096)
    position = itertools.count(1)

    def changes(op: str, ids: range, name: str) -> TableChanges:
        rows = [
            {"__op": op, "__commit_pos": next(position), "__event_pos": 0, "id": i, "name": name} for i in ids
        ]
        return TableChanges.from_rows("t", ["id"], SCHEMA, rows)

    for op, ids in [
        ("c", range(2000)),
        ("u", range(0, 2000, 3)),
        ("d", range(500, 900)),
        ("c", range(5000, 5100)),
    ]:
        applier.apply("db.t", changes(op, ids, op))
        table = catalog.load_table("db.t")
        snapshot = table.metadata.current_snapshot()
        assert snapshot is not None
        kept = pruning._LIVE_FILES[(str(table.metadata.table_uuid), snapshot.snapshot_id)]
        pruning._LIVE_FILES.clear()
        read = pruning.live_data_files(table)
        assert sorted(f.file_path for f in kept) == sorted(f.file_path for f in read)
        assert {f.file_path: (f.lower_bounds, f.upper_bounds, f.record_count) for f in kept} == {
            f.file_path: (f.lower_bounds, f.upper_bounds, f.record_count) for f in read
        }


def _fake_root(tmp_path: Path, cgroup: str, cpu_max: str | None) -> Path:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(f"4:memory:/x\n0::{cgroup}\n")
    if cpu_max is not None:
        folder = tmp_path / "sys/fs/cgroup" / cgroup.lstrip("/")
        folder.mkdir(parents=True)
        (folder / "cpu.max").write_text(cpu_max + "\n")
    return tmp_path


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("150000 100000", 2), ("50000 100000", 1), ("max 100000", None), (None, None), ("junk", None)],
)
def test_usable_cpus_follow_the_affinity_mask_and_the_cgroup_quota(
    tmp_path: Path, cpu_max: str | None, expected: int | None
) -> None:
    affinity = len(os.sched_getaffinity(0))
    got = usable_cpus(_fake_root(tmp_path, "/kubepods/pod1/c1", cpu_max))
    assert got == (min(affinity, expected) if expected is not None else affinity)
    assert usable_cpus() >= 1
