"""What a reader makes of one file: its units of text (pages, speaker turns, log records).

Correctness rules: a unit's ``position`` is 1-based and dense within its document (page 1..n, turn
1..n, record 1..n); ``line_start``/``line_end`` are the 1-based source lines of a log record (or of a
transcript cue); text is whitespace-normalized so that equal content gives equal rows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

UnitKind = Literal["page", "turn", "record"]

MEDIA_TYPES: Mapping[str, str] = {
    ".pdf": "application/pdf",
    ".vtt": "text/vtt",
    ".srt": "application/x-subrip",
    ".json": "application/json",
    ".log": "text/x-log",
    ".txt": "text/x-log",
}
"""Media type by file suffix: the suffix decides the reader (``.json`` is a speaker-turn transcript,
``.log`` and ``.txt`` are log files)."""

_SPACES = re.compile(r"[ \t\u00a0]+")


def normalize_text(text: str) -> str:
    """Collapse runs of spaces and tabs, strip each line, drop empty lines at both ends.

    Example:
        >>> normalize_text("  Patient  Łukasz \\n\\n stable ")
        'Patient Łukasz\\n\\nstable'
    """
    collapsed = _SPACES.sub(" ", text.replace("\r\n", "\n"))  # one pass: the pattern spans no newline
    return "\n".join(line.strip() for line in collapsed.split("\n")).strip("\n")


def media_type_of(name: str) -> str | None:
    """The media type for a file name, or None when no reader handles its suffix.

    Example:
        >>> media_type_of("letters/enc-12.PDF")
        'application/pdf'
    """
    dot = name.rfind(".")
    return MEDIA_TYPES.get(name[dot:].lower()) if dot >= 0 else None


@dataclass(frozen=True)
class Unit:
    """One page, speaker turn or log record.

    Example:
        >>> Unit(kind="turn", position=1, text="Good morning.", speaker="Dr. Berg", start_s=0.0, end_s=2.5)
    """

    kind: UnitKind
    position: int
    text: str
    line_start: int | None = None
    line_end: int | None = None
    speaker: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    logged_at: datetime | None = None
    level: str | None = None


@dataclass(frozen=True)
class ExtractedDocument:
    """A readable file: its units and the metadata its format carries (PDF info, JSON ``metadata``).

    Example:
        >>> ExtractedDocument(units=[Unit("page", 1, "Discharge letter")], metadata={"encounter_id": "12"})
    """

    units: list[Unit]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join(unit.text for unit in self.units)
