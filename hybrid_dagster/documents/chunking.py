"""Chunks for retrieval: units cut on sentence (pages) or turn/record boundaries, packed to a size.

Correctness rules: a chunk holds whole segments (a sentence of a page, a speaker turn, a log record)
unless one segment alone is longer than ``size``, which is then cut at whitespace; consecutive chunks
share at most ``overlap`` characters of whole trailing segments, and never all of one chunk, so chunking
always advances; ``position_start``/``position_end`` are the first and last unit positions (page, turn,
record) a chunk draws from; chunking is a pure function of the units, so a rerun gives equal chunks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, Field, model_validator

from hybrid_dagster.documents.model import Unit

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\n\s*\n")


class ChunkingConfig(BaseModel):
    """Size and overlap of chunks, in characters.

    Example:
        >>> ChunkingConfig(size=800, overlap=120)
    """

    size: int = Field(default=1000, gt=0, description="Largest chunk, in characters.")
    overlap: int = Field(default=150, ge=0, description="Characters of whole segments repeated at a start.")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingConfig:
        if self.overlap >= self.size:
            raise ValueError(f"chunk overlap ({self.overlap}) must be smaller than the size ({self.size})")
        return self


@dataclass(frozen=True)
class Segment:
    position: int
    text: str
    joiner: str


@dataclass(frozen=True)
class Chunk:
    """One chunk of a document.

    Example:
        >>> Chunk(index=0, position_start=1, position_end=2, text="...")
    """

    index: int
    position_start: int
    position_end: int
    text: str


def segments_of(units: Sequence[Unit], size: int) -> list[Segment]:
    """Sentences of pages, whole turns and records; pieces of at most ``size`` characters."""
    found: list[Segment] = []
    for unit in units:
        if unit.kind == "page":
            parts = [p.strip() for p in _SENTENCE_END.split(unit.text)]
            joiner = " "
        else:
            text = f"{unit.speaker}: {unit.text}" if unit.speaker else unit.text
            parts, joiner = [text.strip()], "\n"
        for part in parts:
            for piece in _cut(part, size):
                found.append(Segment(unit.position, piece, joiner))
    return found


def chunk_units(units: Sequence[Unit], config: ChunkingConfig) -> list[Chunk]:
    """The chunks of a document's units.

    Example:
        >>> chunk_units([Unit("page", 1, "One. Two. Three.")], ChunkingConfig(size=10, overlap=4))
        [Chunk(index=0, position_start=1, position_end=1, text='One. Two.'), ...]
    """
    chunks: list[Chunk] = []
    current: list[Segment] = []
    current_length = 0  # length(current), kept as segments come and go (chunking stays linear)

    def emit() -> None:
        text = current[0].text + "".join(s.joiner + s.text for s in current[1:])
        chunks.append(Chunk(len(chunks), current[0].position, current[-1].position, text))

    for segment in segments_of(units, config.size):
        if current and current_length + 1 + len(segment.text) > config.size:
            emit()
            start, tail_length = len(current), 0
            for index in range(len(current) - 1, 0, -1):  # never carry the whole chunk over
                grown = tail_length + len(current[index].text) + (1 if tail_length else 0)
                if grown > config.overlap:
                    break
                start, tail_length = index, grown
            tail = current[start:]
            while tail and tail_length + 1 + len(segment.text) > config.size:
                dropped = tail.pop(0)
                tail_length -= len(dropped.text) + (1 if tail else 0)
            current = tail
            current_length = tail_length
        current_length += len(segment.text) + (1 if current else 0)
        current.append(segment)
    if current:
        emit()
    return chunks


def _cut(text: str, size: int) -> list[str]:
    if not text:
        return []
    pieces: list[str] = []
    while len(text) > size:
        cut = text.rfind(" ", 0, size + 1)
        cut = cut if cut > 0 else size
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        pieces.append(text)
    return pieces
