"""Plane work that fails with a row value in its message."""

from hybrid_dagster.plane.work import open_plane_work

with open_plane_work():
    raise ValueError("cannot parse birth date of patient 'Ingrid Solberg-Vance'")
