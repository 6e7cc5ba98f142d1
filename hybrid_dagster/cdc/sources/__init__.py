"""CDC sources: PostgreSQL logical decoding, Debezium envelopes, SQL triggers. One layout for all."""

from hybrid_dagster.cdc.sources.base import ChangeSource as ChangeSource, SourceTable as SourceTable
from hybrid_dagster.cdc.sources.debezium import (
    DebeziumFileSource as DebeziumFileSource,
    DebeziumKafkaSource as DebeziumKafkaSource,
)
from hybrid_dagster.cdc.sources.postgres import PostgresSource as PostgresSource
from hybrid_dagster.cdc.sources.sql_triggers import SqlTriggerSource as SqlTriggerSource
