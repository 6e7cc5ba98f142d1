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


def test_help_shows_a_complete_spec_that_validates() -> None:
    import inspect

    from hybrid_dagster.assets.cdc_tables import cdc_table_assets
    from hybrid_dagster.cdc.worker import DEFAULT_MAX_SECONDS, CdcJobSpec
    from hybrid_dagster.cli import build_parser

    parser = build_parser()
    run = (
        next(action.choices["cdc"] for action in parser._actions if getattr(action, "choices", None))
        ._actions[-1]
        .choices["run"]
    )
    text = run.format_help()
    start, end = (
        text.index("job spec example (job.json):\n") + len("job spec example (job.json):\n"),
        text.index("\n}\n"),
    )
    spec = CdcJobSpec.model_validate_json(text[start : end + 2])
    assert spec.tables[0].data_jurisdictions == ["EU"] and spec.source.kind == "postgres"
    assert "CdcJobSpec" not in text and "load_catalog()" in text
    # The CLI's defaults are the asset factory's.
    factory = inspect.signature(cdc_table_assets).parameters
    assert spec.max_seconds == factory["max_seconds"].default == DEFAULT_MAX_SECONDS
    assert spec.dead_letter_policy == factory["dead_letter_policy"].default
    assert spec.dead_letter_table == "clinical._dead_letters"


def test_dead_letter_table_can_be_turned_off_explicitly() -> None:
    from hybrid_dagster.cdc.worker import SPEC_EXAMPLE, CdcJobSpec

    assert CdcJobSpec.model_validate({**SPEC_EXAMPLE, "dead_letter_table": None}).dead_letter_table is None
    assert (
        CdcJobSpec.model_validate({**SPEC_EXAMPLE, "dead_letter_table": "x.dl"}).dead_letter_table == "x.dl"
    )


def test_missing_data_jurisdictions_says_what_to_write(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    with sa.create_engine(url).begin() as conn:
        conn.exec_driver_sql("CREATE TABLE wards (id INTEGER PRIMARY KEY)")
    spec = {
        "source": {"kind": "sql_triggers", "url": url},
        "tables": [{"source_table": "wards", "identifier": "ops.wards"}],
    }
    plane = make_plane(tmp_path / "warehouse")
    (tmp_path / "job.json").write_text(json.dumps(spec))
    (tmp_path / "plane.json").write_text(json.dumps(plane.to_config()))
    cli = str(Path(sys.executable).parent / "hybrid-dagster")
    argv = [cli, "cdc", "run", "--spec", str(tmp_path / "job.json"), "--plane", str(tmp_path / "plane.json")]
    result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f'"data_jurisdictions": ["{plane.jurisdiction}"]' in result.stderr and "ops.wards" in result.stderr


def test_docs_show_the_same_spec_and_plane_that_validate() -> None:
    from hybrid_dagster.cdc.worker import SPEC_EXAMPLE, CdcJobSpec
    from hybrid_dagster.resources import DataPlane

    text = (REPO_ROOT / "docs" / "cdc.md").read_text(encoding="utf-8")
    blocks = text.split("```json\n")[1:]
    spec, plane = (json.loads(block.split("```")[0]) for block in blocks[:2])
    assert (
        spec == SPEC_EXAMPLE and CdcJobSpec.model_validate(spec).dead_letter_table == "clinical._dead_letters"
    )
    assert DataPlane.from_config(plane).name == "eu-onprem"
