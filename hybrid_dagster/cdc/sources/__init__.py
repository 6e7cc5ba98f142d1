"""CDC sources, one sub-package per kind: ``postgres`` (logical decoding), ``debezium``, ``sql_triggers``.

Each reads changes into one :class:`~hybrid_dagster.cdc.changes.ChangeBatch` layout and implements
:class:`ChangeSource`; :mod:`.config` holds the Dagster config classes that build them.
"""

from hybrid_dagster.cdc.sources.base import (
    ChangeSource as ChangeSource,
    ConsistentCopy as ConsistentCopy,
    SourceTable as SourceTable,
)
from hybrid_dagster.cdc.sources.debezium.files import DebeziumFileChangeSource as DebeziumFileChangeSource
from hybrid_dagster.cdc.sources.debezium.kafka import DebeziumKafkaChangeSource as DebeziumKafkaChangeSource
from hybrid_dagster.cdc.sources.postgres.source import PostgresChangeSource as PostgresChangeSource
from hybrid_dagster.cdc.sources.sql_triggers.source import SqlTriggerChangeSource as SqlTriggerChangeSource
