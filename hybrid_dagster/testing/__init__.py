"""Real services started on this machine: PostgreSQL with logical decoding for the demo and the tests."""

from hybrid_dagster.testing.postgres import (
    PostgresServer as PostgresServer,
    PostgresUnavailable as PostgresUnavailable,
    debian_unavailable_reason as debian_unavailable_reason,
    start_debian_postgres as start_debian_postgres,
    start_embedded_postgres as start_embedded_postgres,
    start_plain_embedded_postgres as start_plain_embedded_postgres,
)
