"""Incremental ingest into Iceberg: add, change, delete; dead letters; links; embeddings; recovery."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from hybrid_dagster.documents.ingest import IngestConfig, document_id_of, ingest
from hybrid_dagster.documents.tables import BATCH_PROPERTY, CHUNKS_SCHEMA, DocumentTables, batch_of
from hybrid_dagster.errors import ResidencyViolation
from hybrid_dagster.residency import Classification, ResidencyPolicy
from hybrid_dagster.residency.guard import WriteIntent, check_write
from tests.documents.files import LOG, PAGES, SRT, VTT, config_for, make_pdf, table_rows
from tests.planes import make_plane


def allow(identifier: str) -> None:
    """The guard of a test that is not about residency: every write allowed."""


def write_files(root: Path) -> None:
    (root / "letters" / "encounter-12").mkdir(parents=True)
    (root / "letters" / "encounter-12" / "letter.pdf").write_bytes(make_pdf(PAGES))
    (root / "letters" / "info-linked.pdf").write_bytes(make_pdf(PAGES[:1], metadata={"encounter_id": "31"}))
    (root / "calls").mkdir()
    (root / "calls" / "encounter-12.vtt").write_text(VTT)
    (root / "calls" / "call-7.srt").write_text(SRT)
    (root / "calls" / "call-8.json").write_text(
        json.dumps({"metadata": {"encounter_id": 8}, "turns": [{"speaker": "A", "text": "Hello."}]})
    )
    (root / "logs").mkdir()
    (root / "logs" / "export.log").write_text(LOG)
    (root / "letters" / "broken.pdf").write_bytes(make_pdf(PAGES)[:700])


def clean_run(root: Path, tmp: Path, config: IngestConfig) -> dict[str, list[tuple]]:
    """The tables of one uninterrupted run on ``root`` into a fresh warehouse."""
    plane = make_plane(tmp / "clean-warehouse")
    if (tmp / "clean-warehouse").exists():
        shutil.rmtree(tmp / "clean-warehouse")
    ingest(config, plane.load_catalog(), before_write=allow)
    return table_rows(plane, config)


def test_incremental_runs_follow_adds_changes_and_deletes_exactly(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    write_files(root)
    plane = make_plane(tmp_path / "warehouse")
    config = config_for(root)
    # Two extraction processes for the incremental runs; the clean runs extract in one process.
    pooled = config.model_copy(update={"workers": 2})

    first = ingest(pooled, plane.load_catalog(), before_write=allow)
    assert (first.files_seen, first.files_added, first.dead_letters_new) == (7, 7, 1)
    assert first.batches == 3  # 7 files in batches of 3
    assert first.tables["documents"] == 6 and first.tables["dead_letters"] == 1
    assert first.tables["document_rows"] == 3 + 1 + 3 + 2 + 1 + 4
    assert first.tables["orphan_chunks"] == 0
    assert table_rows(plane, config) == clean_run(root, tmp_path, config)

    again = ingest(pooled, plane.load_catalog(), before_write=allow)
    assert (again.files_unchanged, again.batches, again.units_written) == (7, 0, 0)

    # Change one letter (fewer pages), delete a transcript, add a log, repair the broken PDF.
    (root / "letters" / "encounter-12" / "letter.pdf").write_bytes(make_pdf(PAGES[:2]))
    (root / "calls" / "call-7.srt").unlink()
    (root / "logs" / "second.log").write_text("2026-03-02T10:00:00Z INFO ok encounter_id=99\n")
    (root / "letters" / "broken.pdf").write_bytes(make_pdf(["Repaired letter."]))
    third = ingest(pooled, plane.load_catalog(), before_write=allow)
    assert (third.files_changed, third.files_deleted, third.files_added) == (2, 1, 1)
    assert third.tables["dead_letters"] == 0 and third.tables["documents"] == 7
    assert table_rows(plane, config) == clean_run(root, tmp_path, config)

    catalog = plane.load_catalog()
    documents = catalog.load_table("docs.documents").scan().to_arrow()
    letter = documents.filter(pa.compute.match_substring(documents["source_uri"], "encounter-12/letter.pdf"))
    assert sorted(letter["position"].to_pylist()) == [1, 2]
    assert set(letter["document_id"].to_pylist()) == {
        document_id_of((root / "letters" / "encounter-12" / "letter.pdf").resolve().as_uri())
    }
    links = {
        uri.rsplit("/", 1)[-1]: key
        for uri, key in zip(
            documents["source_uri"].to_pylist(), documents["link_key"].to_pylist(), strict=True
        )
    }
    assert links == {
        "letter.pdf": "12",  # path
        "info-linked.pdf": "31",  # PDF document information
        "encounter-12.vtt": "12",  # path
        "call-8.json": "8",  # JSON metadata
        "export.log": "12",  # a field in the text
        "second.log": "99",
        "broken.pdf": None,  # no rule matches
    }


def test_a_corrupt_pdf_is_a_dead_letter_and_the_batch_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.pdf").write_bytes(make_pdf(PAGES))
    (root / "b.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog")
    (root / "c.pdf").write_bytes(make_pdf(PAGES, password="secret"))
    (root / "d.log").write_bytes(b"")
    (root / "e.log").write_bytes("Übergabe".encode("cp1252"))
    (root / "f.vtt").write_text(VTT)
    plane = make_plane(tmp_path / "warehouse")
    config = config_for(root, batch_files=10)
    report = ingest(config, plane.load_catalog(), before_write=allow)
    assert report.batches == 1 and report.tables["documents"] == 2
    dead = plane.load_catalog().load_table("docs._document_dead_letters").scan().to_arrow()
    reasons = {
        u.rsplit("/", 1)[-1]: r
        for u, r in zip(dead["source_uri"].to_pylist(), dead["reason"].to_pylist(), strict=True)
    }
    assert reasons == {
        "b.pdf": "corrupt PDF",
        "c.pdf": "encrypted PDF",
        "d.log": "empty file",
        "e.log": "not UTF-8",
    }
    assert (
        ingest(config, plane.load_catalog(), before_write=allow).batches == 0
    )  # dead letters are not retried


def test_embeddings_are_computed_in_the_plane_and_stable(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "encounter-1.vtt").write_text(VTT)
    plane = make_plane(tmp_path / "warehouse")
    config = config_for(root, embedding={"dimensions": 32})
    ingest(config, plane.load_catalog(), before_write=allow)
    chunks = plane.load_catalog().load_table("docs.document_chunks").scan().to_arrow()
    vectors = chunks["embedding"].to_pylist()
    assert all(len(v) == 32 and abs(sum(x * x for x in v) - 1) < 1e-4 for v in vectors)
    assert table_rows(plane, config) == clean_run(root, tmp_path, config)  # same text, same vectors


def test_off_by_default_the_embedding_column_is_null(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "x.log").write_text(LOG)
    plane = make_plane(tmp_path / "warehouse")
    ingest(config_for(root), plane.load_catalog(), before_write=allow)
    chunks = plane.load_catalog().load_table("docs.document_chunks").scan().to_arrow()
    assert chunks["embedding"].null_count == chunks.num_rows > 0


def test_side_tables_of_an_uncommitted_batch_are_rolled_back(tmp_path: Path) -> None:
    """A crash between the chunks commit and the documents commit leaves nothing after recovery."""
    root = tmp_path / "docs"
    root.mkdir()
    (root / "x.log").write_text(LOG)
    plane = make_plane(tmp_path / "warehouse")
    config = config_for(root)
    ingest(config, plane.load_catalog(), before_write=allow)
    before = table_rows(plane, config)
    tables = DocumentTables(plane.load_catalog(), config.names, before_write=allow)
    stray = pa.Table.from_pylist(
        [
            {
                "chunk_id": "stray:0",
                "document_id": "stray",
                "source_uri": "file:///stray.log",
                "sha256": "0" * 64,
                "media_type": "text/x-log",
                "chunk_index": 0,
                "position_start": 1,
                "position_end": 1,
                "text": "half-committed",
                "link_column": None,
                "link_key": None,
                "embedding": None,
            }
        ],
        schema=CHUNKS_SCHEMA,
    )
    chunks = plane.load_catalog().load_table(config.names.chunks)
    chunks.append(stray, snapshot_properties={BATCH_PROPERTY: "2"})  # batch 2 never reached the documents
    assert tables.recover() == 1
    assert batch_of(plane.load_catalog().load_table(config.names.chunks).current_snapshot()) == 1
    assert table_rows(plane, config) == before

    # A side table that never saw a committed batch is emptied.
    fresh = make_plane(tmp_path / "fresh")
    tables = DocumentTables(fresh.load_catalog(), config.names, before_write=allow)
    tables.ensure()
    fresh.load_catalog().load_table(config.names.chunks).append(
        stray, snapshot_properties={BATCH_PROPERTY: "1"}
    )
    assert tables.recover() == 0
    assert fresh.load_catalog().load_table(config.names.chunks).scan().to_arrow().num_rows == 0


def test_the_write_guard_refuses_restricted_documents_in_another_jurisdiction(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "x.log").write_text(LOG)
    us = make_plane(tmp_path / "warehouse", name="us-cloud", jurisdiction="US")
    intent = WriteIntent("clinical/documents", Classification.RESTRICTED, "eu-onprem", frozenset({"EU"}))

    def guard(identifier: str) -> None:
        check_write(intent, us, ResidencyPolicy())

    with pytest.raises(ResidencyViolation, match="clinical/documents"):
        ingest(config_for(root), us.load_catalog(), before_write=guard)
    assert not us.load_catalog().table_exists("docs.documents")
