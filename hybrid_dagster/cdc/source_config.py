"""Serializable source settings: what the asset factory stores and the plane-side worker builds from.

Connection strings are not put in run config for real deployments: give ``dsn_env``, the name of an
environment variable set inside the plane (from its secrets backend), instead of ``dsn``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Annotated, Literal

import dagster as dg
from pydantic import Field

from hybrid_dagster.cdc.sources.base import ChangeSource, SourceTable


class CdcSourceConfig(dg.Config, ABC):
    """Base for serializable CDC source settings."""

    @property
    @abstractmethod
    def dagster_kind(self) -> str:
        """The Dagster kind shown on assets fed by this source."""

    @abstractmethod
    def build(self, tables: list[SourceTable]) -> ChangeSource:
        """Create the source inside the plane."""

    def _resolve(self, value: str | None, env_name: str | None, what: str) -> str:
        if value:
            return value
        if env_name:
            resolved = os.environ.get(env_name)
            if resolved:
                return resolved
            raise RuntimeError(f"{what}: environment variable {env_name} is not set inside the plane")
        raise ValueError(f"{what}: give the value or the name of an environment variable holding it")


class PostgresCdcSource(CdcSourceConfig):
    """PostgreSQL logical decoding through a replication slot (pgoutput or wal2json).

    Example:
        >>> PostgresCdcSource(dsn_env="CLINICAL_DB_DSN", slot_name="clinical_eu", decoder="pgoutput")
    """

    kind: Literal["postgres"] = Field(default="postgres", description="Source type discriminator.")
    dsn: str | None = Field(default=None, description="libpq connection string (dev only; prefer dsn_env).")
    dsn_env: str | None = Field(
        default=None, description="Environment variable inside the plane that holds the connection string."
    )
    slot_name: str = Field(description="Logical replication slot name (created on first run).")
    decoder: Literal["pgoutput", "wal2json"] = Field(default="pgoutput", description="Output plugin.")
    publication_name: str | None = Field(
        default=None, description="pgoutput publication (default: '<slot>_pub', created on first run)."
    )

    @property
    def dagster_kind(self) -> str:
        return "postgres"

    def build(self, tables: list[SourceTable]) -> ChangeSource:
        from hybrid_dagster.cdc.sources.postgres import PostgresSource

        return PostgresSource(
            self._resolve(self.dsn, self.dsn_env, f"postgres source {self.slot_name}"),
            tables,
            slot_name=self.slot_name,
            decoder=self.decoder,
            publication_name=self.publication_name,
        )


AnyCdcSource = Annotated[PostgresCdcSource, Field(discriminator="kind")]
