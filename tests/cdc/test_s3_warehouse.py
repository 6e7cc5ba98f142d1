"""A plane whose warehouse is on S3 (moto server over real HTTP): tables and change log land there."""

from pathlib import Path

import sqlalchemy as sa

from hybrid_dagster.cdc.worker import CdcJobSpec, run_job
from hybrid_dagster.resources import CatalogConfig, DataPlane, ExecutorConfig


def test_cdc_into_an_s3_warehouse(moto_server, tmp_path: Path) -> None:
    s3 = moto_server.client("s3")
    s3.create_bucket(Bucket="eu-lake")
    plane = DataPlane(
        name="eu-cloud",
        jurisdiction="EU",
        region="eu-central-1",
        location="cloud",
        warehouse="s3://eu-lake/warehouse",
        catalog=CatalogConfig(
            uri=f"sqlite:///{tmp_path / 'catalog.db'}", properties=moto_server.s3_properties()
        ),
        executor=ExecutorConfig(work_log_dir=str(tmp_path / "logs")),
    )
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    with sa.create_engine(url).begin() as conn:
        conn.exec_driver_sql("CREATE TABLE wards (id INTEGER PRIMARY KEY, name TEXT NOT NULL, beds INTEGER)")
        conn.exec_driver_sql("INSERT INTO wards VALUES (1, 'icu', 12), (2, 'er', 30)")
    spec = CdcJobSpec.model_validate(
        {
            "source": {"kind": "sql_triggers", "url": url, "consumer": "eu-cloud"},
            "tables": [
                {
                    "source_table": "wards",
                    "identifier": "ops.wards",
                    "asset_key": "ops/wards",
                    "classification": "confidential",
                    "home_plane": "eu-cloud",
                    "data_jurisdictions": ["EU"],
                }
            ],
        }
    )
    run_job(spec, plane)
    with sa.create_engine(url).begin() as conn:
        conn.exec_driver_sql("UPDATE wards SET beds = 14 WHERE id = 1")
        conn.exec_driver_sql("INSERT INTO wards VALUES (3, 'neo', 8)")
    _, facts = run_job(spec, plane)
    assert (facts["ops.wards"]["inserted"], facts["ops.wards"]["updated"]) == (1, 1)

    rows = plane.load_catalog().load_table("ops.wards").scan().to_arrow().sort_by("id").to_pylist()
    assert [(r["id"], r["beds"]) for r in rows] == [(1, 14), (2, 30), (3, 8)]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="eu-lake")["Contents"]]
    assert any(k.startswith("warehouse/ops/wards/data/") and k.endswith(".parquet") for k in keys), keys
    assert any(k.startswith("warehouse/_changelog/ops.wards/commit_date=") for k in keys), keys
    assert plane.work_log_path("run", "step") == tmp_path / "logs" / "run" / "step.log"
