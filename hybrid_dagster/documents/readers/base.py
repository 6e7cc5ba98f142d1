"""The one shape of every reader: bytes of one file in, an :class:`ExtractedDocument` out.

Correctness rules: a reader never returns an empty document (an empty file or one without any text
raises :class:`UnreadableDocument`); every failure to read is an :class:`UnreadableDocument` whose
reason is a value-free phrase, so the batch can record it and go on; readers are pure functions of the
bytes (no clock, no randomness), so a rerun yields equal rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from hybrid_dagster.documents.errors import UnreadableDocument
from hybrid_dagster.documents.model import ExtractedDocument


class DocumentReader(ABC):
    """Base of the PDF, transcript and log readers.

    Example:
        .. code-block:: python

            class CsvNotesReader(DocumentReader):
                media_types = ("text/csv",)

                def extract(self, data: bytes) -> ExtractedDocument:
                    text = decode_utf8(data)
                    lines = enumerate(text.splitlines(), start=1)
                    return ExtractedDocument([Unit("record", i, line) for i, line in lines])
    """

    media_types: ClassVar[tuple[str, ...]] = ()

    def read(self, data: bytes) -> ExtractedDocument:
        """Extract ``data``; raise :class:`UnreadableDocument` for an empty, corrupt or textless file."""
        if not data.strip():
            raise UnreadableDocument("empty file")
        document = self.extract(data)
        if not any(unit.text.strip() for unit in document.units):
            raise UnreadableDocument("no text")
        return document

    @abstractmethod
    def extract(self, data: bytes) -> ExtractedDocument:
        """The units of ``data`` (called with non-empty bytes)."""


def decode_utf8(data: bytes) -> str:
    """``data`` as UTF-8 text (a byte-order mark is dropped); anything else is a dead letter.

    Example:
        >>> decode_utf8("Zoë".encode())
        'Zoë'
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UnreadableDocument("not UTF-8") from None
