"""Plane-side work of the example: each module runs inside one data plane through Dagster Pipes."""
