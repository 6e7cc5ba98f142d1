"""The DR step of `make demo`: its ``dr`` section, and the example's EU plane served by a secondary alone."""

import shutil
from pathlib import Path

from hybrid_dagster.dr import replicate_plane, secondary_plane
from hybrid_dagster.plane import storage
from hybrid_dagster.plane.config import DrSecondaryConfig
from hybrid_dagster.residency import ResidencyPolicy
from hybrid_dagster.resources import DataPlane
from tests.examples.conftest import Demo


def test_dr_replicates_every_eu_table_and_its_drill_meets_the_objectives(demo: Demo, tmp_path: Path) -> None:
    """The DR hook's section (``examples/clinical_ai/demo_dr.py``: EU on-prem to S3 on moto), and every
    table of the example's EU plane served row for row by a secondary alone, the primary's folder gone."""
    [dr] = demo.summary["dr"]
    assert dr["plane"] == "eu-onprem" and dr["secondary"] == "eu-dr-s3"
    assert isinstance(dr["tables_replicated"], int) and dr["tables_replicated"] >= 3
    assert isinstance(dr["rto_s"], float) and 0 < dr["rto_s"] < 900
    assert dr["rpo_s"] == 0.0 and dr["rpo_changes"] == 0 and dr["objectives_met"] is True

    warehouse = demo.home / "planes" / "eu-onprem" / "warehouse"
    eu = DataPlane(
        name="eu-onprem",
        jurisdiction="EU",
        region="fra-dc2",
        location="on_prem",
        warehouse=f"file://{warehouse}",
        dr_secondary=DrSecondaryConfig(jurisdiction="EU", warehouse=f"file://{tmp_path / 'eu-dr'}"),
    )
    secondary = secondary_plane(eu)
    result = replicate_plane(eu, secondary, ResidencyPolicy())
    tables = [t.identifier for t in result.tables]
    assert {"clinical.patients", "clinical.encounters", "clinical.lab_results"} <= set(tables)
    primary = eu.load_catalog()
    want = {t: primary.load_table(t).scan().to_arrow() for t in tables}
    aside = warehouse.with_name("warehouse-lost")
    warehouse.rename(aside)
    try:
        copy = storage.open_catalog(secondary.spec())
        for table in tables:
            got = copy.load_table(table).scan().to_arrow()
            assert got.num_rows == want[table].num_rows, table
            assert sorted(got.to_pylist(), key=repr) == sorted(want[table].to_pylist(), key=repr), table
    finally:
        aside.rename(warehouse)
    shutil.rmtree(tmp_path / "eu-dr", ignore_errors=True)
