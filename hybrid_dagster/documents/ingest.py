"""Incremental ingest of one document source into its documents, chunks and dead-letter tables.

Correctness rules:

- A file is identified by its URI and compared by the SHA-256 of its bytes: same hash, skipped (reading
  and hashing is all a rerun does); new or changed, read, chunked and written; gone from the source,
  its rows are removed. A changed file keeps its document id, and its old rows are replaced.
- Files are processed in batches of ``batch_files``; each batch is one commit per table with the
  documents table last (:mod:`hybrid_dagster.documents.tables`), so a SIGKILL at any point, followed by a
  rerun, gives the tables of a run that was never interrupted.
- A file no reader can read goes to the dead-letter table with a value-free reason; the batch goes on.
  A file that becomes readable later leaves the dead letters and enters the documents.
- Extraction is a pure function of a file's bytes, path and metadata; it may run in worker processes
  (``workers``), in jobs of a few files that never straddle a batch, up to 8 jobs a worker ahead of the
  commit (so the workers extract the next batch while this one commits); results are taken in listing
  order, whatever order the workers finish in. Workers return the rows as Arrow tables; chunk
  embeddings are computed in the ingest process.
- A changed file's old rows are removed in the commit that writes its new rows, never earlier.
- Worker processes end with the ingest process, SIGKILL included (they watch their parent).
- Each file is read once: the bytes that are hashed are the bytes that are extracted.
- Nothing here logs or returns document text: :class:`IngestReport` holds counts and timings only.
"""

from __future__ import annotations

import collections
import hashlib
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field
from pyiceberg.catalog import Catalog

from hybrid_dagster.documents.chunking import ChunkingConfig, chunk_units
from hybrid_dagster.documents.embedding import EmbeddingConfig, HashingEmbedder
from hybrid_dagster.documents.errors import UnreadableDocument
from hybrid_dagster.documents.linking import LinkRule, resolve_link
from hybrid_dagster.documents.readers import reader_for
from hybrid_dagster.documents.sources import AnyDocumentSource, SourceFile
from hybrid_dagster.documents.tables import (
    CHUNKS_SCHEMA,
    DEAD_LETTERS_SCHEMA,
    DOCUMENTS_SCHEMA,
    DocumentTables,
    Known,
    TableNames,
    row_count,
)


class IngestConfig(BaseModel):
    """One document source and where its tables go.

    Example:
        >>> IngestConfig(
        ...     source={"kind": "folder", "path": "/srv/eu/documents"},
        ...     namespace="documents",
        ...     link_rules=[{"kind": "path", "pattern": r"enc-(\\d+)", "column": "encounter_id"}],
        ... )
    """

    source: AnyDocumentSource = Field(description="A plane-local folder or an s3:// prefix.")
    namespace: str = Field(description="Iceberg namespace of the three tables.")
    documents_table: str = Field(default="documents", description="Table of units (pages, turns, records).")
    chunks_table: str = Field(default="document_chunks", description="Table of retrieval chunks.")
    dead_letter_table: str = Field(default="_document_dead_letters", description="Table of unreadable files.")
    link_rules: list[LinkRule] = Field(
        default_factory=list, description="Rules giving the structured row of a document; first match wins."
    )
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig, description="Chunk size and overlap.")
    embedding: EmbeddingConfig | None = Field(
        default=None, description="Chunk embeddings with a local stateless model; off when unset."
    )
    batch_files: int = Field(default=200, gt=0, description="Changed files per commit.")
    workers: int = Field(default=1, ge=1, description="Processes extracting text (1: the ingest process).")

    @property
    def names(self) -> TableNames:
        return TableNames(
            f"{self.namespace}.{self.documents_table}",
            f"{self.namespace}.{self.chunks_table}",
            f"{self.namespace}.{self.dead_letter_table}",
        )


