"""The integrity evidence of one CDC batch commit: two SHA-256 content hashes, compared before the commit.

Correctness rules:

- ``source_sha256`` is the content hash (:func:`hybrid_dagster.audit.content_sha256`) of the batch as
  decoded from the source: its net after-image per key (the last change of each key, unchanged TOAST
  values carried forward from the row's own history), in the table's columns. A key whose last change
  is a delete has no row.
- ``target_sha256`` is the content hash of the rows the staged (not yet committed) data files hold at
  the keys the batch touched, read back from those files. Rows of untouched keys that a rewrite copies
  do not take part; a delete that did not land, a lost or duplicated upsert, or a changed value does.
- The two are compared before the commit: on a mismatch the commit is abandoned (its files deleted) and
  :class:`~hybrid_dagster.audit.TransferIntegrityError` raised, so the source is never acknowledged.
- The source hash runs on a worker thread while the staged files are read back and hashed (pyarrow
  and hashlib release the GIL, so the two use both cores); both are joined before anything is returned,
  the worker is shut down on every path, and an error on it is raised to the caller as if it had run
  inline (so the commit is abandoned exactly as for an error in the read-back).
- Only names, counts, positions and hashes - never row values.

Example:
    .. code-block:: python

        evidence = batch_evidence("clinical.patients", metadata, table.io, rewrite, ["patient_id"],
                                  pending, position)
        assert evidence.matches
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
from pyiceberg.io import FileIO
from pyiceberg.manifest import DataFile, ManifestEntryStatus
from pyiceberg.table.metadata import TableMetadata

from hybrid_dagster.audit.content_hash import content_sha256
from hybrid_dagster.cdc._pyiceberg_compat import arrow_schema_of, read_data_files
from hybrid_dagster.cdc.changes import Position
from hybrid_dagster.cdc.sink.rewrite import Rewrite, conform, key_mask


@dataclass(frozen=True)
class BatchEvidence:
    """What one CDC batch commit proves about itself (metadata only).

    Example:
        >>> BatchEvidence("crm.patients", Position(5, 0), rows=2, bytes=64, source_sha256="ab",
        ...               target_sha256="ab").matches
        True
    """

    identifier: str
    position: Position
    rows: int
    """Keys the batch upserts or deletes."""
    bytes: int
    """Arrow in-memory size of the batch's changes as read from the source."""
    source_sha256: str
    target_sha256: str

    @property
    def matches(self) -> bool:
        return self.source_sha256 == self.target_sha256


def batch_evidence(
    identifier: str,
    metadata: TableMetadata,
    io: FileIO,
    rewrite: Rewrite,
    keys: list[str],
    pending: pa.Table,
    position: Position,
) -> BatchEvidence:
    """Hash the batch as decoded and the staged rows at its keys (see the module docstring)."""
    schema = arrow_schema_of(metadata.schema())
    upserts = rewrite.upserts if rewrite.upserts is not None else schema.empty_table()
    touched = rewrite.touched if rewrite.touched is not None else upserts.select(keys)
    for data_file in rewrite.added_files:  # pyiceberg stamps the spec when it adds a file to a manifest
        if not hasattr(data_file, "_spec_id"):
            data_file.spec_id = metadata.default_spec_id

    def target() -> str:
        staged = _read_back(metadata, io, rewrite.added_files, schema)
        return content_sha256(staged.filter(key_mask(staged, touched, keys)))

    source_sha256, target_sha256 = _side_by_side(upserts, target)
    return BatchEvidence(
        identifier=identifier,
        position=position,
        rows=touched.num_rows,
        bytes=pending.nbytes,
        source_sha256=source_sha256,
        target_sha256=target_sha256,
    )


def appended_evidence(
    metadata: TableMetadata, io: FileIO, identifier: str, appended: pa.Table, position: Position
) -> BatchEvidence:
    """The evidence of an append that committed ``metadata`` (a snapshot chunk): the rows handed to the
    append against the rows read back from the data files its snapshot added.

    An append has no staging step to check before its commit, so the check runs after it, on the
    metadata the commit returned (later commits of the table do not change what is checked); a mismatch
    must stop whatever would build on that commit (for a snapshot, its completion commit).

    Example:
        >>> table.append(rows)  # doctest: +SKIP
        >>> appended_evidence(table.metadata, table.io, "clinical.patients", rows, Position(7, 0)).matches
        True
    """
    snapshot = metadata.current_snapshot()
    files = []
    if snapshot is not None:
        for manifest in snapshot.manifests(io):
            if manifest.added_snapshot_id != snapshot.snapshot_id:
                continue
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
                if entry.status == ManifestEntryStatus.ADDED:
                    files.append(entry.data_file)

    def target() -> str:
        return content_sha256(_read_back(metadata, io, files, arrow_schema_of(metadata.schema())))

    source_sha256, target_sha256 = _side_by_side(appended, target)
    return BatchEvidence(
        identifier=identifier,
        position=position,
        rows=appended.num_rows,
        bytes=appended.nbytes,
        source_sha256=source_sha256,
        target_sha256=target_sha256,
    )


def _side_by_side(source: pa.Table, target: Callable[[], str]) -> tuple[str, str]:
    """``(content_sha256(source), target())``, the first on a worker thread while the second runs here.

    The worker is joined (and shut down) before this returns or raises; an error of either is raised.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cdc-evidence") as pool:
        source_hash = pool.submit(content_sha256, source)
        target_sha256 = target()
        return source_hash.result(), target_sha256


def _read_back(metadata: TableMetadata, io: FileIO, files: list[DataFile], schema: pa.Schema) -> pa.Table:
    """Every row of the data files ``files`` as written, in the table's Arrow schema."""
    return conform(read_data_files(metadata, io, files), schema) if files else schema.empty_table()
