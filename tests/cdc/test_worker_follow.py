"""The worker's long-running mode (what a follow-mode CDC asset runs in the plane): bounded, and it
applies changes committed while it runs."""

import threading
import time
from pathlib import Path

import sqlalchemy as sa

from hybrid_dagster.cdc.worker import CdcJobSpec, FollowSpec, run_job
from tests.planes import make_plane


def test_follow_mode_applies_new_changes_until_max_seconds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE wards (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        conn.exec_driver_sql("INSERT INTO wards VALUES (1, 'icu'), (2, 'oncology')")
    spec = CdcJobSpec.model_validate(
        {
            "source": {"kind": "sql_triggers", "url": url, "consumer": "eu"},
            "tables": [{"source_table": "wards", "identifier": "clinic.wards", "data_jurisdictions": ["EU"]}],
            "follow": FollowSpec(target_latency_s=0.4, max_seconds=2.0).model_dump(),
        }
    )

    def later_insert() -> None:
        time.sleep(0.8)
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO wards VALUES (3, 'cardiology')")

    writer = threading.Thread(target=later_insert)
    started = time.monotonic()
    writer.start()
    _report, facts = run_job(spec, make_plane(tmp_path / "eu-onprem", "eu-onprem", "EU"))
    writer.join()
    assert time.monotonic() - started >= 2.0  # followed for max_seconds, not stopped when drained
    assert facts["clinic.wards"]["row_count"] == 3 and facts["clinic.wards"]["caught_up"]
