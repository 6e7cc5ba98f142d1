"""Data planes for tests: one builder, so every test file states only what differs."""

from pathlib import Path
from typing import Any

from hybrid_dagster.resources import DataPlane


def make_plane(
    warehouse: Path, name: str = "eu-onprem", jurisdiction: str = "EU", **fields: Any
) -> DataPlane:
    """A plane with a local ``file://`` warehouse at ``warehouse``; ``fields`` override the defaults."""
    settings: dict[str, Any] = {"region": "fra-dc2", "location": "on_prem", **fields}
    return DataPlane(name=name, jurisdiction=jurisdiction, warehouse=f"file://{warehouse}", **settings)
