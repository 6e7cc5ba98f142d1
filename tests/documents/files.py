"""Real files for the document tests: PDFs made with fpdf2 (and pypdf for metadata and encryption)."""

from __future__ import annotations

import io
from pathlib import Path

from fpdf import FPDF
from pypdf import PdfReader, PdfWriter

from examples.clinical_ai.document_corpus import unicode_font
from hybrid_dagster.documents.ingest import IngestConfig
from hybrid_dagster.documents.linking import MetadataLink, PathLink, TextLink
from hybrid_dagster.resources import DataPlane

PAGES = [
    "Entlassungsbrief für Łukasz Çelik. Verlauf unauffällig; Kontrolle in 6 Wochen.",
    "Zoë Østergaard: afebrile ✓. Δ-Wert stabil, Ωmega-3 fortsetzen. Дозировка без изменений.",
    "Résumé: Élodie García wurde am dritten Tag entlassen. Encounter no. 4711.",
]


BUNDLED_FONT = Path(__file__).parent / "fonts" / "DejaVuSans.ttf"
"""DejaVu Sans (free licence, beside it): the Unicode PDFs need no system font on a fresh machine."""


def font() -> Path:
    return unicode_font() or BUNDLED_FONT


def make_pdf(
    pages: list[str], *, metadata: dict[str, str] | None = None, password: str | None = None
) -> bytes:
    """A PDF with one page per entry of ``pages`` (Unicode font), optional info entries or encryption."""
    pdf = FPDF()
    pdf.add_font("Body", fname=str(font()))
    pdf.set_font("Body", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    data = bytes(pdf.output())
    if metadata is None and password is None:
        return data
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    if metadata:
        writer.add_metadata({f"/{k}": v for k, v in metadata.items()})
    if password is not None:
        writer.encrypt(user_password=password, owner_password=password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


VTT = """WEBVTT

NOTE recorded on the ward line

1
00:00:01.000 --> 00:00:04.250
<v Dr. Berg>Good morning, Zoë. How is the pain today?</v>

2
00:00:05.000 --> 00:00:07.500
<v Zoë Østergaard>Much better, thank you.
I slept well.</v>

3
00:00:08.000 --> 00:00:09.000
Nurse: Blood pressure is 128 over 82.
"""

SRT = """1
00:00:01,000 --> 00:00:03,500
Dr. Berg: Any dizziness since the discharge?

2
00:00:04,000 --> 00:00:06,000
Łukasz: Nein, alles gut.
"""

LOG = """2026-03-01T08:00:00.120Z INFO export started encounter_id=12
2026-03-01 08:00:01,500 ERROR export failed encounter_id=12
Traceback (most recent call last):
  File "/srv/app/export.py", line 88, in export_letter
    render(letter)
ValueError: ward code not mapped

2026-03-01T09:00:02+01:00 WARN retry scheduled
[2026-03-01 08:00:03] DEBUG cache warm
"""


def config_for(root: Path, **overrides: object) -> IngestConfig:
    settings: dict[str, object] = {
        "source": {"kind": "folder", "path": str(root)},
        "namespace": "docs",
        "link_rules": [
            PathLink(pattern=r"encounter-(\d+)", column="encounter_id"),
            MetadataLink(field="encounter_id", column="encounter_id"),
            TextLink(pattern=r"encounter_id=(\d+)", column="encounter_id"),
        ],
        "chunking": {"size": 200, "overlap": 60},
        "batch_files": 3,
        **overrides,
    }
    return IngestConfig.model_validate(settings)


def table_rows(plane: DataPlane, config: IngestConfig) -> dict[str, list[tuple]]:
    """Every row of the three tables, sorted: what "equal tables" means."""
    catalog = plane.load_catalog()
    out: dict[str, list[tuple]] = {}
    for identifier in (config.names.documents, config.names.chunks, config.names.dead_letters):
        rows = catalog.load_table(identifier).scan().to_arrow().to_pylist()
        out[identifier] = sorted(tuple(sorted((k, repr(v)) for k, v in r.items())) for r in rows)
    return out
