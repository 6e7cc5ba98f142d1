"""Test and demo helpers that start real services (PostgreSQL servers with logical decoding)."""

from hybrid_dagster.testing.postgres import (
    PostgresServer,
    PostgresUnavailable,
    debian_unavailable_reason,
    start_debian_postgres,
    start_embedded_postgres,
    start_plain_embedded_postgres,
)

__all__ = [
    "PostgresServer",
    "PostgresUnavailable",
    "debian_unavailable_reason",
    "start_debian_postgres",
    "start_embedded_postgres",
    "start_plain_embedded_postgres",
]