@dataclass
class IngestReport:
    """What one ingest did and what the tables hold after it: counts and timings, never text."""

    files_seen: int = 0
    files_unchanged: int = 0
    files_added: int = 0
    files_changed: int = 0
    files_deleted: int = 0
    dead_letters_new: int = 0
    units_written: int = 0
    chunks_written: int = 0
    bytes_read: int = 0
    batches: int = 0
    duration_s: float = 0.0
    committed_batch: int = 0
    tables: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class _Pending:
    file: SourceFile
    data: bytes
    metadata: Mapping[str, str]
    sha256: str
    previous: Known | None  # what the tables held for the file; None for a new file


@dataclass(frozen=True)
class _Job:
    """Files of one batch extracted together (in a worker process: everything here pickles)."""

    files: list[tuple[SourceFile, bytes, Mapping[str, str], str]]
    rules: Sequence[LinkRule]
    chunking: ChunkingConfig


@dataclass(frozen=True)
class _Extracted:
    """The rows of a job's files, as Arrow tables, and each file's dead-letter reason (None: read)."""

    documents: pa.Table
    chunks: pa.Table
    dead_reasons: list[str | None]


_JOB_FILES = 8
"""Files per extraction job: few enough to spread a batch over the workers, enough to amortize a job."""

_IN_FLIGHT_BYTES = 64 * 1024 * 1024
"""File bytes handed to the workers and not yet collected; past it the ingest waits for results."""


def document_id_of(uri: str) -> str:
    """A document's id: stable for its URI, so a changed file replaces its own rows.

    Example:
        >>> document_id_of("file:///srv/docs/a.pdf")
        '6b5c2f6e-...'
    """
    return str(uuid.uuid5(uuid.NAMESPACE_URL, uri))


def ingest(
    config: IngestConfig,
    catalog: Catalog,
    *,
    before_write: Callable[[str], None],
    labels: Mapping[str, Mapping[str, str]] | None = None,
) -> IngestReport:
    """Bring the tables of ``config`` in line with its source; see the module's rules.

    ``before_write`` is the residency guard (called with each table's identifier before it is written);
    ``labels`` are table properties by identifier (the residency label the worker sets);

    Example:
        .. code-block:: python

            report = ingest(config, plane.load_catalog(), before_write=guard)
            report.files_added, report.dead_letters_new
    """
    started = time.monotonic()
    report = IngestReport()
    tables = DocumentTables(catalog, config.names, before_write=before_write, labels=labels)
    committed = tables.recover()
    known = tables.known()
    source = config.source.build()
    listing = list(source.list())
    report.files_seen = len(listing)
    present = {f.uri for f in listing}
    removed: set[str] = set()
    removed_dead: set[str] = set()
    for uri, entry in known.items():
        if uri not in present:
            (removed_dead if entry.dead else removed).add(entry.document_id)
            report.files_deleted += 1
    embedder = HashingEmbedder(config.embedding) if config.embedding is not None else None
    pool = (
        ProcessPoolExecutor(
            config.workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_exit_with_parent,
            initargs=(os.getpid(),),
        )
        if config.workers > 1
        else None
    )

    def flush(batch: list[tuple[list[_Pending], _Extracted]]) -> None:
        nonlocal committed
        dead: list[dict[str, Any]] = []
        for pendings, extracted in batch:
            for pending, reason in zip(pendings, extracted.dead_reasons, strict=True):
                if pending.previous is not None:  # a changed file replaces its rows in this commit
                    (removed_dead if pending.previous.dead else removed).add(pending.previous.document_id)
                if reason is not None:
                    dead.append({**_file_columns(pending.file, pending.sha256), "reason": reason})
        documents = _concat([e.documents for _, e in batch], DOCUMENTS_SCHEMA)
        chunks = _concat([e.chunks for _, e in batch], CHUNKS_SCHEMA)
        if embedder is not None and chunks.num_rows:
            vectors = embedder.embed(chunks["text"].to_pylist())
            chunks = chunks.set_column(
                chunks.schema.get_field_index("embedding"),
                CHUNKS_SCHEMA.field("embedding"),
                pa.array(list(vectors), type=CHUNKS_SCHEMA.field("embedding").type),
            )
        committed += 1
        tables.commit(
            committed,
            removed=removed,
            removed_dead=removed_dead,
            documents=documents,
            chunks=chunks,
            dead_letters=pa.Table.from_pylist(dead, schema=DEAD_LETTERS_SCHEMA),
        )
        removed.clear()
        removed_dead.clear()
        report.batches += 1
        report.units_written += documents.num_rows
        report.chunks_written += chunks.num_rows
        report.dead_letters_new += len(dead)

    try:
        batch: list[tuple[list[_Pending], _Extracted]] = []
        in_batch = 0
        for pendings, extracted in _extract_in_order(
            _jobs(source, listing, known, report, config), config, pool
        ):
            batch.append((pendings, extracted))
            in_batch += len(pendings)
            if in_batch >= config.batch_files:
                flush(batch)
                batch, in_batch = [], 0
        if batch or removed or removed_dead:
            flush(batch)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    report.committed_batch = committed
    report.tables = table_counts(catalog, config.names)
    report.duration_s = round(time.monotonic() - started, 3)
    return report


