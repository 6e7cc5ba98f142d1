"""Transcript readers: WebVTT (webvtt-py), SubRip (srt) and JSON speaker turns, one unit per turn.

Correctness rules: a turn's speaker comes from a WebVTT voice span (``<v Dr. Berg>``), a JSON
``speaker`` field, or a leading ``Name:`` on the cue; times are seconds from the start of the call;
cue markup is removed; a file that its format's parser rejects is a dead letter naming the format.

JSON transcripts are ``{"metadata": {...}, "turns": [{"speaker", "start", "end", "text"}, ...]}`` (a
bare list of turns works too; ``segments`` is accepted for ``turns``). Top-level scalar fields and the
``metadata`` object become the document's metadata, for link rules.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import srt
import webvtt
from webvtt.errors import MalformedFileError

from hybrid_dagster.documents.errors import UnreadableDocument
from hybrid_dagster.documents.model import ExtractedDocument, Unit, normalize_text
from hybrid_dagster.documents.readers.base import DocumentReader, decode_utf8

_SPEAKER = re.compile(r"^(?P<speaker>[^\W\d_][\w.'\- ]{0,40}?):\s+(?P<text>\S.*)$", re.DOTALL)


def split_speaker(text: str) -> tuple[str | None, str]:
    """A leading ``Name:`` as the speaker, and the rest.

    Example:
        >>> split_speaker("Dr. Berg: How are you, Zoë?")
        ('Dr. Berg', 'How are you, Zoë?')
    """
    match = _SPEAKER.match(text)
    if match is None:
        return None, text
    return match.group("speaker").strip(), match.group("text")


def _cues(cues: Iterable[tuple[str | None, str, float, float]]) -> ExtractedDocument:
    """One turn per caption cue ``(voice, text, start_s, end_s)`` (WebVTT and SubRip alike): the text
    normalized; without a voice, a leading ``Name:`` is the speaker."""
    units: list[Unit] = []
    for voice, text, start_s, end_s in cues:
        body = normalize_text(text)
        speaker, body = (voice, body) if voice is not None else split_speaker(body)
        units.append(Unit("turn", len(units) + 1, body, speaker=speaker, start_s=start_s, end_s=end_s))
    return ExtractedDocument(units=units)


class WebVttReader(DocumentReader):
    """WebVTT captions, one unit per cue.

    Example:
        >>> WebVttReader().read(b"WEBVTT\\n\\n00:00.000 --> 00:02.000\\n<v Ana>Hi</v>\\n").units[0].speaker
        'Ana'
    """

    media_types = ("text/vtt",)

    def extract(self, data: bytes) -> ExtractedDocument:
        text = decode_utf8(data)
        try:
            captions = webvtt.from_string(text).captions
        except (MalformedFileError, ValueError, IndexError):
            raise UnreadableDocument("invalid WebVTT") from None
        return _cues(
            (
                caption.voice,
                caption.text,
                caption.start_time.in_milliseconds() / 1000,
                caption.end_time.in_milliseconds() / 1000,
            )
            for caption in captions
        )


class SrtReader(DocumentReader):
    """SubRip subtitles, one unit per subtitle.

    Example:
        >>> SrtReader().read(b"1\\n00:00:01,000 --> 00:00:02,000\\nAna: Hi\\n").units[0].speaker
        'Ana'
    """

    media_types = ("application/x-subrip",)

    def extract(self, data: bytes) -> ExtractedDocument:
        text = decode_utf8(data)
        try:
            subtitles = list(srt.parse(text))
        except (srt.SRTParseError, ValueError):
            raise UnreadableDocument("invalid SubRip") from None
        return _cues(
            (None, subtitle.content, subtitle.start.total_seconds(), subtitle.end.total_seconds())
            for subtitle in subtitles
        )


class JsonTurnsReader(DocumentReader):
    """JSON speaker turns, one unit per turn.

    Example:
        >>> JsonTurnsReader().read(b'{"turns": [{"speaker": "Ana", "start": 0, "text": "Hi"}]}').units[0].text
        'Hi'
    """

    media_types = ("application/json",)

    def extract(self, data: bytes) -> ExtractedDocument:
        text = decode_utf8(data)
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            raise UnreadableDocument("invalid JSON") from None
        metadata: dict[str, Any] = {}
        if isinstance(parsed, dict):
            metadata = {k: v for k, v in parsed.items() if isinstance(v, str | int | float | bool)}
            if isinstance(parsed.get("metadata"), dict):
                metadata.update(parsed["metadata"])
            turns = parsed.get("turns", parsed.get("segments"))
        else:
            turns = parsed
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            raise UnreadableDocument("invalid transcript: no list of turns")
        units: list[Unit] = []
        for turn in turns:
            body = turn.get("text")
            if not isinstance(body, str):
                raise UnreadableDocument("invalid transcript: a turn has no text")
            speaker = turn.get("speaker")
            units.append(
                Unit(
                    kind="turn",
                    position=len(units) + 1,
                    text=normalize_text(body),
                    speaker=str(speaker) if speaker is not None else None,
                    start_s=_seconds(turn.get("start")),
                    end_s=_seconds(turn.get("end")),
                )
            )
        return ExtractedDocument(units=units, metadata=metadata)


def _seconds(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
