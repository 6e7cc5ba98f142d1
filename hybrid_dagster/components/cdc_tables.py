"""Dagster component: CDC of a source's tables into Iceberg in one data plane, declared in YAML."""

from __future__ import annotations

from typing import Annotated, Literal

import dagster as dg
from pydantic import Field, field_validator

from hybrid_dagster.assets.cdc_tables import CdcTable, cdc_table_assets
from hybrid_dagster.cdc.sources.config import (
    CdcSourceConfig,
    DebeziumFileCdcSource,
    DebeziumKafkaCdcSource,
    PostgresCdcSource,
    SqlTriggerCdcSource,
)
from hybrid_dagster.components.data_planes import ResolvedDataPlane, config_resolver
from hybrid_dagster.residency import Classification

ResolvedCdcSource = Annotated[
    CdcSourceConfig,
    config_resolver(
        PostgresCdcSource,
        DebeziumFileCdcSource,
        DebeziumKafkaCdcSource,
        SqlTriggerCdcSource,
        discriminator="kind",
    ),
]
"""Any CDC source in component YAML, told apart by ``kind``: postgres, debezium, debezium_kafka or
sql_triggers."""


class CdcTableAttributes(dg.Model):
    """One captured table in component YAML (see :class:`~hybrid_dagster.assets.cdc_tables.CdcTable`).

    Example:
        .. code-block:: yaml

            - source_table: public.patients
              classification: restricted
              key_columns: [patient_id]
              description: Patient master data (PHI).
    """

    source_table: str = Field(description="Table in the source database, e.g. 'public.patients'.")
    classification: str = Field(
        description="public, internal, confidential or restricted; the hybrid/classification tag."
    )
    name: str | None = Field(
        default=None, description="Iceberg table and asset name (default: source_table without its schema)."
    )
    key_columns: list[str] = Field(
        default_factory=list, description="Primary key columns (default: the primary key the source reports)."
    )
    description: str | None = Field(default=None, description="Asset description.")

    @field_validator("classification")
    @classmethod
    def _valid_classification(cls, value: str) -> str:
        return Classification.parse(value).value

    def to_cdc_table(self) -> CdcTable:
        return CdcTable(
            source_table=self.source_table,
            classification=self.classification,
            name=self.name,
            key_columns=tuple(self.key_columns),
            description=self.description,
        )


class CdcTablesComponent(dg.Component, dg.Model, dg.Resolvable):
    """Streams a CDC source into one Iceberg asset per table, inside one data plane.

    Builds the multi-asset of :func:`~hybrid_dagster.assets.cdc_tables.cdc_table_assets`. The plane's
    resource (key: its name with ``-`` replaced by ``_``) and ``residency_policy`` come from elsewhere,
    typically a :class:`~hybrid_dagster.components.DataPlanesComponent`. Give ``plane`` as a reference to
    that component's plane (one source of truth) or as the plane's full attributes.

    Example:
        .. code-block:: yaml

            # defs/eu_clinical_cdc/defs.yaml
            type: hybrid_dagster.components.CdcTablesComponent
            attributes:
              name: eu_clinical_cdc
              plane: "{{ context.load_component('planes').plane('eu-onprem') }}"
              source:
                kind: postgres
                dsn_env: MERIDIAN_EU_CLINICAL_DSN
                slot_name: meridian_eu
              source_jurisdiction: EU
              tables:
                - source_table: public.patients
                  classification: restricted
              namespace: clinical
              key_prefix: [clinical]
              group_name: eu_clinical
              owners: ["team:clinical-data"]
    """

    name: str = Field(description="Name of the multi-asset (the op that runs the capture).")
    source: ResolvedCdcSource = Field(
        description="The change source; its 'kind' is postgres, debezium, debezium_kafka or sql_triggers."
    )
    plane: ResolvedDataPlane = Field(
        description=(
            "The data plane the capture runs in and writes to: a template such as "
            "\"{{ context.load_component('planes').plane('eu-onprem') }}\" or the plane's attributes."
        )
    )
    source_jurisdiction: str | None = Field(
        default=None,
        description=(
            "Jurisdiction the source database sits in, e.g. 'EU'. Required by the residency check: a "
            "source without one fails it."
        ),
    )
    tables: list[CdcTableAttributes] = Field(min_length=1, description="The captured tables.")
    namespace: str = Field(description="Iceberg namespace the tables are written to.")
    key_prefix: list[str] = Field(default_factory=list, description="Asset key prefix of every table.")
    group_name: str | None = Field(default=None, description="Asset group of the tables.")
    owners: list[str] = Field(default_factory=list, description="Asset owners (team:... or e-mail).")
    dead_letter_policy: Literal["continue", "stop"] = Field(
        default="continue",
        description="On an event that cannot be applied: record it as a dead letter and continue, or stop.",
    )
    batch_events: int = Field(default=50_000, gt=0, description="Change events applied per Iceberg commit.")
    max_lag_seconds: float = Field(
        default=900.0, gt=0, description="The cdc_lag check fails when a table is further behind than this."
    )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        assets = cdc_table_assets(
            name=self.name,
            source=self.source,
            plane=self.plane,
            source_jurisdiction=self.source_jurisdiction,
            tables=[table.to_cdc_table() for table in self.tables],
            namespace=self.namespace,
            key_prefix=self.key_prefix,
            group_name=self.group_name,
            owners=self.owners,
            dead_letter_policy=self.dead_letter_policy,
            batch_events=self.batch_events,
            max_lag_seconds=self.max_lag_seconds,
        )
        return dg.Definitions(assets=[assets])