def _jobs(
    source: Any,
    listing: Sequence[SourceFile],
    known: Mapping[str, Any],
    report: IngestReport,
    config: IngestConfig,
) -> Iterator[list[_Pending]]:
    """The new and changed files (each read once, hashed as read), in listing order, grouped into jobs
    that never straddle a batch."""
    job: list[_Pending] = []
    in_batch = 0
    for file in listing:
        data, metadata = source.read(file)
        report.bytes_read += len(data)
        digest = hashlib.sha256(data).hexdigest()
        entry = known.get(file.uri)
        if entry is not None and entry.sha256 == digest:
            report.files_unchanged += 1
            continue
        if entry is None:
            report.files_added += 1
        else:
            report.files_changed += 1
        job.append(_Pending(file, data, metadata, digest, entry))
        in_batch += 1
        if len(job) >= _JOB_FILES or in_batch >= config.batch_files:
            yield job
            job = []
            in_batch %= config.batch_files
    if job:
        yield job


def _extract_in_order(
    jobs: Iterator[list[_Pending]], config: IngestConfig, pool: ProcessPoolExecutor | None
) -> Iterator[tuple[list[_Pending], _Extracted]]:
    """Each job with its extraction, in job order; with a pool, later jobs are extracted while the
    caller commits earlier ones (at most ``_IN_FLIGHT_BYTES`` of files, and 8 jobs a worker, ahead)."""

    def job_of(pendings: list[_Pending]) -> _Job:
        files = [(p.file, p.data, p.metadata, p.sha256) for p in pendings]
        return _Job(files, config.link_rules, config.chunking)

    if pool is None:
        for pendings in jobs:
            yield pendings, _extract_job(job_of(pendings))
        return
    in_flight: collections.deque[tuple[list[_Pending], Future[_Extracted], int]] = collections.deque()
    flying_bytes = 0
    exhausted = False
    while True:
        while not exhausted and len(in_flight) < 8 * config.workers:
            if in_flight and flying_bytes >= _IN_FLIGHT_BYTES:
                break
            upcoming = next(jobs, None)
            if upcoming is None:
                exhausted = True
                break
            size = sum(len(p.data) for p in upcoming)
            in_flight.append((upcoming, pool.submit(_extract_job, job_of(upcoming)), size))
            flying_bytes += size
        if not in_flight:
            return
        pendings, future, size = in_flight.popleft()
        flying_bytes -= size
        yield pendings, future.result()


