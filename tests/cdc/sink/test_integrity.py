"""The batch evidence's worker thread: an error there abandons the commit like one in the read-back."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from hybrid_dagster.audit.content_hash import content_sha256
from hybrid_dagster.cdc.changes import TableChanges
from hybrid_dagster.cdc.sink import integrity
from hybrid_dagster.cdc.sink.apply import IcebergApplier

SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("name", pa.string())])


def changes(op: str, ids: range, name: str, commit: int) -> TableChanges:
    rows = [{"__op": op, "__commit_pos": commit, "__event_pos": i, "id": i, "name": name} for i in ids]
    return TableChanges.from_rows("t", ["id"], SCHEMA, rows)


@pytest.mark.parametrize("failing", ["worker", "caller"])
def test_an_error_while_hashing_abandons_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/w")
    applier = IcebergApplier(catalog, source_id="pg")
    applier.apply("db.t", changes("c", range(10), "a", 1))
    before = catalog.load_table("db.t").current_snapshot()
    files_before = set((tmp_path / "w").rglob("*.parquet"))
    main = threading.current_thread()

    def hash_or_fail(table: pa.Table) -> str:
        on_worker = threading.current_thread() is not main
        if on_worker == (failing == "worker"):
            raise OSError("disk went away")
        return content_sha256(table)

    monkeypatch.setattr(integrity, "content_sha256", hash_or_fail)
    with pytest.raises(OSError, match="disk went away"):
        applier.apply("db.t", changes("u", range(5), "b", 2))
    table = catalog.load_table("db.t")
    assert table.current_snapshot() == before  # nothing committed: the source is not acknowledged
    assert set((tmp_path / "w").rglob("*.parquet")) == files_before  # the staged files are gone
    assert not [t for t in threading.enumerate() if t.name.startswith("cdc-evidence")]
    monkeypatch.undo()
    assert applier.apply("db.t", changes("u", range(5), "b", 2)).evidence is not None
