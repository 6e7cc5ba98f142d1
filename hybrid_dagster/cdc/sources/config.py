"""Serializable source settings: what the asset factory stores and the plane-side worker builds from.

Connection strings are not put in run config for real deployments: give ``dsn_env``, the name of an
environment variable set inside the plane (from its secrets backend), instead of ``dsn``. A PostgreSQL
password is given as ``password_secret``, a reference resolved inside the plane with the plane's own
identity when the source is built (:func:`hybrid_dagster.secrets.resolve_secret`).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Annotated, Literal

import dagster as dg
import psycopg2.extensions
from pydantic import Field

from hybrid_dagster.cdc.sources.base import ChangeSource, SourceTable
from hybrid_dagster.secrets import SecretRef, resolve_secret


class CdcSourceConfig(dg.Config, ABC):
    """Base for serializable CDC source settings."""

    @property
    @abstractmethod
    def dagster_kind(self) -> str:
        """The Dagster kind shown on assets fed by this source."""

    @abstractmethod
    def build(self, tables: list[SourceTable]) -> ChangeSource:
        """Create the source inside the plane."""

    def literal_secrets(self) -> list[str]:
        """Fields holding a connection string itself rather than the name of a variable holding it."""
        return [name for name in ("dsn", "url") if getattr(self, name, None)]

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
        >>> PostgresCdcSource(
        ...     dsn_env="CLINICAL_DB_DSN",
        ...     password_secret=SecretRef(backend="vault", path="eu-onprem/restricted/db", key="password"),
        ...     slot_name="clinical_eu",
        ... )
    """

    kind: Literal["postgres"] = Field(default="postgres", description="Source type discriminator.")
    dsn: str | None = Field(default=None, description="libpq connection string (dev only; prefer dsn_env).")
    dsn_env: str | None = Field(
        default=None, description="Environment variable inside the plane that holds the connection string."
    )
    password_secret: SecretRef | None = Field(
        default=None,
        description="Reference to the password, resolved inside the plane with its identity (never a value).",
    )
    slot_name: str = Field(description="Logical replication slot name (created on first run).")
    decoder: Literal["pgoutput", "wal2json"] = Field(default="pgoutput", description="Output plugin.")
    publication_name: str | None = Field(
        default=None, description="pgoutput publication (default: the slot name; created on first run)."
    )
    reader: Literal["stream", "peek"] = Field(
        default="stream",
        description=(
            "How the slot is read: 'stream' (default) over the replication protocol (START_REPLICATION; "
            "standby status updates only after the Iceberg commit; reconnects with backoff; the "
            "long-running mode's low latency; drains a backlog at least as fast as peek, see "
            "docs/cdc.md), or 'peek' through pg_logical_slot_peek_* SQL calls (re-decodes from the "
            "slot's restart point on every read; a little less CPU per change on small backlogs)."
        ),
    )
    reconnect_timeout_s: float = Field(
        default=60.0,
        description="Stream reader: how long to keep reconnecting after a dropped connection or restart.",
    )
    slot_busy_timeout_s: float = Field(
        default=10.0,
        description=(
            "Stream reader: how long to wait for a slot held by another consumer before failing with "
            "ReplicationSlotInUse (a consumer just killed holds it until its walsender notices)."
        ),
    )
    on_malformed: Literal["stop", "dead_letter"] = Field(
        default="stop",
        description=(
            "A logical-decoding message that cannot be decoded: 'stop' fails the run with a DecoderError "
            "naming its LSN and message type (the slot is not advanced); 'dead_letter' writes it to the "
            "dead-letter table and continues past it."
        ),
    )
    binary: bool = Field(
        default=True,
        description=(
            "pgoutput: ask for binary values (binary 'true') when the server is PostgreSQL 14+ and every "
            "captured column is bool, int2/4/8, oid, float4/8, date, timestamp[tz], text, varchar, bpchar, "
            "name, bytea, json, jsonb or uuid (else text, e.g. for numeric); same rows as text mode, less "
            "CPU on both sides. A column of another type added while streaming switches to text by itself. "
            "False: always text."
        ),
    )

    @property
    def dagster_kind(self) -> str:
        return "postgres"

    def build(self, tables: list[SourceTable]) -> ChangeSource:
        from hybrid_dagster.cdc.sources.postgres.source import PostgresChangeSource

        dsn = self._resolve(self.dsn, self.dsn_env, f"postgres source {self.slot_name}")
        if self.password_secret is not None:
            dsn = psycopg2.extensions.make_dsn(dsn, password=resolve_secret(self.password_secret))
        return PostgresChangeSource(
            dsn,
            tables,
            slot_name=self.slot_name,
            decoder=self.decoder,
            publication_name=self.publication_name,
            on_malformed=self.on_malformed,
            reader=self.reader,
            reconnect_timeout_s=self.reconnect_timeout_s,
            slot_busy_timeout_s=self.slot_busy_timeout_s,
            binary=self.binary,
        )


