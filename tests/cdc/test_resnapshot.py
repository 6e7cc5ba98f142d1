"""``hybrid-dagster cdc resnapshot``: one table of a job copied afresh while the job's others stream on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_dagster.cdc.worker import CdcJobSpec, CdcTableSpec, UnknownCdcTableError, resnapshot, run_job
from hybrid_dagster.cli import main
from tests.cdc.strict import diff_tables
from tests.fixtures.postgres import PgDatabase, execute
from tests.planes import make_plane


def spec_for(dsn: str) -> CdcJobSpec:
    tables = [
        CdcTableSpec(
            source_table=f"public.{name}",
            identifier=f"clinical.{name}",
            asset_key=f"clinical/{name}",
            classification="restricted",
            home_plane="eu-onprem",
            data_jurisdictions=["EU"],
        ).model_dump()
        for name in ("wards", "beds")
    ]
    return CdcJobSpec.model_validate(
        {"source": {"kind": "postgres", "dsn": dsn, "slot_name": "resnap"}, "tables": tables}
    )


def test_cli_resnapshot_copies_one_table_afresh(pg_db: PgDatabase, tmp_path: Path, capsys) -> None:
    execute(
        pg_db.dsn,
        "CREATE TABLE wards (id int PRIMARY KEY, name text)",
        "CREATE TABLE beds (id int PRIMARY KEY, ward int)",
        "INSERT INTO wards SELECT g, 'w' || g FROM generate_series(1, 50) g",
        "INSERT INTO beds SELECT g, g % 50 FROM generate_series(1, 200) g",
    )
    plane, spec = make_plane(tmp_path / "warehouse"), spec_for(pg_db.dsn)
    run_job(spec, plane)
    spec_path, plane_path = tmp_path / "job.json", tmp_path / "plane.json"
    spec_path.write_text(spec.model_dump_json())
    plane_path.write_text(json.dumps(plane.to_config()))
    execute(pg_db.dsn, "UPDATE wards SET name = 'x' WHERE id < 10", "DELETE FROM beds WHERE id > 150")

    args = ["cdc", "resnapshot", "--spec", str(spec_path), "--plane", str(plane_path)]
    assert main([*args, "--table", "clinical.wards"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "requested"
    catalog = plane.load_catalog()
    assert catalog.load_table("clinical.wards").scan().to_arrow().num_rows == 0
    assert catalog.load_table("clinical.beds").scan().to_arrow().num_rows == 200  # untouched

    run_job(spec, plane)
    for name in ("wards", "beds"):
        rows = plane.load_catalog().load_table(f"clinical.{name}").scan().to_arrow()
        assert not diff_tables(pg_db.dsn, f"public.{name}", rows, ["id"])
    with pytest.raises(UnknownCdcTableError, match=r"clinical\.rooms is not a table of this CDC job"):
        resnapshot(spec, plane, "clinical.rooms")
