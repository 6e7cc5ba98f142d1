"""Code that runs inside a data plane (the far side of Dagster Pipes)."""
