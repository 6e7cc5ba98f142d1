"""PDF reader: one unit per page; pypdf checks the file and reads its metadata, PDFium reads the text.

Correctness rules: an encrypted PDF is a dead letter even when it opens with an empty password (its
owner restricted it); a file pypdf or PDFium cannot parse is a ``corrupt PDF``; the PDF's
document-information entries (``/Subject``, custom keys such as ``/EncounterId``) become the document's
metadata, without their leading slash, for the link rules (pypdf reads them: PDFium cannot list custom
keys); page text is whitespace-normalized (:func:`~hybrid_dagster.documents.model.normalize_text`), so
the rows of a page do not depend on how the PDF positions its lines.

Why two libraries: profiling the ingest (``benchmarks/documents.py``, cProfile) put 85% of its CPU time
in pypdf's pure-Python ``extract_text`` (about 5 ms a page of dense text); PDFium (pypdfium2, the PDF
engine of Chromium) gives the same normalized text at about a fifth of the cost. pypdf only parses the
cross-reference table, the trailer and the information dictionary, never a page's content stream.
"""

from __future__ import annotations

import ctypes
import io
import logging
from typing import Any

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from pypdf import PdfReader
from pypdf.errors import PyPdfError

from hybrid_dagster.documents.errors import UnreadableDocument
from hybrid_dagster.documents.model import ExtractedDocument, Unit, normalize_text
from hybrid_dagster.documents.readers.base import DocumentReader

logging.getLogger("pypdf").setLevel(logging.ERROR)  # pypdf warns with text fragments of the file

_PYPDF_ERRORS = (
    PyPdfError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    OSError,
    RecursionError,
)


class PdfDocumentReader(DocumentReader):
    """One unit per page: text extracted by PDFium, metadata and encryption read by pypdf.

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
        except UnreadableDocument:
            raise
        except _PYPDF_ERRORS:
            raise UnreadableDocument("corrupt PDF") from None
        units = [
            Unit(kind="page", position=number, text=normalize_text(text))
            for number, text in enumerate(page_texts(data), start=1)
        ]
        if not units:
            raise UnreadableDocument("corrupt PDF")
        return ExtractedDocument(units=units, metadata=metadata)


def page_texts(data: bytes) -> list[str]:
    """The text of each page of the PDF ``data``, in page order (PDFium's text of the page's bounding
    box, as ``PdfTextPage.get_text_bounded`` gives it); a ``corrupt PDF`` when PDFium cannot open it.

    Pages and text pages go through PDFium's C API (``pypdfium2.raw``) and are closed right away: the
    helper objects' finalizers cost a tenth of the extraction.

    Example:
        >>> page_texts(Path("letter.pdf").read_bytes())[0][:18]
        'Discharge letter\\r\\n'
    """
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError:
        raise UnreadableDocument("corrupt PDF") from None
    try:
        return [_page_text(document, index) for index in range(len(document))]
    finally:
        document.close()


def _page_text(document: pdfium.PdfDocument, index: int) -> str:
    page = pdfium_c.FPDF_LoadPage(document, index)
    if not page:
        raise UnreadableDocument("corrupt PDF")
    try:
        textpage = pdfium_c.FPDFText_LoadPage(page)
        if not textpage:
            raise UnreadableDocument("corrupt PDF")
        try:
            box = pdfium_c.FS_RECTF()
            if not pdfium_c.FPDF_GetPageBoundingBox(page, box):
                raise UnreadableDocument("corrupt PDF")
            area = (textpage, box.left, box.top, box.right, box.bottom)
            length = pdfium_c.FPDFText_GetBoundedText(*area, None, 0)
            if length <= 0:
                return ""
            buffer = (ctypes.c_ushort * length)()
            pdfium_c.FPDFText_GetBoundedText(*area, buffer, length)
            return bytes(buffer).decode("utf-16-le", errors="ignore")
        finally:
            pdfium_c.FPDFText_ClosePage(textpage)
    finally:
        pdfium_c.FPDF_ClosePage(page)


def _metadata(reader: PdfReader) -> dict[str, Any]:
    info = reader.metadata
    if info is None:
        return {}
    return {str(key).lstrip("/"): str(value) for key, value in info.items() if value is not None}
