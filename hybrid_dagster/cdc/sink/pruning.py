"""Find the data files that can hold given keys, from the key column bounds in the manifests.

Files are compared on the first key column: a file is a candidate when some touched key lies within
its ``[lower, upper]`` bounds (a ``searchsorted`` over the sorted touched keys). Files without usable
bounds are always candidates. Candidates whose ranges overlap form one cluster; a rewrite writes each
cluster on its own, so rewritten files stay as narrow as the ones they replace.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.conversions import from_bytes
from pyiceberg.manifest import DataFile, DataFileContent, ManifestContent
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.types import (
    BinaryType,
    DateType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    PrimitiveType,
    StringType,
    TimestampType,
    TimestamptzType,
)

_NUMERIC = (IntegerType, LongType, DateType, TimestampType, TimestamptzType)
_ORDERED = (*_NUMERIC, FloatType, DoubleType, StringType, BinaryType)


_LIVE_FILES: OrderedDict[tuple[str, int], tuple[DataFile, ...]] = OrderedDict()
_LIVE_FILES_KEPT = 16
"""Snapshots whose file lists are kept: a snapshot never changes, so its list is read once (the batch's
evidence reads the snapshot it committed, and the next batch's rewrite starts from that snapshot)."""
_LIVE_FILES_LOCK = threading.Lock()


def live_data_files(table: Table, metadata: TableMetadata | None = None) -> list[DataFile]:
    """The data files of the current snapshot, read straight from its manifests (once per snapshot)."""
    metadata = metadata or table.metadata
    snapshot = metadata.current_snapshot()
    if snapshot is None:
        return []
    key = (str(metadata.table_uuid), snapshot.snapshot_id)
    with _LIVE_FILES_LOCK:
        if key in _LIVE_FILES:
            _LIVE_FILES.move_to_end(key)
            return list(_LIVE_FILES[key])
    files: list[DataFile] = []
    for manifest in snapshot.manifests(table.io):
        if manifest.content != ManifestContent.DATA:
            continue
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            if entry.data_file.content == DataFileContent.DATA:
                files.append(entry.data_file)
    with _LIVE_FILES_LOCK:
        _LIVE_FILES[key] = tuple(files)
        while len(_LIVE_FILES) > _LIVE_FILES_KEPT:
            _LIVE_FILES.popitem(last=False)
    return files


def remember_live_files(
    before: TableMetadata, after: TableMetadata, deleted: list[DataFile], added: list[DataFile]
) -> None:
    """Keep the file list of the snapshot an overwrite just committed (``after``) without reading it:
    the list of ``before`` (read by the rewrite) less ``deleted``, plus ``added``. Only when ``after``'s
    snapshot is the child of ``before``'s (the commit asserted it; anything else is read again).

    Example:
        >>> gone, new = rewrite.deleted_files, rewrite.added_files  # doctest: +SKIP
        >>> remember_live_files(metadata, committed.metadata, gone, new)  # doctest: +SKIP
    """
    parent, child = before.current_snapshot(), after.current_snapshot()
    parent_id = None if parent is None else parent.snapshot_id
    if child is None or child.parent_snapshot_id != parent_id:
        return
    with _LIVE_FILES_LOCK:
        known = () if parent_id is None else _LIVE_FILES.get((str(before.table_uuid), parent_id))
        if known is None:
            return
        gone = {f.file_path for f in deleted}
        _LIVE_FILES[(str(after.table_uuid), child.snapshot_id)] = (
            *(f for f in known if f.file_path not in gone),
            *added,
        )
        while len(_LIVE_FILES) > _LIVE_FILES_KEPT:
            _LIVE_FILES.popitem(last=False)


def comparable(values: pa.Array | pa.ChunkedArray, field_type: PrimitiveType) -> np.ndarray | None:
    """Key values as a numpy array ordered like the decoded Iceberg bounds; None if not supported."""
    if not isinstance(field_type, _ORDERED):
        return None
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(field_type, DateType):
        values = values.cast(pa.int32())
    if isinstance(field_type, _NUMERIC):
        return np.asarray(values.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    if isinstance(field_type, (FloatType, DoubleType)):
        return np.asarray(values.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=object)


@dataclass
class FilePlan:
    """Which files a batch must rewrite, grouped in clusters of overlapping key ranges.

    ``cluster_lower``/``cluster_upper`` are the bounds of each cluster (sorted, disjoint); when some
    candidate has no usable bounds there is a single unbounded cluster (``bounded`` is False).
    """

    candidates: list[DataFile]
    cluster_lower: np.ndarray
    cluster_upper: np.ndarray
    bounded: bool

    @property
    def cluster_count(self) -> int:
        return len(self.cluster_lower) if self.bounded else (1 if self.candidates else 0)

    def cluster_of(self, keys: np.ndarray | None, count: int) -> np.ndarray:
        """Cluster index of each of ``count`` keys; ``cluster_count`` for keys outside every cluster."""
        if not self.bounded or keys is None:
            return np.zeros(count, dtype=np.int64)
        outside = self.cluster_count
        index = np.searchsorted(self.cluster_lower, keys, side="right") - 1
        found = index >= 0
        clipped = np.where(found, index, 0)
        inside = found & (keys <= self.cluster_upper[clipped]) if len(self.cluster_upper) else found
        return np.where(inside, index, outside).astype(np.int64)


def plan_files(
    files: list[DataFile], key_field_id: int, key_type: PrimitiveType, touched: np.ndarray | None
) -> FilePlan:
    """Select the files whose key range holds a touched key (all files when ``touched`` is None).

    Example:
        >>> plan = plan_files(live_data_files(table), 1, LongType(), np.array([5, 17]))  # doctest: +SKIP
        >>> [f.file_path for f in plan.candidates]  # doctest: +SKIP
    """
    empty = np.array([], dtype=object)
    if not files or (touched is not None and len(touched) == 0):
        return FilePlan([], empty, empty, True)
    if touched is None:
        return FilePlan(list(files), empty, empty, False)
    bounds = [_bounds(f, key_field_id, key_type) for f in files]
    unbounded = [f for f, b in zip(files, bounds, strict=True) if b is None]
    ranged = [(f, b) for f, b in zip(files, bounds, strict=True) if b is not None]
    hits = _hits(touched, [b for _, b in ranged])
    chosen = sorted(
        ((f, b) for (f, b), hit in zip(ranged, hits, strict=True) if hit), key=lambda item: item[1][0]
    )
    if unbounded:
        return FilePlan([f for f, _ in chosen] + unbounded, empty, empty, False)
    lowers: list[Any] = []
    uppers: list[Any] = []
    for _, (lower, upper) in chosen:
        if lowers and lower <= uppers[-1]:
            uppers[-1] = max(uppers[-1], upper)
        else:
            lowers.append(lower)
            uppers.append(upper)
    dtype = touched.dtype
    return FilePlan(
        [f for f, _ in chosen], np.array(lowers, dtype=dtype), np.array(uppers, dtype=dtype), True
    )


def _hits(touched: np.ndarray, bounds: list[tuple[Any, Any]]) -> np.ndarray:
    if not bounds:
        return np.zeros(0, dtype=bool)
    ordered = np.sort(touched)
    lowers = np.array([b[0] for b in bounds], dtype=touched.dtype)
    uppers = np.array([b[1] for b in bounds], dtype=touched.dtype)
    start = np.searchsorted(ordered, lowers, side="left")
    stop = np.searchsorted(ordered, uppers, side="right")
    return np.asarray(stop > start)


def _bounds(data_file: DataFile, field_id: int, field_type: PrimitiveType) -> tuple[Any, Any] | None:
    lower = (data_file.lower_bounds or {}).get(field_id)
    upper = (data_file.upper_bounds or {}).get(field_id)
    if lower is None or upper is None:
        return None
    return from_bytes(field_type, lower), from_bytes(field_type, upper)
