"""Synthetic clinical documents: discharge letters (PDF), call transcripts and application logs.

Everything comes from a seeded RNG and the names of :mod:`examples.clinical_ai.hospital_db`: no real
person is in here. Letters are multi-page PDFs made with fpdf2; with a Unicode TrueType font found on the
machine (DejaVu Sans, package fonts-dejavu-core) they keep every character, otherwise they fall back to
a core font and Latin-1 (characters outside it become '?'). Layout, and what links each file to its
encounter:

- ``letters/patient-<p>/encounter-<e>/discharge-letter.pdf`` - the path;
- ``calls/encounter-<e>.vtt|.srt`` - the path; ``calls/call-<n>.json`` - its ``metadata.encounter_id``;
- ``logs/<service>/session-<n>.log`` - ``encounter_id=<e>`` in a record's text; some logs name none.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fpdf import FPDF

from examples.clinical_ai.hospital_db import FAMILY, GIVEN, WARDS
from hybrid_dagster.documents.linking import MetadataLink, PathLink, TextLink

FONT_CANDIDATES = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/dejavu/DejaVuSans.ttf"),
    Path("/usr/local/share/fonts/DejaVuSans.ttf"),
)

CREATED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

LINK_RULES = [
    PathLink(pattern=r"encounter-(\d+)", column="encounter_id"),
    MetadataLink(field="encounter_id", column="encounter_id"),
    TextLink(pattern=r"encounter_id=(\d+)", column="encounter_id"),
]
"""How the example links a document to its encounter: path, then file metadata, then a field in the text."""

SENTENCES = [
    "The patient was admitted with chest pain and shortness of breath.",
    "Troponin levels were within normal limits on repeated measurement.",
    "Verlauf unauffällig; Kontrolle in 6 Wochen empfohlen.",
    "Résumé: afebrile during the stay, mobilised on day two ✓.",
    "Medication on discharge: ramipril 5 mg once daily, atorvastatin 40 mg at night.",
    "Follow-up with the general practitioner within 14 days is advised.",
    "Echocardiography showed preserved left ventricular function.",
    "Allergies: none known. Diet: low salt, Mediterranean.",
    "Der Patient wurde in stabilem Allgemeinzustand entlassen.",
    "Wound healing was uneventful; sutures to be removed on day ten.",
]
TURNS = [
    ("Nurse", "Good morning, this is the cardiology ward calling about your discharge."),
    ("Patient", "Yes, hello. When should I take the new tablets?"),
    ("Nurse", "Once a day in the morning, with water. Any dizziness so far?"),
    ("Patient", "A little yesterday, but it passed quickly."),
    ("Nurse", "Please note your blood pressure twice a day for a week."),
    ("Patient", "Danke, I will. Should I call if it goes above 160?"),
    ("Nurse", "Yes, call us or your GP straight away. Anything else?"),
    ("Patient", "No, that's all. Merci!"),
]


@dataclass(frozen=True)
class Encounter:
    """An encounter of the hospital database: the row a document belongs to."""

    encounter_id: int
    patient_id: int


def synthetic_encounters(patients: int, per_patient: int = 2) -> list[Encounter]:
    """Encounters as ``HospitalDb.populate(patients=..., encounters_per_patient=...)`` numbers them."""
    return [
        Encounter(encounter_id=p * per_patient + i + 1, patient_id=p + 1)
        for p in range(patients)
        for i in range(per_patient)
    ]


def unicode_font() -> Path | None:
    """A TrueType font with Latin Extended, Greek and symbols, if the machine has one."""
    return next((p for p in FONT_CANDIDATES if p.is_file()), None)


def letter_pdf(
    encounter: Encounter, pages: int, rng: random.Random, *, font: Path | None, sentences_per_page: int = 30
) -> bytes:
    """A discharge letter of ``pages`` pages for ``encounter``."""
    pdf = FPDF()
    pdf.set_creation_date(CREATED)  # same input, same bytes: a regenerated corpus is "unchanged"
    pdf.set_creator("Meridian Health discharge service")
    pdf.set_subject(f"Discharge letter, encounter {encounter.encounter_id}")
    if font is not None:
        pdf.add_font("Body", fname=str(font))
        pdf.set_font("Body", size=10)
    else:
        pdf.set_font("Helvetica", size=10)
    name = f"{rng.choice(GIVEN)} {rng.choice(FAMILY)}"
    for page in range(1, pages + 1):
        pdf.add_page()
        head = f"Discharge letter - {name} - encounter {encounter.encounter_id} - page {page} of {pages}"
        body = " ".join(rng.choice(SENTENCES) for _ in range(sentences_per_page))
        pdf.multi_cell(0, 5, _printable(head, font), new_x="LMARGIN", new_y="NEXT")
        pdf.multi_cell(0, 5, _printable(body, font))
    return bytes(pdf.output())


def _printable(text: str, font: Path | None) -> str:
    return text if font is not None else text.encode("latin-1", "replace").decode("latin-1")


def transcript(encounter: Encounter, kind: str, rng: random.Random) -> str:
    """A call transcript in ``kind`` (vtt, srt or json) for ``encounter``."""
    turns = TURNS[: rng.randint(4, len(TURNS))]
    times = [(i * 4.0, i * 4.0 + 3.5) for i in range(len(turns))]
    if kind == "vtt":
        cues = [
            f"{i + 1}\n{_ts(s, '.')} --> {_ts(e, '.')}\n<v {who}>{what}</v>"
            for i, ((who, what), (s, e)) in enumerate(zip(turns, times, strict=True))
        ]
        return "WEBVTT\n\n" + "\n\n".join(cues) + "\n"
    if kind == "srt":
        cues = [
            f"{i + 1}\n{_ts(s, ',')} --> {_ts(e, ',')}\n{who}: {what}"
            for i, ((who, what), (s, e)) in enumerate(zip(turns, times, strict=True))
        ]
        return "\n\n".join(cues) + "\n"
    return json.dumps(
        {
            "metadata": {"encounter_id": encounter.encounter_id, "channel": "phone"},
            "turns": [
                {"speaker": who, "start": s, "end": e, "text": what}
                for (who, what), (s, e) in zip(turns, times, strict=True)
            ],
        },
        ensure_ascii=False,
    )


def _ts(seconds: float, mark: str) -> str:
    whole = int(seconds)
    return (
        f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}{mark}{int(seconds * 1000) % 1000:03d}"
    )


def application_log(encounter: Encounter | None, rng: random.Random, records: int = 40) -> str:
    """An application log; with ``encounter``, its records name it; some records carry stack traces."""
    start = datetime(2026, 3, 1, 8, 0, tzinfo=UTC) + timedelta(minutes=rng.randint(0, 50_000))
    lines: list[str] = []
    for i in range(records):
        at = (start + timedelta(seconds=i * 7)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        about = f" encounter_id={encounter.encounter_id}" if encounter is not None else ""
        roll = rng.random()
        if roll < 0.1:
            lines += [
                f"{at} ERROR discharge-service: export failed{about}",
                "Traceback (most recent call last):",
                '  File "/srv/app/export.py", line 88, in export_letter',
                "    render(letter)",
                "ValueError: ward code not mapped",
            ]
        elif roll < 0.25:
            lines.append(f"{at} WARNING discharge-service: slow response from lab system{about}")
        else:
            ward = rng.choice(WARDS)
            lines.append(f"{at} INFO discharge-service: letter queued ward={ward}{about}")
    return "\n".join(lines) + "\n"


def write_corpus(
    root: Path,
    encounters: Sequence[Encounter],
    *,
    letters: int,
    transcripts: int,
    logs: int,
    pages: tuple[int, int] = (2, 4),
    seed: int = 7,
    bad_files: bool = True,
    unicode: bool = True,
) -> int:
    """Write the corpus under ``root``; returns the number of files. ``bad_files`` adds a corrupt PDF
    and a log that is not UTF-8 (they belong in the dead letters)."""
    rng = random.Random(seed)
    font = unicode_font() if unicode else None
    written = 0

    def put(relative: str, data: bytes) -> None:
        nonlocal written
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written += 1

    for i in range(letters):
        e = encounters[i % len(encounters)]
        pdf = letter_pdf(e, rng.randint(*pages), rng, font=font)
        suffix = "" if i < len(encounters) else f"-{i // len(encounters)}"
        put(f"letters/patient-{e.patient_id}/encounter-{e.encounter_id}/discharge-letter{suffix}.pdf", pdf)
    for i in range(transcripts):
        e = encounters[rng.randrange(len(encounters))]
        kind = ("vtt", "srt", "json")[i % 3]
        name = (
            f"calls/call-{i + 1}.json"
            if kind == "json"
            else f"calls/encounter-{e.encounter_id}-{i + 1}.{kind}"
        )
        put(name, transcript(e, kind, rng).encode())
    for i in range(logs):
        e = encounters[rng.randrange(len(encounters))] if i % 4 else None  # every fourth names no encounter
        put(f"logs/discharge-service/session-{i + 1}.log", application_log(e, rng).encode())
    if bad_files:
        put("letters/scanned-fax.pdf", b"%PDF-1.4\n1 0 obj <<\n% the scanner stopped here")
        put("logs/legacy/export-latin1.log", "2026-03-01 08:00:00 INFO Übergabe an Station".encode("cp1252"))
    return written
