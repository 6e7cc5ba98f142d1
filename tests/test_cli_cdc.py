"""`hybrid-dagster cdc run`: the plane-side CDC work started by hand from a JSON job spec."""

import json
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from tests.planes import make_plane

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_cdc_run_streams_a_source_and_prints_a_json_report(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    with sa.create_engine(url).begin() as conn:
        conn.exec_driver_sql("CREATE TABLE wards (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        conn.exec_driver_sql("INSERT INTO wards VALUES (1, 'icu'), (2, 'er')")
    plane = make_plane(tmp_path / "warehouse")
    spec = {
        "source": {"kind": "sql_triggers", "url": url},
        "tables": [
            {
                "source_table": "wards",
                "identifier": "ops.wards",
                "classification": "internal",
                "data_jurisdictions": ["EU"],
            }
        ],
    }
    (tmp_path / "job.json").write_text(json.dumps(spec))
    (tmp_path / "plane.json").write_text(json.dumps(plane.to_config()))
    cli = str(Path(sys.executable).parent / "hybrid-dagster")
    argv = [cli, "cdc", "run", "--spec", str(tmp_path / "job.json"), "--plane", str(tmp_path / "plane.json")]
    result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["tables"]["ops.wards"]["row_count"] == 2
    assert report["tables"]["ops.wards"]["snapshot_rows"] == 2
    assert plane.load_catalog().load_table("ops.wards").scan().to_arrow().num_rows == 2
