"""us-cloud: EU ward occupancy (crossing on the declared SCC route) beside US claims per ward."""

import pyarrow as pa

from hybrid_dagster.plane.work import open_plane_work


def benchmark(eu_occupancy: pa.Table, us_totals: pa.Table) -> pa.Table:
    eu = (
        eu_occupancy.group_by("ward")
        .aggregate([("admissions", "sum")])
        .rename_columns(["ward", "eu_admissions"])
    )
    # pyiceberg reads strings as string or large_string depending on the files; join on one type
    eu = _ward_as_string(eu)
    return eu.join(_ward_as_string(us_totals), "ward", join_type="full outer").sort_by("ward")


def _ward_as_string(table: pa.Table) -> pa.Table:
    index = table.schema.get_field_index("ward")
    return table.set_column(index, "ward", table.column("ward").cast(pa.string()))


if __name__ == "__main__":
    with open_plane_work() as work:
        eu = work.read_table("eu-onprem", "analytics.ward_occupancy")
        us = work.read_table("us-onprem", "claims.by_ward")
        key = "analytics/group_ward_benchmark"
        work.report(key, work.write_table(key, "analytics.group_ward_benchmark", benchmark(eu, us)))
