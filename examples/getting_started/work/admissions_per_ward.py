"""Runs inside eu-onprem: reads the admissions table, writes counts per ward (at least 10 each)."""

import pyarrow as pa
import pyarrow.compute as pc

from hybrid_dagster.plane.work import open_plane_work

KEY = "clinic/admissions_per_ward"


def per_ward(admissions: pa.Table, k: int = 10) -> pa.Table:
    counts = admissions.group_by("ward").aggregate([([], "count_all")]).rename_columns(["ward", "admissions"])
    return counts.filter(pc.greater_equal(counts["admissions"], k))


if __name__ == "__main__":
    with open_plane_work() as work:
        admissions = work.read_table("eu-onprem", "clinic.admissions")
        work.report(KEY, work.write_table(KEY, "clinic.admissions_per_ward", per_ward(admissions)))
