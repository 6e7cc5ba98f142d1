"""Readers on real files: fpdf2 PDFs round-trip to text, transcripts in each format, multi-line logs."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from hybrid_dagster.documents.errors import UnreadableDocument
from hybrid_dagster.documents.model import normalize_text
from hybrid_dagster.documents.readers import reader_for
from tests.documents.files import LOG, PAGES, SRT, VTT, make_pdf


def test_multi_page_unicode_pdf_round_trips_to_text_per_page() -> None:
    document = reader_for("application/pdf").read(make_pdf(PAGES, metadata={"EncounterId": "4711"}))
    assert [u.position for u in document.units] == [1, 2, 3]
    assert [u.kind for u in document.units] == ["page"] * 3
    assert [u.text for u in document.units] == [normalize_text(p) for p in PAGES]
    assert document.metadata["EncounterId"] == "4711"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (make_pdf(PAGES, password="s3cret"), "encrypted PDF"),
        (make_pdf(PAGES)[:900], "corrupt PDF"),
        (b"%PDF-1.7\n%%EOF", "corrupt PDF"),
        (b"this is no PDF at all", "corrupt PDF"),
        (b"", "empty file"),
        (b"  \n", "empty file"),
    ],
    ids=["encrypted", "truncated", "no-objects", "not-pdf", "empty", "blank"],
)
def test_bad_pdfs_are_unreadable_with_a_value_free_reason(data: bytes, reason: str) -> None:
    with pytest.raises(UnreadableDocument) as raised:
        reader_for("application/pdf").read(data)
    assert raised.value.reason == reason


def test_webvtt_voice_spans_and_name_prefixes_give_speakers_and_times() -> None:
    units = reader_for("text/vtt").read(VTT.encode()).units
    assert [(u.position, u.speaker, u.start_s, u.end_s) for u in units] == [
        (1, "Dr. Berg", 1.0, 4.25),
        (2, "Zoë Østergaard", 5.0, 7.5),
        (3, "Nurse", 8.0, 9.0),
    ]
    assert units[1].text == "Much better, thank you.\nI slept well."
    assert units[2].text == "Blood pressure is 128 over 82."


def test_srt_turns() -> None:
    units = reader_for("application/x-subrip").read(SRT.encode()).units
    assert [(u.speaker, u.text, u.start_s, u.end_s) for u in units] == [
        ("Dr. Berg", "Any dizziness since the discharge?", 1.0, 3.5),
        ("Łukasz", "Nein, alles gut.", 4.0, 6.0),
    ]


def test_json_speaker_turns_and_their_metadata() -> None:
    data = json.dumps(
        {
            "call_id": "c-1",
            "metadata": {"encounter_id": 12},
            "turns": [
                {"speaker": "Nurse", "start": 0, "end": 2.5, "text": "Hello  Zoë"},
                {"speaker": "Patient", "start": 3, "text": "Hi"},
            ],
        }
    ).encode()
    document = reader_for("application/json").read(data)
    assert [(u.speaker, u.text, u.start_s, u.end_s) for u in document.units] == [
        ("Nurse", "Hello Zoë", 0.0, 2.5),
        ("Patient", "Hi", 3.0, None),
    ]
    assert document.metadata == {"call_id": "c-1", "encounter_id": 12}


@pytest.mark.parametrize(
    ("media_type", "data", "reason"),
    [
        ("text/vtt", b"NOT A VTT FILE\n\n00:01 --> nonsense\n", "invalid WebVTT"),
        ("application/x-subrip", b"1\nnot a time line\nhello\n", "invalid SubRip"),
        ("application/json", b"{not json", "invalid JSON"),
        ("application/json", b'{"turns": [{"speaker": "A"}]}', "invalid transcript: a turn has no text"),
        ("application/json", b'{"turns": []}', "no text"),
        ("text/x-log", "Übergabe".encode("cp1252"), "not UTF-8"),
        ("text/vtt", "WEBVTT\n\n00:00.000 --> 00:01.000\nÜ\n".encode("utf-16"), "not UTF-8"),
    ],
)
def test_bad_transcripts_and_logs_are_unreadable(media_type: str, data: bytes, reason: str) -> None:
    with pytest.raises(UnreadableDocument) as raised:
        reader_for(media_type).read(data)
    assert raised.value.reason == reason


def test_log_records_keep_stack_traces_together_and_parse_time_and_level() -> None:
    units = reader_for("text/x-log").read(LOG.encode()).units
    assert [(u.position, u.line_start, u.line_end, u.level) for u in units] == [
        (1, 1, 1, "INFO"),
        (2, 2, 6, "ERROR"),
        (3, 8, 8, "WARNING"),
        (4, 9, 9, "DEBUG"),
    ]
    assert units[1].text.splitlines()[1:] == [
        "Traceback (most recent call last):",
        '  File "/srv/app/export.py", line 88, in export_letter',
        "    render(letter)",
        "ValueError: ward code not mapped",
    ]
    assert [u.logged_at for u in units] == [
        datetime(2026, 3, 1, 8, 0, 0, 120000, tzinfo=UTC),
        datetime(2026, 3, 1, 8, 0, 1, 500000, tzinfo=UTC),
        datetime(2026, 3, 1, 8, 0, 2, tzinfo=UTC),
        datetime(2026, 3, 1, 8, 0, 3, tzinfo=UTC),
    ]


def test_logs_without_timestamps_are_one_record_per_line_with_indented_continuations() -> None:
    text = "starting worker\nprocessing batch 1\n  detail a\n  detail b\ndone\n"
    units = reader_for("text/x-log").read(text.encode()).units
    assert [(u.line_start, u.line_end, u.logged_at, u.level) for u in units] == [
        (1, 1, None, None),
        (2, 4, None, None),
        (5, 5, None, None),
    ]