class DebeziumFileCdcSource(CdcSourceConfig):
    """Debezium change events from files of JSON lines (one envelope per line).

    Example:
        >>> DebeziumFileCdcSource(path="/data/cdc/inventory", offset_file="/data/cdc/inventory.offset.json")
    """

    kind: Literal["debezium"] = Field(default="debezium", description="Source type discriminator.")
    path: str = Field(description="A directory of JSON-lines files (read in name order) or one file.")
    pattern: str = Field(default="*", description="Glob of the files to read inside the directory.")
    offset_file: str | None = Field(
        default=None, description="Where acknowledged offsets are kept (default: beside the files)."
    )

    @property
    def dagster_kind(self) -> str:
        return "debezium"

    def build(self, tables: list[SourceTable]) -> ChangeSource:
        from hybrid_dagster.cdc.sources.debezium.files import DebeziumFileChangeSource

        return DebeziumFileChangeSource(
            self.path, tables=tables, offset_store=self.offset_file, pattern=self.pattern
        )


class DebeziumKafkaCdcSource(CdcSourceConfig):
    """Debezium change events from Kafka topics (needs ``pip install 'hybrid-dagster[kafka]'``)."""

    kind: Literal["debezium_kafka"] = Field(
        default="debezium_kafka", description="Source type discriminator."
    )
    bootstrap_servers: str = Field(description="Kafka bootstrap servers.")
    topics: list[str] = Field(description="Debezium topics, one per table.")
    group_id: str = Field(description="Consumer group; offsets are committed only after the Iceberg commit.")

    @property
    def dagster_kind(self) -> str:
        return "debezium"

    def build(self, tables: list[SourceTable]) -> ChangeSource:
        from hybrid_dagster.cdc.sources.debezium.kafka import DebeziumKafkaChangeSource

        return DebeziumKafkaChangeSource(
            self.bootstrap_servers, self.topics, group_id=self.group_id, tables=tables
        )


class SqlTriggerCdcSource(CdcSourceConfig):
    """Trigger-based capture through SQLAlchemy, for databases without log access (SQLite, PostgreSQL).

    Example:
        >>> SqlTriggerCdcSource(url="sqlite:////srv/clinic/ops.db", consumer="eu-onprem")
    """

    kind: Literal["sql_triggers"] = Field(default="sql_triggers", description="Source type discriminator.")
    url: str | None = Field(default=None, description="SQLAlchemy URL (dev only; prefer url_env).")
    url_env: str | None = Field(
        default=None, description="Environment variable inside the plane holding the URL."
    )
    consumer: str = Field(default="default", description="Consumer name its acknowledgements are kept under.")
    database: Literal["sqlite", "postgres"] = Field(
        default="sqlite", description="The database behind url_env (the Dagster kind shown on the assets)."
    )

    @property
    def dagster_kind(self) -> str:
        if self.url:
            return "postgres" if self.url.startswith("postgres") else "sqlite"
        return self.database

    def build(self, tables: list[SourceTable]) -> ChangeSource:
        from hybrid_dagster.cdc.sources.sql_triggers.source import SqlTriggerChangeSource

        url = self._resolve(self.url, self.url_env, f"sql trigger source {self.consumer}")
        return SqlTriggerChangeSource(url, tables, consumer=self.consumer)


AnyCdcSource = Annotated[
    PostgresCdcSource | DebeziumFileCdcSource | DebeziumKafkaCdcSource | SqlTriggerCdcSource,
    Field(discriminator="kind"),
]
"""Any source config; the ``kind`` field tells them apart in YAML and JSON."""
