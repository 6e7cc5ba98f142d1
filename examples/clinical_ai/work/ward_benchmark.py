"""us-cloud: EU ward occupancy (crossing on the declared SCC route) beside US claims per ward."""

import pyarrow as pa

from hybrid_dagster.plane.work import open_plane_work


def benchmark(eu_occupancy: pa.Table, us_totals: pa.Table) -> pa.Table:
    eu = (
        eu_occupancy.group_by("ward")
        .aggregate([("admissions", "sum")])
        .rename_columns(["ward", "eu_admissions"])
    )
    return eu.join(us_totals, "ward", join_type="full outer").sort_by("ward")


if __name__ == "__main__":
    with open_plane_work() as work:
        eu = work.read_table("eu-onprem", "analytics.ward_occupancy")
        us = work.read_table("us-onprem", "claims.by_ward")
        key = "analytics/group_ward_benchmark"
        work.report(key, work.write_table(key, "analytics.group_ward_benchmark", benchmark(eu, us)))
