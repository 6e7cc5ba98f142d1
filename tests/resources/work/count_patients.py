"""Plane-side work used by the DataPlane tests: reads restricted rows, reports only metadata."""

import os

import pyarrow.csv as pv
from dagster_pipes import open_dagster_pipes

from hybrid_dagster.resources import DataPlane

with open_dagster_pipes() as pipes:
    plane = DataPlane.from_env()
    rows = pv.read_csv(pipes.get_extra("path"))
    print(f"plane-local debug output: first patient {rows.column('name')[0]}")
    metadata: dict = {
        "dagster/row_count": rows.num_rows,
        "plane_env_seen": os.environ.get("CLINICAL_SITE") == "fra-dc2",
    }
    if pipes.get_extra("leak"):
        metadata["sample"] = {"raw_value": str(rows.column("name")[0]), "type": "text"}
    pipes.report_asset_materialization(metadata=metadata)
