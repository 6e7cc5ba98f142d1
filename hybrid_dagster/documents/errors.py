"""Errors of document ingestion. Their messages name files, tables and rules, never document text."""

from __future__ import annotations

from hybrid_dagster.errors import ValueFreeError


class DocumentError(ValueFreeError):
    """Document ingestion cannot go on (a missing source, a bad configuration, a refused table)."""


class UnreadableDocument(DocumentError):
    """One file could not be read into text; it goes to the dead-letter table with ``reason``.

    ``reason`` is a short, value-free phrase (``"corrupt PDF"``, ``"encrypted PDF"``, ``"not UTF-8"``,
    ``"empty file"``), never a quote of the file.

    Example:
        >>> raise UnreadableDocument("encrypted PDF")
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MissingDependency(DocumentError):
    """An optional library that one feature needs is not installed (the message gives the extra)."""
