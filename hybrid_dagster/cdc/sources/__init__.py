"""CDC sources: PostgreSQL logical decoding, Debezium envelopes, SQL triggers."""
