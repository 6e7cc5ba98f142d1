"""Plane work that reads the EU patients table and writes a copy into its own plane."""

from hybrid_dagster.plane.work import open_plane_work

with open_plane_work() as work:
    rows = work.read_table("eu-onprem", "clinic.patients")
    key = work.pipes.get_extra("asset")
    work.report(key, work.write_table(key, "copies.patients", rows))