def _exit_with_parent(parent: int) -> None:
    """Worker start-up: end the worker when the ingest process is gone (a SIGKILL leaves forked workers
    waiting on a queue whose write end they inherited, so they would never see it close)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-ingest", daemon=True).start()


def _file_columns(file: SourceFile, sha256: str) -> dict[str, Any]:
    return {
        "document_id": document_id_of(file.uri),
        "source_uri": file.uri,
        "media_type": file.media_type,
        "sha256": sha256,
        "size_bytes": file.size,
        "modified_at": file.modified_at,
    }


def _concat(tables: Sequence[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _extract_job(job: _Job) -> _Extracted:
    """Read, link and chunk the files of one job (runs in a worker process; arguments pickle)."""
    documents: list[dict[str, Any]] = []
    chunks: list[dict[str, Any]] = []
    reasons: list[str | None] = []
    for file, data, source_metadata, sha256 in job.files:
        reasons.append(_extract(file, data, source_metadata, sha256, job, documents, chunks))
    return _Extracted(
        pa.Table.from_pylist(documents, schema=DOCUMENTS_SCHEMA),
        pa.Table.from_pylist(chunks, schema=CHUNKS_SCHEMA),
        reasons,
    )


def _extract(
    file: SourceFile,
    data: bytes,
    source_metadata: Mapping[str, str],
    sha256: str,
    job: _Job,
    documents: list[dict[str, Any]],
    chunks: list[dict[str, Any]],
) -> str | None:
    """Append the rows of one file to ``documents`` and ``chunks``; return why it is unreadable, or None."""
    columns = _file_columns(file, sha256)
    try:
        extracted = reader_for(file.media_type).read(data)
    except UnreadableDocument as unreadable:
        return unreadable.reason
    except Exception as error:  # a reader bug or an exotic file must not stop the batch
        return f"unreadable: {type(error).__name__}"
    metadata = {**extracted.metadata, **source_metadata}
    link_column, link_key = resolve_link(job.rules, file.relative_path, metadata, extracted.text)
    link = {"link_column": link_column, "link_key": link_key}
    documents.extend(
        {
            **columns,
            "unit_kind": unit.kind,
            "position": unit.position,
            "line_start": unit.line_start,
            "line_end": unit.line_end,
            "speaker": unit.speaker,
            "start_s": unit.start_s,
            "end_s": unit.end_s,
            "logged_at": unit.logged_at,
            "level": unit.level,
            "text": unit.text,
            **link,
        }
        for unit in extracted.units
    )
    chunks.extend(
        {
            "chunk_id": f"{columns['document_id']}:{chunk.index}",
            "document_id": columns["document_id"],
            "source_uri": file.uri,
            "sha256": sha256,
            "media_type": file.media_type,
            "chunk_index": chunk.index,
            "position_start": chunk.position_start,
            "position_end": chunk.position_end,
            "text": chunk.text,
            **link,
            "embedding": None,
        }
        for chunk in chunk_units(extracted.units, job.chunking)
    )
    return None


def table_counts(catalog: Catalog, names: TableNames) -> dict[str, int]:
    """Counts the orchestrator may see: rows, files, linked files, orphan chunks, dead letters."""
    documents = catalog.load_table(names.documents)
    chunks = catalog.load_table(names.chunks)
    dead = catalog.load_table(names.dead_letters)
    ids = pa.table({"document_id": pa.array([], pa.string()), "link_key": pa.array([], pa.string())})
    if documents.current_snapshot() is not None:
        ids = documents.scan(selected_fields=("document_id", "link_key")).to_arrow()
    per_document = ids.group_by("document_id").aggregate([("link_key", "count")])
    chunk_ids = (
        chunks.scan(selected_fields=("document_id",)).to_arrow()["document_id"]
        if chunks.current_snapshot() is not None
        else pa.array([], pa.string())
    )
    orphans = pc.sum(pc.invert(pc.is_in(chunk_ids, value_set=per_document["document_id"]))).as_py()
    return {
        "document_rows": row_count(documents),
        "documents": per_document.num_rows,
        "linked_documents": int(pc.sum(pc.greater(per_document["link_key_count"], 0)).as_py() or 0),
        "chunk_rows": row_count(chunks),
        "orphan_chunks": int(orphans or 0),
        "dead_letters": row_count(dead),
    }
