"""Trigger-based change capture: :mod:`.source` (log table, triggers, reads) and :mod:`.convert` (values)."""
