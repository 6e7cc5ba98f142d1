"""Log reader: one unit per record; a record is a line, or a line and its continuation lines.

Correctness rules: when any line of the file starts with a timestamp or a level, only such lines start
records and every other line (a stack trace, ``Caused by:``, an indented continuation) belongs to the
record above it; otherwise each line is a record, and indented lines continue the one above. Lines
before the first record start form a record of their own. ``line_start``/``line_end`` give the record's
1-based lines; a timestamp at the start (ISO 8601, with ``T`` or a space, optional fraction and offset;
no offset means UTC) and the first level word are parsed when present. Blank lines end nothing and
are dropped.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from hybrid_dagster.documents.model import ExtractedDocument, Unit
from hybrid_dagster.documents.readers.base import DocumentReader, decode_utf8

_TIMESTAMP = re.compile(
    r"^\[?(?P<ts>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?)\]?"
)
_LEVELS = "TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|CRITICAL|FATAL|SEVERE"
_LEVEL_START = re.compile(rf"^\[?(?:{_LEVELS})\b")
_LEVEL = re.compile(rf"\b(?P<level>{_LEVELS})\b")


def _starts_record(line: str) -> bool:
    return bool(_TIMESTAMP.match(line) or _LEVEL_START.match(line))


def parse_timestamp(line: str) -> datetime | None:
    """The ISO 8601 timestamp at the start of ``line`` (UTC when it has no offset), or None.

    Example:
        >>> parse_timestamp("2026-03-01 08:15:02,120 ERROR boom")
        datetime.datetime(2026, 3, 1, 8, 15, 2, 120000, tzinfo=datetime.timezone.utc)
    """
    match = _TIMESTAMP.match(line)
    if match is None:
        return None
    raw = match.group("ts").replace(",", ".")
    fraction = re.search(r"\.(\d+)", raw)
    if fraction and len(fraction.group(1)) > 6:  # fromisoformat takes at most microseconds
        raw = raw.replace(fraction.group(0), "." + fraction.group(1)[:6])
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class LogReader(DocumentReader):
    """Application log files; stack traces stay with the record that raised them.

    Example:
        >>> log = b"2026-01-01T00:00:00Z ERROR x\\nTraceback ...\\n  File a.py\\n"
        >>> LogReader().read(log).units[0].line_end
        3
    """

    media_types = ("text/x-log",)

    def extract(self, data: bytes) -> ExtractedDocument:
        lines = decode_utf8(data).replace("\r\n", "\n").split("\n")
        structured = any(_starts_record(line) for line in lines)
        records: list[list[tuple[int, str]]] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            continues = not _starts_record(line) if structured else line[:1].isspace()
            if records and continues:
                records[-1].append((number, line.rstrip()))
            else:
                records.append([(number, line.rstrip())])
        units = []
        for position, record in enumerate(records, start=1):
            first = record[0][1]
            head = _TIMESTAMP.sub("", first, count=1)[:120]
            level = _LEVEL.search(head)
            units.append(
                Unit(
                    kind="record",
                    position=position,
                    text="\n".join(text for _, text in record),
                    line_start=record[0][0],
                    line_end=record[-1][0],
                    logged_at=parse_timestamp(first),
                    level=_level(level.group("level")) if level else None,
                )
            )
        return ExtractedDocument(units=units)


def _level(word: str) -> str:
    return {"WARN": "WARNING", "FATAL": "CRITICAL", "SEVERE": "ERROR"}.get(word, word)
