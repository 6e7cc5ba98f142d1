"""Helpers for end-to-end CDC tests: a plane, a job spec, and row-for-row comparison with PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2
import psycopg2.extras
import pyarrow.compute as pc

from examples.clinical_ai.hospital_db import TABLES
from hybrid_dagster.cdc.changes import Position
from hybrid_dagster.cdc.worker import CdcJobSpec, CdcTableSpec
from hybrid_dagster.resources import DataPlane
from tests.cdc.strict import diff_tables
from tests.planes import make_plane

KEYS = {
    "public.patients": "patient_id",
    "public.encounters": "encounter_id",
    "public.lab_results": "result_id",
}


def plane_at(warehouse: Path) -> DataPlane:
    return make_plane(warehouse)


def job_spec(
    dsn: str, decoder: str, slot: str, *, batch_events: int = 50_000, reader: str = "stream"
) -> CdcJobSpec:
    """The end-to-end tests (equivalence, SIGKILL at random points) run the stream reader; the peek
    reader's own tests are in tests/cdc/sources/postgres/test_source.py."""
    return CdcJobSpec.model_validate(
        {
            "source": {
                "kind": "postgres",
                "dsn": dsn,
                "slot_name": slot,
                "decoder": decoder,
                "reader": reader,
            },
            "tables": [
                CdcTableSpec(
                    source_table=t,
                    identifier=f"clinical.{t.split('.')[1]}",
                    asset_key=f"clinical/{t.split('.')[1]}",
                    classification="restricted",
                    home_plane="eu-onprem",
                    data_jurisdictions=["EU"],
                ).model_dump()
                for t in TABLES
            ],
            "dead_letter_table": "clinical._dead_letters",
            "batch_events": batch_events,
        }
    )


def write_job_files(tmp_path: Path, spec: CdcJobSpec, plane: DataPlane) -> tuple[Path, Path]:
    spec_path, plane_path = tmp_path / "job.json", tmp_path / "plane.json"
    spec_path.write_text(spec.model_dump_json())
    plane_path.write_text(json.dumps(plane.to_config()))
    return spec_path, plane_path


def assert_equal_to_source(dsn: str, plane: DataPlane) -> None:
    """Every clinical table equals ``SELECT *`` strictly (:mod:`tests.cdc.strict`): columns, documented
    types, keys, and every value with its type, decimal scale, instant and float bits."""
    catalog = plane.load_catalog()
    problems: list[str] = []
    for table in TABLES:
        identifier = f"clinical.{table.split('.')[1]}"
        problems += diff_tables(dsn, table, catalog.load_table(identifier).scan().to_arrow(), [KEYS[table]])
    assert not problems, "\n".join(problems)


def table_watermarks(plane: DataPlane) -> dict[str, Position | None]:
    catalog = plane.load_catalog()
    out: dict[str, Position | None] = {}
    for table in TABLES:
        identifier = f"clinical.{table.split('.')[1]}"
        if not catalog.table_exists(identifier):
            out[identifier] = None
            continue
        snapshot = catalog.load_table(identifier).current_snapshot()
        raw = snapshot.summary.get("hybrid.cdc.position") if snapshot and snapshot.summary else None
        out[identifier] = Position.decode(raw) if raw else None
    return out


def duplicate_keys(plane: DataPlane, identifier: str, key: str) -> int:
    table = plane.load_catalog().load_table(identifier).scan(selected_fields=(key,)).to_arrow()
    return table.num_rows - pc.count_distinct(table.column(key)).as_py()


def slot_confirmed_lsn(dsn: str, slot: str) -> int | None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        )
        row = cur.fetchone()
    conn.close()
    return int(row[0]) if row and row[0] is not None else None


def changelog_positions(plane: DataPlane, identifier: str) -> list[tuple[int, int]]:
    """(commit, event) of every streamed change in the table's raw change log (Parquet, partitioned by
    date). Snapshot rows (op ``r``) all share the hand-off position, so they are left out."""
    import pyarrow.dataset as ds

    root = plane.warehouse_path / "_changelog" / identifier
    if not root.exists():
        return []
    dataset = ds.dataset(root, format="parquet", partitioning="hive")
    log = dataset.to_table(columns=["__commit_pos", "__event_pos"], filter=ds.field("__op") != "r")
    return list(
        zip(log.column("__commit_pos").to_pylist(), log.column("__event_pos").to_pylist(), strict=True)
    )
