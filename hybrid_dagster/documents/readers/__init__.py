"""Readers of one shape (:class:`DocumentReader`): PDF pages, transcript turns, log records.

Example:
    >>> reader_for("text/vtt").read(data).units
"""

from __future__ import annotations

from collections.abc import Mapping

from hybrid_dagster.documents.readers.base import DocumentReader as DocumentReader, decode_utf8 as decode_utf8
from hybrid_dagster.documents.readers.logs import LogReader as LogReader
from hybrid_dagster.documents.readers.pdf import PdfDocumentReader as PdfDocumentReader
from hybrid_dagster.documents.readers.transcripts import (
    JsonTurnsReader as JsonTurnsReader,
    SrtReader as SrtReader,
    WebVttReader as WebVttReader,
)

READERS: Mapping[str, DocumentReader] = {
    media_type: reader
    for reader in (PdfDocumentReader(), WebVttReader(), SrtReader(), JsonTurnsReader(), LogReader())
    for media_type in reader.media_types
}
"""The reader of each media type (see :data:`hybrid_dagster.documents.model.MEDIA_TYPES`)."""


def reader_for(media_type: str) -> DocumentReader:
    """The reader for ``media_type``.

    Example:
        >>> reader_for("application/pdf")
        PdfDocumentReader()
    """
    try:
        return READERS[media_type]
    except KeyError:
        raise KeyError(f"no document reader for media type {media_type!r}") from None
