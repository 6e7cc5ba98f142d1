"""Chunking on sentence and turn boundaries: sizes, overlaps, positions, and that it always advances."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from hybrid_dagster.documents.chunking import ChunkingConfig, chunk_units, segments_of
from hybrid_dagster.documents.model import Unit


def test_page_chunks_end_on_sentences_overlap_and_point_at_pages() -> None:
    units = [
        Unit("page", 1, "Admitted with chest pain. Troponin normal. ECG unremarkable."),
        Unit("page", 2, "Discharged home. Follow-up in two weeks."),
    ]
    chunks = chunk_units(units, ChunkingConfig(size=50, overlap=20))
    assert [(c.position_start, c.position_end, c.text) for c in chunks] == [
        (1, 1, "Admitted with chest pain. Troponin normal."),
        (1, 1, "Troponin normal. ECG unremarkable."),
        (1, 2, "ECG unremarkable. Discharged home."),
        (2, 2, "Discharged home. Follow-up in two weeks."),
    ]
    assert [c.index for c in chunks] == [0, 1, 2, 3]


def test_turns_are_never_split_and_carry_their_speaker() -> None:
    units = [Unit("turn", i, f"turn number {i}", speaker="Nurse" if i % 2 else "Patient") for i in (1, 2, 3)]
    chunks = chunk_units(units, ChunkingConfig(size=45, overlap=0))
    assert [c.text for c in chunks] == [
        "Nurse: turn number 1\nPatient: turn number 2",
        "Nurse: turn number 3",
    ]
    assert [(c.position_start, c.position_end) for c in chunks] == [(1, 2), (3, 3)]


def test_a_segment_longer_than_the_size_is_cut_at_whitespace() -> None:
    record = Unit("record", 1, "word " * 50)
    pieces = [s.text for s in segments_of([record], 32)]
    assert all(len(p) <= 32 for p in pieces) and " ".join(pieces) == ("word " * 50).strip()


def test_overlap_must_be_below_size() -> None:
    with pytest.raises(ValueError, match="overlap"):
        ChunkingConfig(size=100, overlap=100)


words = st.text(alphabet="abcdeé ", min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(
    sentences=st.lists(st.lists(words, min_size=1, max_size=6), min_size=1, max_size=5),
    size=st.integers(20, 120),
    overlap_share=st.floats(0, 0.9),
)
def test_chunks_cover_every_segment_in_order_within_size(
    sentences: list[list[str]], size: int, overlap_share: float
) -> None:
    units = [Unit("page", i + 1, ". ".join(s) + ".") for i, s in enumerate(sentences)]
    config = ChunkingConfig(size=size, overlap=int(size * overlap_share))
    chunks = chunk_units(units, config)
    segments = segments_of(units, size)
    assert all(len(c.text) <= size for c in chunks)
    # Every segment appears, in order; chunks start strictly later than the previous one started.
    joined = [c.text for c in chunks]
    position = 0
    for segment in segments:
        while position < len(joined) and segment.text not in joined[position]:
            position += 1
        assert position < len(joined), "a segment is missing from the chunks"
    starts = [c.position_start for c in chunks]
    assert starts == sorted(starts)
    assert len(chunks) <= len(segments)
