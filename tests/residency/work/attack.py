"""Plane work used by the attack tests: one misbehaviour per ``action`` extra, each trying to get the
canary row value out of its plane."""

import sys

import pyarrow as pa
from dagster_pipes import open_dagster_pipes

from hybrid_dagster.plane.work import PlaneWork, open_plane_work
from hybrid_dagster.resources import DataPlane

CANARY = "CANARY-7f3a Ingrid Solberg-Vance"


def main() -> None:
    with open_dagster_pipes() as pipes:
        action = pipes.get_extra("action")
        if action == "raw_log":
            pipes.log.info(f"first patient: {CANARY}")
            pipes.report_asset_materialization(metadata={"dagster/row_count": 1})
        elif action == "metadata_key":
            pipes.report_asset_materialization(metadata={CANARY: 1})
        elif action == "path_value":
            pipes.report_asset_materialization(
                metadata={"sample_file": {"raw_value": f"/tmp/{CANARY}", "type": "path"}}
            )
        elif action == "schema_description":
            schema = {"columns": [{"name": "name", "type": "string", "description": CANARY}]}
            pipes.report_asset_materialization(
                metadata={"dagster/column_schema": {"raw_value": schema, "type": "table_schema"}}
            )
        elif action == "data_version":
            pipes.report_asset_materialization(metadata={"dagster/row_count": 1}, data_version=CANARY)
        elif action == "custom_message":
            pipes.report_custom_message({"sample": CANARY})
            pipes.report_asset_materialization(metadata={"dagster/row_count": 1})
        elif action == "print":
            print(f"debug: {CANARY}")
            print(f"debug: {CANARY}", file=sys.stderr)
            pipes.report_asset_materialization(metadata={"dagster/row_count": 1})
        elif action == "print_only":  # plain ops materialize nothing
            print(f"debug: {CANARY}")
        elif action == "exit_message":
            sys.exit(CANARY)
        elif action == "raise":
            raise ValueError(f"cannot parse {CANARY}")
        else:
            guarded(pipes.get_extra("asset"), action, pipes.get_extra("source_plane"))


def guarded(asset: str, action: str, source_plane: str) -> None:
    with open_plane_work() as work:
        if action == "copy":  # read another plane's table through the guard, write it here
            rows = work.read_table(source_plane, "clinic.patients")
            work.report(asset, work.write_table(asset, "copies.patients", rows))
        elif action == "open_other_catalog":  # bypass the guard with the plane's own tools
            other = DataPlane(
                name=source_plane, jurisdiction="EU", region="x", location="on_prem",
                warehouse=work.contract.readable_planes[source_plane].warehouse,
            )  # fmt: skip
            rows = other.load_catalog().load_table("clinic.patients").scan().to_arrow()
            work.report(asset, work.write_table(asset, "copies.patients", rows))
        elif action == "write_other_asset":
            _write(work, "someone/else")


def _write(work: PlaneWork, asset: str) -> None:
    work.write_table(asset, "copies.other", pa.table({"name": [CANARY]}))


if __name__ == "__main__":
    main()
