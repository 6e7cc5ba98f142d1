"""PostgreSQL logical decoding: the slot source, the pgoutput and wal2json decoders, the type mapping.

Path of a change: :mod:`.source` reads the slot -> :mod:`.pgoutput` or :mod:`.wal2json` cuts messages into
text segments -> :mod:`.types` turns the text into typed Arrow columns.
"""
