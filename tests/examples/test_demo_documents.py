"""The documents step of `make demo`: its summary section, from a real run through Dagster and the plane."""

from __future__ import annotations

from examples.clinical_ai.demo_documents import encounters_of, eu_plane
from examples.clinical_ai.documents import encounter_context
from tests.examples.conftest import Demo


def test_demo_documents_summary_and_retrieval_finds_encounter_context(demo: Demo) -> None:
    summary = demo.summary
    section = summary["documents"]
    assert set(section) == {"files", "chunks", "dead_letters", "linked_fraction"}
    assert section["files"] == 40 + 30 + 12 + 2  # letters, transcripts, logs, two bad files
    assert section["dead_letters"] == 2
    assert section["chunks"] > section["files"]
    assert 0.8 <= section["linked_fraction"] < 1.0  # a quarter of the logs name no encounter

    plane = eu_plane(demo.home)
    first = encounters_of(plane)[0]
    context = encounter_context(plane, first.encounter_id)
    assert context and all(c["link_key"] == str(first.encounter_id) for c in context)
    assert any(c["source_uri"].endswith("discharge-letter.pdf") for c in context)
    assert [c["chunk_index"] for c in context if c["source_uri"] == context[0]["source_uri"]] == sorted(
        c["chunk_index"] for c in context if c["source_uri"] == context[0]["source_uri"]
    )
