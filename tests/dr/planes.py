"""Small labelled planes for the DR tests: three clinical-like tables written snapshot by snapshot, each
snapshot carrying a CDC position and change count in its summary, as the CDC sink writes them."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog import Catalog

from hybrid_dagster.plane.config import CatalogConfig, DrSecondaryConfig
from hybrid_dagster.residency import Classification
from hybrid_dagster.residency.labels import label_for_write
from hybrid_dagster.resources import DataPlane

TABLES = ("clinical.patients", "clinical.encounters", "clinical.lab_results")
SOURCE = "postgres://meridian#slot"


def eu_plane(root: Path, secondary: DrSecondaryConfig | None = None, name: str = "eu-onprem") -> DataPlane:
    return DataPlane(
        name=name,
        jurisdiction="EU",
        region="fra-dc2",
        location="on_prem",
        warehouse=f"file://{root / name}",
        dr_secondary=secondary
        or DrSecondaryConfig(
            jurisdiction="EU", warehouse=f"file://{root / (name + '-dr')}", rpo_objective_s=3600
        ),
    )


def s3_secondary(root: Path, endpoint_properties: dict[str, str], bucket: str) -> DrSecondaryConfig:
    return DrSecondaryConfig(
        name="eu-onprem-dr",
        jurisdiction="EU",
        region="eu-central-1",
        warehouse=f"s3://{bucket}/warehouse",
        catalog=CatalogConfig(uri=f"sqlite:///{root / 'dr-catalog.db'}", properties=endpoint_properties),
    )


def _rows(table: str, start: int, count: int) -> pa.Table:
    ids = list(range(start, start + count))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "ward": [f"w{i % 4}" for i in ids],
            "value": pa.array([i * 1.5 for i in ids], pa.float64()),
            "table": [table] * count,
        }
    )


class ClinicalPlane:
    """Writes the tables of a plane; ``position`` counts the source changes committed so far."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.catalog: Catalog = plane.load_catalog()
        self.position = 0
        self.catalog.create_namespace_if_not_exists("clinical")
        for identifier in TABLES:
            if not self.catalog.table_exists(identifier):
                label = label_for_write(
                    identifier.replace(".", "/"), Classification.RESTRICTED, frozenset({"EU"}), plane
                )
                schema = _rows(identifier, 0, 1).schema
                self.catalog.create_table(identifier, schema=schema, properties=label.properties())

    def commit(self, identifier: str, changes: int, rows: int = 3) -> None:
        """One CDC-like snapshot applying ``changes`` source changes (appending ``rows`` rows)."""
        self.position += changes
        table = self.catalog.load_table(identifier)
        start = self.position * 10
        table.append(
            _rows(identifier, start, rows),
            snapshot_properties={
                "hybrid.cdc.source": SOURCE,
                "hybrid.cdc.position": f"{self.position}:0",
                "hybrid.cdc.events": str(changes),
            },
        )

    def fill(self, snapshots: int) -> None:
        for i in range(snapshots):
            for identifier in TABLES:
                self.commit(identifier, changes=1 + i % 3)

    def rows(self, catalog: Catalog | None = None) -> dict[str, pa.Table]:
        source = catalog or self.catalog
        return {t: source.load_table(t).scan().to_arrow().sort_by("id") for t in TABLES}
