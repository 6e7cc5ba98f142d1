"""The Iceberg side of CDC: one change batch -> one exactly-once copy-on-write snapshot per table.

Path of a change: :mod:`.collapse` (order, last change per key) -> :mod:`.pruning` (which files can hold a
touched key) -> :mod:`.rewrite` (read those files, merge, write new ones) -> :mod:`.apply` (schema
evolution, changelog, one commit recording the position in :mod:`.watermark`, retries). Beside it:
:mod:`.tables` (create the keyed table), :mod:`.changelog` (raw changes as Parquet),
:mod:`.dead_letters` (events that could not become rows), :mod:`.schema_evolution`.
"""
