"""eu-onprem: admissions per ward and month, with cells under k suppressed (de-identification)."""

import pyarrow as pa
import pyarrow.compute as pc

from hybrid_dagster.plane.work import open_plane_work

K_ANONYMITY = 10


def occupancy(encounters: pa.Table, k: int = K_ANONYMITY) -> pa.Table:
    months = pc.floor_temporal(encounters.column("admitted_at"), unit="month")
    counts = (
        pa.table({"ward": encounters.column("ward"), "month": months})
        .group_by(["ward", "month"])
        .aggregate([([], "count_all")])
        .rename_columns(["ward", "month", "admissions"])
    )
    return counts.filter(pc.greater_equal(counts.column("admissions"), k))


if __name__ == "__main__":
    with open_plane_work() as work:
        encounters = work.read_table("eu-onprem", "clinical.encounters")
        result = occupancy(encounters)
        metadata = work.write_table("analytics/eu_ward_occupancy", "analytics.ward_occupancy", result)
        metadata["suppressed_below_k"] = {"raw_value": K_ANONYMITY, "type": "int"}
        work.report("analytics/eu_ward_occupancy", metadata)
