"""Copy-on-write: the data files one collapsed batch rewrites, and the files that replace them.

Rules:

* Only the data files whose key range can hold a touched key are read (:mod:`.pruning`); every row of
  those files whose key was not touched is written again unchanged, so deleting the read files and adding
  the written ones in ONE snapshot loses nothing and duplicates nothing.
* A truncate in the batch drops every live file: nothing is read, only the upserts after it are written.
* Each cluster of overlapping files is rewritten into files of its own, so file key ranges stay narrow;
  new keys outside every cluster go to new files. A large part is sliced into one piece per core
  (:func:`split_for_writers`, pieces of at least ``MIN_SPLIT_BYTES``), so its files are written in
  parallel; every row is written exactly once either way.
* Unchanged (TOAST) values are carried forward from earlier changes of the batch, else from the rows read.
* Nothing here commits: the caller owns the snapshot (and deletes the written files if it is rejected).
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table, TableProperties
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.types import PrimitiveType

from hybrid_dagster.cdc._pyiceberg_compat import arrow_schema_of, read_data_files, write_data_files
from hybrid_dagster.cdc.sink.collapse import (
    ROW_COL,
    UNCHANGED_COL,
    CollapsedChanges,
    Key,
    apply_carried_values,
    carry_forward_in_batch,
    needs_carry_forward,
)
from hybrid_dagster.cdc.sink.pruning import FilePlan, comparable, live_data_files, plan_files

MIN_SPLIT_BYTES = 16 * 2**20
"""Smallest piece (Arrow bytes) a part is sliced into for parallel writes (:func:`split_for_writers`)."""
_TABLE_SPAN_FACTOR = 6
""":func:`key_mask` uses a lookup table when the wanted keys span at most this many times the values."""


@dataclass
class Rewrite:
    """The outcome of planning and writing one batch, before the commit."""

    deleted_files: list[DataFile]
    added_files: list[DataFile]
    inserted: int
    updated: int
    deleted: int
    upserts: pa.Table | None = None
    """The rows the batch upserts, as written (unchanged values carried forward, in the table's schema)."""
    touched: pa.Table | None = None
    """Key columns of every key the batch upserts or deletes."""


def rewrite(
    table: Table,
    metadata: TableMetadata,
    net: CollapsedChanges,
    keys: list[str],
    target_file_size_bytes: int,
) -> Rewrite:
    """Read the files ``net`` touches, merge ``net`` into their rows and write the result (uncommitted).

    Example:
        >>> net = collapse(pending, ["id"])  # doctest: +SKIP
        >>> done = rewrite(table, txn.table_metadata, net, ["id"], 2**26)  # doctest: +SKIP
        >>> done.deleted_files, done.added_files  # the overwrite's two halves  # doctest: +SKIP
    """
    schema = metadata.schema()
    arrow_schema = arrow_schema_of(schema)
    touched = conform(net.touched_keys, pa.schema([arrow_schema.field(k) for k in keys]))
    key_field = schema.find_field(keys[0])
    key_type = key_field.field_type
    assert isinstance(key_type, PrimitiveType), f"key column {keys[0]} must be a primitive type"

    files = live_data_files(table, metadata)
    if net.truncated:
        file_plan = FilePlan(files, np.array([], dtype=object), np.array([], dtype=object), False)
        existing = arrow_schema.empty_table()
    else:
        file_plan = plan_files(files, key_field.field_id, key_type, comparable(touched[keys[0]], key_type))
        existing = read_files(table, metadata, file_plan.candidates, arrow_schema)

    hit = key_mask(existing, touched, keys)
    kept = existing.filter(pc.invert(hit))
    new_rows = _new_rows(net, existing.filter(hit), keys, arrow_schema)
    # Only the keys of the touched rows are needed from here on.
    touched_keys = existing.select(keys).filter(hit)
    updated = _count(key_mask(new_rows.select(keys), touched_keys, keys))
    deleted = _count(key_mask(conform(net.deletes, touched.schema), touched_keys, keys))

    def clusters(rows: pa.Table) -> dict[int, pa.Table]:
        return _by_cluster(rows, file_plan.cluster_of(comparable(rows[keys[0]], key_type), rows.num_rows))

    # Kept rows come from the candidate files: with one cluster they all belong to it (no lookup of a
    # million keys); only the (small) upserts need partitioning then.
    one_cluster = file_plan.cluster_count == 1 and kept.num_rows > 0
    kept_parts = {0: kept} if one_cluster else clusters(kept)
    new_parts = clusters(new_rows)
    parts = [
        pa.concat_tables([p for p in (kept_parts.get(g), new_parts.get(g)) if p is not None])
        for g in sorted(kept_parts.keys() | new_parts.keys())
    ]
    return Rewrite(
        deleted_files=file_plan.candidates,
        added_files=write_parts(table, metadata, split_for_writers(parts), target_file_size_bytes),
        inserted=new_rows.num_rows - updated,
        updated=updated,
        deleted=deleted,
        upserts=new_rows,
        touched=touched,
    )


def _new_rows(net: CollapsedChanges, previous: pa.Table, keys: list[str], schema: pa.Schema) -> pa.Table:
    """The upserts as table rows, with unchanged values carried forward (batch first, then ``previous``)."""
    upserts = net.upserts
    if needs_carry_forward(upserts):
        found, pending_values = carry_forward_in_batch(net, keys)
        upserts = apply_carried_values(upserts, found, pending_values, _row_lookup(previous, keys))
    return conform(upserts.drop_columns([UNCHANGED_COL, ROW_COL]), schema)


def read_files(
    table: Table, metadata: TableMetadata, files: list[DataFile], arrow_schema: pa.Schema
) -> pa.Table:
    """Every row of ``files``, conformed to ``arrow_schema`` (empty when there are no files)."""
    if not files:
        return arrow_schema.empty_table()
    return conform(read_data_files(metadata, table.io, files), arrow_schema)


def write_parts(
    table: Table, metadata: TableMetadata, parts: list[pa.Table], target_file_size_bytes: int
) -> list[DataFile]:
    """Write each part (the rows of one cluster) into data files of its own."""
    parts = [part for part in parts if part.num_rows]
    if not parts:
        return []
    target = int(
        metadata.properties.get(TableProperties.WRITE_TARGET_FILE_SIZE_BYTES, target_file_size_bytes)
    )
    return write_data_files(metadata, table.io, parts, target)


@functools.cache
def usable_cpus(root: Path = Path("/")) -> int:
    """CPUs this process may use: its affinity mask, capped by its cgroup v2 CPU quota (``cpu.max``, a
    container's ``--cpus``); at least 1. ``os.cpu_count()`` counts the host's. Read once per process
    (every apply asks).

    Example:
        >>> usable_cpus() >= 1
        True
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
        group = next(line[3:] for line in lines if line.startswith("0::"))
        quota, period = (root / "sys/fs/cgroup" / group.lstrip("/") / "cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, StopIteration, ValueError):
        pass  # no cgroup v2, no quota file: the affinity mask alone
    return max(cpus, 1)


def split_for_writers(parts: list[pa.Table], writers: int | None = None) -> list[pa.Table]:
    """``parts`` with large ones sliced so that the files are written on every core at once.

    Parquet writes one file on one thread: a batch that rewrites one large cluster would leave the other
    cores idle. Each part is sliced into pieces of about ``max(MIN_SPLIT_BYTES, total / writers)``
    Arrow bytes (``writers`` defaults to :func:`usable_cpus`); a piece never mixes two parts, so file key
    ranges stay within their cluster, and parts under twice the minimum stay whole (no small files).
    """
    writers = writers or usable_cpus()
    if writers < 2:
        return parts
    piece_bytes = max(MIN_SPLIT_BYTES, sum(part.nbytes for part in parts) // writers)
    pieces: list[pa.Table] = []
    for part in parts:
        count = min(writers, round(part.nbytes / piece_bytes)) if part.nbytes >= 2 * MIN_SPLIT_BYTES else 1
        if count < 2:
            pieces.append(part)
            continue
        step = -(-part.num_rows // count)
        pieces.extend(part.slice(start, step) for start in range(0, part.num_rows, step))
    return pieces


def conform(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """``rows`` with exactly the columns of ``schema``: cast, and null where a column is missing."""
    if rows.schema.equals(schema):
        return rows
    columns: list[pa.ChunkedArray | pa.Array] = []
    for target in schema:
        if target.name in rows.column_names:
            column = rows[target.name]
            columns.append(column if column.type.equals(target.type) else column.cast(target.type))
        else:
            columns.append(pa.nulls(rows.num_rows, target.type))
    return pa.Table.from_arrays(columns, schema=schema)


def key_mask(rows: pa.Table, keys_table: pa.Table, keys: list[str]) -> pa.ChunkedArray | pa.Array:
    """Boolean mask of the rows of ``rows`` whose key is in ``keys_table``."""
    if rows.num_rows == 0 or keys_table.num_rows == 0:
        return pa.array(np.zeros(rows.num_rows, dtype=bool))
    if len(keys) == 1:
        column, wanted = rows[keys[0]], keys_table[keys[0]]
        dense = _dense_integers(column, wanted)
        if dense is not None:
            return pa.array(np.isin(column.to_numpy(), dense, kind="table"))
        return pc.is_in(column, value_set=wanted.combine_chunks())
    index_col = "__index"
    indexed = rows.select(keys).append_column(index_col, pa.array(np.arange(rows.num_rows, dtype=np.int64)))
    matched = indexed.join(keys_table.select(keys), keys=keys, join_type="left semi", use_threads=False)
    mask = np.zeros(rows.num_rows, dtype=bool)
    mask[matched[index_col].to_numpy()] = True
    return pa.array(mask)


def _dense_integers(column: pa.ChunkedArray, wanted: pa.ChunkedArray) -> np.ndarray | None:
    """``wanted`` as a numpy array when both are signed integers without nulls and ``wanted`` spans a
    range no wider than a few times the rows: then ``np.isin``'s lookup table (one byte per value of the
    range) beats a hash set several times over; otherwise None (``pc.is_in`` is used)."""
    kinds = (column.type, wanted.type)
    if not all(pa.types.is_signed_integer(k) for k in kinds) or column.null_count or wanted.null_count:
        return None
    values = wanted.to_numpy()
    span = int(values.max()) - int(values.min())
    return values if span <= _TABLE_SPAN_FACTOR * (len(column) + len(values)) else None


def _count(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(mask).as_py() or 0)


def _by_cluster(rows: pa.Table, groups: np.ndarray) -> dict[int, pa.Table]:
    """``rows`` split by cluster index; inside a file order does not matter to pruning (it uses the
    file's key bounds), so a stable partition stands in for a sort."""
    if rows.num_rows == 0:
        return {}
    if groups.min() == groups.max():
        return {int(groups[0]): rows}
    order = np.argsort(groups, kind="stable")
    ordered = groups[order]
    rows = rows.take(pa.array(order))
    cuts = [0, *(np.flatnonzero(np.diff(ordered)) + 1).tolist(), rows.num_rows]
    return {int(ordered[start]): rows.slice(start, stop - start) for start, stop in itertools.pairwise(cuts)}


def _row_lookup(rows: pa.Table, keys: list[str]) -> Callable[[list[Key]], dict[Key, dict[str, Any]]]:
    """Existing rows by key, for carrying unchanged values forward from the table."""

    def lookup(wanted: list[Key]) -> dict[Key, dict[str, Any]]:
        if not wanted or rows.num_rows == 0:
            return {}
        wanted_table = pa.Table.from_pylist(
            [dict(zip(keys, key, strict=True)) for key in wanted],
            schema=pa.schema([rows.schema.field(k) for k in keys]),
        )
        subset = rows.filter(key_mask(rows, wanted_table, keys)).to_pylist()
        return {tuple(row[k] for k in keys): row for row in subset}

    return lookup
