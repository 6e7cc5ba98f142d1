"""Snapshot expiry of CDC tables on a real SqlCatalog: what is kept, what is deleted, what reads back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.manifest import ManifestContent
from pyiceberg.table import Table

from hybrid_dagster.cdc.changes import Position
from hybrid_dagster.cdc.pipeline import CdcPipeline, TableMapping
from hybrid_dagster.cdc.sink.apply import IcebergApplier
from hybrid_dagster.cdc.sink.maintenance import (
    SnapshotRetention,
    expire_snapshots,
    merge_manifests,
    snapshots_to_expire,
)
from hybrid_dagster.cdc.sink.watermark import read_watermark
from hybrid_dagster.cdc.snapshots import snapshot_state
from hybrid_dagster.cdc.sources.debezium.kafka import table_offsets
from hybrid_dagster.cdc.sources.sql_triggers.source import SqlTriggerChangeSource
from tests.cdc.sink.test_apply import batch, change, content, make_catalog
from tests.cdc.test_pipeline import sqlite_source

FAR_FUTURE_MS = 2**62  # "now" after every snapshot: age alone would expire them all


@pytest.fixture
def catalog(tmp_path: Path) -> SqlCatalog:
    return make_catalog(tmp_path)


def files_on_disk(root: Path) -> set[str]:
    return {
        str(Path(dirpath) / name)
        for dirpath, _, names in os.walk(root / "warehouse")
        for name in names
        if not name.endswith(".metadata.json")
    }


def referenced(table: Table) -> set[str]:
    """Every file a snapshot of ``table`` names: manifest lists, manifests, live data files."""
    out: set[str] = set()
    for snapshot in table.metadata.snapshots:
        out.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            out.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                out.add(entry.data_file.file_path)
    return {p.removeprefix("file://") for p in out}


def updates(applier: IcebergApplier, identifier: str, first_commit: int, count: int) -> None:
    """``count`` batches, each rewriting the file of the one before (an update of every row)."""
    for k in range(count):
        commit = first_commit + k
        applier.apply(
            identifier,
            batch(
                [change("u" if commit > 1 else "c", commit, 0, id=i, name=f"v{commit}") for i in range(20)]
            ),
        )


def set_properties(catalog: SqlCatalog, identifier: str, properties: dict[str, str]) -> None:
    with catalog.load_table(identifier).transaction() as txn:
        txn.set_properties(properties)


def test_history_past_retention_goes_with_the_files_only_it_named(
    tmp_path: Path, catalog: SqlCatalog
) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    updates(applier, "db.t", 1, 8)
    table = catalog.load_table("db.t")
    rows_before = content(catalog, "db.t")
    assert len(table.metadata.snapshots) == 8
    on_disk_before = files_on_disk(tmp_path)

    report = expire_snapshots(table, SnapshotRetention(max_age_s=0, min_snapshots=3), now_ms=FAR_FUTURE_MS)

    table = catalog.load_table("db.t")
    assert len(report.expired_snapshot_ids) == 5 and report.kept_snapshots == 3
    assert [s.snapshot_id for s in table.metadata.snapshots] == [
        s.snapshot_id for s in list(table.snapshots())[-3:]
    ]
    # every batch rewrote all 20 rows: each old data file was live in one snapshot only
    assert report.deleted_manifest_lists == 5
    assert report.deleted_data_files == 5
    assert report.deleted_manifests >= 5
    on_disk_after = files_on_disk(tmp_path)
    assert on_disk_after == referenced(table)  # nothing named is missing, nothing unnamed is left
    assert len(on_disk_before - on_disk_after) == (
        report.deleted_data_files + report.deleted_manifests + report.deleted_manifest_lists
    )
    assert content(catalog, "db.t") == rows_before
    assert table.scan(snapshot_id=table.metadata.snapshots[0].snapshot_id).to_arrow().num_rows == 20
    assert read_watermark(table, "pg") == Position(8, 0)


def test_the_current_snapshot_and_min_snapshots_stay_whatever_their_age(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    updates(applier, "db.t", 1, 4)
    table = catalog.load_table("db.t")
    expire_snapshots(table, SnapshotRetention(max_age_s=0, min_snapshots=1), now_ms=FAR_FUTURE_MS)
    table = catalog.load_table("db.t")
    assert [s.snapshot_id for s in table.metadata.snapshots] == [table.current_snapshot().snapshot_id]
    assert content(catalog, "db.t") == [{"id": i, "name": "v4", "score": None} for i in range(20)]
    with pytest.raises(ValueError, match=r"db\.t: .*min_snapshots >= 1"):
        expire_snapshots(table, SnapshotRetention(max_age_s=0, min_snapshots=0))


def test_young_snapshots_stay_and_the_table_properties_decide_by_default(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    updates(applier, "db.t", 1, 4)
    table = catalog.load_table("db.t")
    assert expire_snapshots(table).expired_snapshot_ids == []  # Iceberg's default: 5 days
    set_properties(
        catalog,
        "db.t",
        {"history.expire.max-snapshot-age-ms": "0", "history.expire.min-snapshots-to-keep": "2"},
    )
    table = catalog.load_table("db.t")
    report = expire_snapshots(table, now_ms=FAR_FUTURE_MS)
    assert len(report.expired_snapshot_ids) == 2 and report.kept_snapshots == 2


def test_what_the_pipeline_reads_back_is_kept(catalog: SqlCatalog) -> None:
    """Watermarks of every source (and the other readers of ``hybrid.cdc.source``) answer the same."""
    pg, other = IcebergApplier(catalog, source_id="pg"), IcebergApplier(catalog, source_id="other")
    pg.apply("db.t", batch([change("c", 5, 0, id=1, name="a")]))
    updates(other, "db.t", 2, 5)  # five newer snapshots of another source
    table = catalog.load_table("db.t")
    table.append(  # and a writer that records no source (e.g. a compaction)
        pa.Table.from_pylist([{"id": 99, "name": "x", "score": None}], schema=table.schema().as_arrow())
    )
    table = catalog.load_table("db.t")
    reads: list[Any] = [read_watermark(table, s) for s in ("pg", "other")]
    reads += [table_offsets(table, "pg"), snapshot_state(table, "pg")]

    report = expire_snapshots(table, SnapshotRetention(max_age_s=0, min_snapshots=1), now_ms=FAR_FUTURE_MS)

    table = catalog.load_table("db.t")
    assert report.expired_snapshot_ids == []  # pg's only snapshot is the oldest: the whole chain stays
    assert [read_watermark(table, s) for s in ("pg", "other")] + [
        table_offsets(table, "pg"),
        snapshot_state(table, "pg"),
    ] == reads
    assert pg.apply("db.t", batch([change("c", 5, 0, id=1, name="a")])).events_skipped == 1

    pg.apply("db.t", batch([change("u", 6, 0, id=1, name="b")]))  # pg's newest is now the current one
    table = catalog.load_table("db.t")
    report = expire_snapshots(table, SnapshotRetention(max_age_s=0, min_snapshots=1), now_ms=FAR_FUTURE_MS)
    table = catalog.load_table("db.t")
    assert read_watermark(table, "pg") == Position(6, 0)
    assert read_watermark(table, "other") == Position(6, 0)  # other's newest snapshot is kept (and between)
    assert len(report.expired_snapshot_ids) == 5


def test_branch_and_tag_heads_are_never_expired(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    updates(applier, "db.t", 1, 3)
    table = catalog.load_table("db.t")
    tagged = table.metadata.snapshots[0].snapshot_id
    table.manage_snapshots().create_tag(tagged, "audit-2026-12").commit()
    table = catalog.load_table("db.t")
    assert tagged not in [
        s.snapshot_id for s in snapshots_to_expire(table.metadata, 0, 1, now_ms=FAR_FUTURE_MS)
    ]
    expire_snapshots(table, SnapshotRetention(max_age_s=0, min_snapshots=1), now_ms=FAR_FUTURE_MS)
    table = catalog.load_table("db.t")
    assert table.scan(snapshot_id=tagged).to_arrow().num_rows == 20


def test_the_residency_guard_runs_before_an_expiry(catalog: SqlCatalog) -> None:
    refused: list[str] = []

    def guard(identifier: str) -> None:
        refused.append(identifier)
        raise PermissionError(f"{identifier}: not from this plane")

    updates(IcebergApplier(catalog, source_id="pg"), "db.t", 1, 3)
    guarded = IcebergApplier(catalog, source_id="pg", before_write=guard)
    with pytest.raises(PermissionError):
        guarded.maintain("db.t", SnapshotRetention(max_age_s=0, min_snapshots=1))
    assert refused == ["db.t"] and len(catalog.load_table("db.t").metadata.snapshots) == 3
    refused.clear()
    nothing = guarded.maintain("db.t", SnapshotRetention(max_age_s=1e9))
    assert nothing is not None and nothing.expired_snapshot_ids == []
    assert refused == []  # nothing to expire: no write, no guard
    assert guarded.maintain("db.missing", SnapshotRetention()) is None


def test_a_running_pipeline_expires_as_it_goes_and_resumes_from_its_watermark(tmp_path: Path) -> None:
    engine, source = sqlite_source(tmp_path)
    catalog = make_catalog(tmp_path / "catalog")
    retention = SnapshotRetention(max_age_s=0, min_snapshots=2, interval_s=0)

    def pipeline(src: SqlTriggerChangeSource) -> CdcPipeline:
        applier = IcebergApplier(catalog, source_id=src.source_id)
        mappings = [TableMapping("patients", "clinical.patients")]
        return CdcPipeline(src, applier, mappings, batch_events=3, retention=retention)

    pipeline(source).run()  # the table copy
    with engine.begin() as conn:  # then the captured changes, three per batch
        for k in range(6):
            conn.exec_driver_sql(f"UPDATE patients SET name = name || '{k}'")
    report = pipeline(source).run()
    table = catalog.load_table("clinical.patients")
    assert report.batches >= 6 and report.expired_snapshots >= 5 and report.deleted_files > 0
    assert len(table.metadata.snapshots) == 2  # the copy's commits went too: the stream committed after
    assert snapshot_state(table, source.source_id).status == "done"
    assert sorted(r["name"] for r in table.scan().to_arrow().to_pylist()) == [
        "Ann012345",
        "Bo012345",
        "Cy012345",
    ]

    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE patients SET name = 'Dee' WHERE id = 2")
    again = pipeline(SqlTriggerChangeSource(engine, ["patients"])).run()  # a new run: watermark read back
    assert again.events_applied == 1
    names = sorted(r["name"] for r in catalog.load_table("clinical.patients").scan().to_arrow().to_pylist())
    assert names == ["Ann012345", "Cy012345", "Dee"]


def data_manifests(table: Table) -> int:
    snapshot = table.current_snapshot()
    assert snapshot is not None
    return sum(m.content == ManifestContent.DATA for m in snapshot.manifests(table.io))


def inserts(applier: IcebergApplier, identifier: str, commits: range) -> None:
    for c in commits:
        applier.apply(identifier, batch([change("c", c, 0, id=c, name=f"n{c}")]))


def test_appends_merge_their_manifests_once_they_are_many(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    inserts(applier, "db.t", range(1, 3))
    set_properties(catalog, "db.t", {"commit.manifest.min-count-to-merge": "5"})
    inserts(applier, "db.t", range(3, 21))
    table = catalog.load_table("db.t")
    assert data_manifests(table) < 5  # pyiceberg alone (merging off by default) would list 20
    assert [r["id"] for r in content(catalog, "db.t")] == list(range(1, 21))
    assert read_watermark(table, "pg") == Position(20, 0)

    set_properties(catalog, "db.t", {"commit.manifest-merge.enabled": "false"})
    inserts(applier, "db.t", range(21, 31))
    assert data_manifests(catalog.load_table("db.t")) >= 10  # the table's own setting wins


def test_overwrites_pile_up_manifests_and_maintenance_merges_them(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    inserts(applier, "db.t", range(1, 13))
    for c in range(13, 25):  # updates: each batch rewrites a file (an overwrite: no merging)
        applier.apply("db.t", batch([change("u", c, 0, id=c - 12, name=f"u{c}")]))
    set_properties(catalog, "db.t", {"commit.manifest.min-count-to-merge": "10"})
    table = catalog.load_table("db.t")
    before, rows = data_manifests(table), content(catalog, "db.t")
    assert before >= 12

    report = applier.maintain("db.t", SnapshotRetention(max_age_s=0, min_snapshots=1))
    assert report is not None and report.manifests_merged_away == before - 1
    table = catalog.load_table("db.t")
    assert data_manifests(table) == 1
    assert content(catalog, "db.t") == rows and read_watermark(table, "pg") == Position(24, 0)
    # the merge changed no file: the next batch applies on top as usual
    applier.apply("db.t", batch([change("u", 25, 0, id=1, name="last")]))
    assert content(catalog, "db.t")[0]["name"] == "last"
    assert merge_manifests(catalog.load_table("db.t")) == 0  # 2 manifests: under the minimum


def test_overwrites_merge_their_manifests_once_they_are_many(catalog: SqlCatalog) -> None:
    applier = IcebergApplier(catalog, source_id="pg")
    inserts(applier, "db.t", range(1, 3))
    set_properties(catalog, "db.t", {"commit.manifest.min-count-to-merge": "5"})
    inserts(applier, "db.t", range(3, 4))
    for c in range(4, 30):  # each batch rewrites the file holding a key (overwrites)
        applier.apply(
            "db.t", batch([change("u", c, 0, id=c % 3 + 1, name=f"u{c}"), change("c", c, 1, id=100 + c)])
        )
    table = catalog.load_table("db.t")
    assert table.current_snapshot().summary.operation.value == "overwrite"
    assert data_manifests(table) < 5  # pyiceberg's overwrite alone would list one more per batch
    rows = content(catalog, "db.t")
    assert [r["id"] for r in rows] == [1, 2, 3, *range(104, 130)]
    assert {r["id"]: r["name"] for r in rows}[1] == "u27" and read_watermark(table, "pg") == Position(29, 1)
