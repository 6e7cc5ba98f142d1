"""An s3:// prefix through moto's server over real HTTP: listing, user metadata links, change, delete."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest

from hybrid_dagster.documents.ingest import ingest
from tests.documents.files import LOG, PAGES, VTT, config_for, make_pdf, table_rows
from tests.fixtures.moto import CREDENTIALS, MotoServer
from tests.planes import make_plane


def test_s3_prefix_ingests_incrementally(
    moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])
    s3 = moto_server.client("s3")
    s3.create_bucket(Bucket="eu-documents")
    s3.put_object(Bucket="eu-documents", Key="ward/letters/encounter-5/letter.pdf", Body=make_pdf(PAGES))
    s3.put_object(
        Bucket="eu-documents", Key="ward/calls/c1.vtt", Body=VTT.encode(), Metadata={"encounter-id": "6"}
    )
    s3.put_object(Bucket="eu-documents", Key="ward/logs/app.log", Body=LOG.encode())
    s3.put_object(Bucket="eu-documents", Key="ward/logs/broken.pdf", Body=b"%PDF-1.4 no objects")
    s3.put_object(Bucket="eu-documents", Key="ward/notes.bin", Body=b"\x00\x01")  # no reader: not listed
    s3.put_object(Bucket="eu-documents", Key="other/elsewhere.log", Body=LOG.encode())  # outside the prefix
    source = {"kind": "s3", "uri": "s3://eu-documents/ward/", "endpoint_url": moto_server.endpoint}
    config = config_for(Path("/unused"), source=source)
    plane = make_plane(tmp_path / "warehouse")

    first = ingest(config, plane.load_catalog(), before_write=lambda _: None)
    assert (first.files_seen, first.tables["documents"], first.tables["dead_letters"]) == (4, 3, 1)
    documents = plane.load_catalog().load_table("docs.documents").scan().to_arrow()
    links = dict(zip(documents["source_uri"].to_pylist(), documents["link_key"].to_pylist(), strict=True))
    assert links == {
        "s3://eu-documents/ward/letters/encounter-5/letter.pdf": "5",  # path relative to the prefix
        "s3://eu-documents/ward/calls/c1.vtt": "6",  # S3 user metadata
        "s3://eu-documents/ward/logs/app.log": "12",  # encounter_id= in the text
    }
    pages = documents.filter(pc.equal(documents["media_type"], "application/pdf"))
    assert pages.num_rows == 3 and pages["size_bytes"][0].as_py() > 1000

    assert ingest(config, plane.load_catalog(), before_write=lambda _: None).files_unchanged == 4
    s3.put_object(Bucket="eu-documents", Key="ward/logs/app.log", Body=b"2026-03-01T08:00:00Z INFO one\n")
    s3.delete_object(Bucket="eu-documents", Key="ward/calls/c1.vtt")
    third = ingest(config, plane.load_catalog(), before_write=lambda _: None)
    assert (third.files_changed, third.files_deleted, third.files_unchanged) == (1, 1, 2)
    rows = table_rows(plane, config)
    assert not any("c1.vtt" in repr(row) for row in rows["docs.documents"])
    log_rows = [r for r in rows["docs.documents"] if "app.log" in repr(r)]
    assert len(log_rows) == 1
