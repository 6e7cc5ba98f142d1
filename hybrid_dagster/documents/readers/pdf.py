"""PDF reader: the text of each page with pypdf, one unit per page.

Correctness rules: an encrypted PDF is a dead letter even when it opens with an empty password (its
owner restricted it); a file pypdf cannot parse is a ``corrupt PDF``; the PDF's document-information
entries (``/Subject``, custom keys such as ``/EncounterId``) become the document's metadata, without
their leading slash, for the link rules.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from pypdf import PdfReader
from pypdf.errors import PyPdfError

from hybrid_dagster.documents.errors import UnreadableDocument
from hybrid_dagster.documents.model import ExtractedDocument, Unit, normalize_text
from hybrid_dagster.documents.readers.base import DocumentReader

logging.getLogger("pypdf").setLevel(logging.ERROR)  # pypdf warns with text fragments of the file


class PdfDocumentReader(DocumentReader):
    """One unit per page, text extracted by pypdf.

    Example:
        >>> PdfDocumentReader().read(Path("letter.pdf").read_bytes()).units[0].kind
        'page'
    """

    media_types = ("application/pdf",)

    def extract(self, data: bytes) -> ExtractedDocument:
        if not data.lstrip().startswith(b"%PDF"):
            raise UnreadableDocument("corrupt PDF")
        try:
            reader = PdfReader(io.BytesIO(data), strict=False)
            if reader.is_encrypted:
                raise UnreadableDocument("encrypted PDF")
            metadata = _metadata(reader)
            units = [
                Unit(kind="page", position=number, text=normalize_text(page.extract_text() or ""))
                for number, page in enumerate(reader.pages, start=1)
            ]
        except UnreadableDocument:
            raise
        except (
            PyPdfError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            IndexError,
            OSError,
            RecursionError,
        ):
            raise UnreadableDocument("corrupt PDF") from None
        if not units:
            raise UnreadableDocument("corrupt PDF")
        return ExtractedDocument(units=units, metadata=metadata)


def _metadata(reader: PdfReader) -> dict[str, Any]:
    info = reader.metadata
    if info is None:
        return {}
    return {str(key).lstrip("/"): str(value) for key, value in info.items() if value is not None}
