"""Plane-side work of the getting-started example: run inside the plane by DataPlane.run."""
