"""The raw change log: date partitions, names from the first position, overwrite on replay."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from hybrid_dagster.cdc.sink.apply import IcebergApplier
from hybrid_dagster.cdc.sink.changelog import ChangelogWriter
from tests.cdc.sink.test_apply import batch, change, make_catalog

MAY_1 = datetime(2024, 5, 1, 23, 59, tzinfo=UTC)
MAY_2 = datetime(2024, 5, 2, 0, 1, tzinfo=UTC)


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))


def test_partitioned_by_commit_date_with_unknown(tmp_path: Path) -> None:
    log = ChangelogWriter(str(tmp_path))
    paths = log.write(
        "db.t",
        batch(
            [
                {**change("c", 20, 1, id=2), "__commit_ts": MAY_2},
                {**change("c", 10, 5, id=1), "__commit_ts": MAY_1},
                change("d", 30, 0, id=1),
            ]
        ),
    )
    assert files(tmp_path) == [
        "db.t/commit_date=2024-05-01/from-10_5.parquet",
        "db.t/commit_date=2024-05-02/from-10_5.parquet",
        "db.t/commit_date=unknown/from-10_5.parquet",
    ]
    assert len(paths) == 3
    first = pq.read_table(tmp_path / "db.t/commit_date=2024-05-01/from-10_5.parquet")
    assert first.column_names[:3] == ["__op", "__commit_pos", "__event_pos"]
    assert first["id"].to_pylist() == [1]


def test_file_uri_root(tmp_path: Path) -> None:
    ChangelogWriter(f"file://{tmp_path}/log").write(
        "db.t", batch([{**change("c", 1, 0, id=1), "__commit_ts": MAY_1}])
    )
    assert files(tmp_path / "log") == ["db.t/commit_date=2024-05-01/from-1_0.parquet"]


def test_replay_overwrites_and_removes_stale_partitions(tmp_path: Path) -> None:
    log = ChangelogWriter(str(tmp_path))
    log.write("db.t", batch([{**change("c", 1, 0, id=1), "__commit_ts": MAY_1}, change("c", 2, 0, id=2)]))
    log.write("db.t", batch([{**change("c", 1, 0, id=1), "__commit_ts": MAY_2}]))
    assert files(tmp_path) == ["db.t/commit_date=2024-05-02/from-1_0.parquet"]


def test_applier_writes_changes_after_the_watermark_before_committing(tmp_path: Path) -> None:
    catalog = make_catalog(tmp_path / "catalog")
    log_root = tmp_path / "log"
    applier = IcebergApplier(catalog, source_id="pg", changelog=ChangelogWriter(str(log_root)))
    first = [{**change("c", 1, 0, id=1), "__commit_ts": MAY_1}]
    applier.apply("db.t", batch(first))
    second = [*first, {**change("u", 2, 0, id=1, name="b"), "__commit_ts": MAY_2}]
    applier.apply("db.t", batch(second))
    applier.apply("db.t", batch(second))  # a replay of everything: nothing new, nothing written

    assert files(log_root) == [
        "db.t/commit_date=2024-05-01/from-1_0.parquet",
        "db.t/commit_date=2024-05-02/from-2_0.parquet",
    ]
    assert pq.read_table(log_root / "db.t/commit_date=2024-05-02/from-2_0.parquet").num_rows == 1
