"""CdcPipeline on real components: a SQLite source with capture triggers, a SqlCatalog in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from hybrid_dagster.cdc.pipeline import CdcPipeline, TableMapping
from hybrid_dagster.cdc.sink.apply import IcebergApplier
from hybrid_dagster.cdc.sources.sql_triggers.source import SqlTriggerChangeSource
from hybrid_dagster.errors import MissingWatermarkError
from tests.cdc.sink.test_apply import make_catalog


def sqlite_source(tmp_path: Path) -> tuple[sa.Engine, SqlTriggerChangeSource]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE patients (id INTEGER PRIMARY KEY, name TEXT)")
        conn.exec_driver_sql("INSERT INTO patients VALUES (1, 'Ann'), (2, 'Bo'), (3, 'Cy')")
    return engine, SqlTriggerChangeSource(engine, ["patients"])


def pipeline(tmp_path: Path, source: SqlTriggerChangeSource) -> CdcPipeline:
    applier = IcebergApplier(make_catalog(tmp_path / "catalog"), source_id=source.source_id)
    return CdcPipeline(source, applier, [TableMapping("patients", "clinical.patients")])


def names(tmp_path: Path) -> list[str]:
    rows = make_catalog(tmp_path / "catalog").load_table("clinical.patients").scan().to_arrow().to_pylist()
    return sorted(r["name"] for r in rows)


def test_a_table_with_rows_but_no_watermark_is_not_copied_again(tmp_path: Path) -> None:
    engine, source = sqlite_source(tmp_path)
    try:
        pipeline(tmp_path, source).run()
        assert names(tmp_path) == ["Ann", "Bo", "Cy"]
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM patients WHERE id = 2")
        # Another writer commits, then snapshot expiry drops every snapshot carrying the watermark.
        table = make_catalog(tmp_path / "catalog").load_table("clinical.patients")
        table.append(pa.Table.from_pylist([{"id": 9, "name": "Zed"}], schema=table.schema().as_arrow()))
        table = make_catalog(tmp_path / "catalog").load_table("clinical.patients")
        current = table.current_snapshot()
        assert current is not None
        older = [s.snapshot_id for s in table.metadata.snapshots if s.snapshot_id != current.snapshot_id]
        table.maintenance.expire_snapshots().by_ids(older).commit()

        again = pipeline(tmp_path, SqlTriggerChangeSource(engine, ["patients"]))
        assert again.applier.watermark("clinical.patients") is None
        with pytest.raises(MissingWatermarkError, match=r"clinical\.patients holds 4 rows") as raised:
            again.run()
        message = str(raised.value)
        assert source.source_id in message and "drop or rename" in message and "record_position" in message
        assert "Ann" not in message
        assert names(tmp_path) == ["Ann", "Bo", "Cy", "Zed"]  # nothing copied on top
    finally:
        source.close()


def test_an_empty_table_without_watermark_is_copied(tmp_path: Path) -> None:
    _, source = sqlite_source(tmp_path)
    catalog = make_catalog(tmp_path / "catalog")
    catalog.create_namespace("clinical")
    catalog.create_table("clinical.patients", schema=pa.schema([("id", pa.int64()), ("name", pa.string())]))
    pipeline(tmp_path, source).run()
    assert names(tmp_path) == ["Ann", "Bo", "Cy"]
