"""A deterministic SHA-256 content hash of an Arrow table: the same rows give the same hash.

The hash is of the table's *content* - a multiset of rows over named columns - not of its physical
layout. Correctness rules (the canonical form):

- Columns are taken in sorted name order; only names take part, not types, so an ``int8`` column and
  the ``int32`` Iceberg stores it as hash alike, and so do ``string``/``large_string`` and dictionary
  encoding. Timestamps are normalized to microseconds (what Iceberg stores), tz-aware ones to UTC.
- Each cell becomes bytes: binary as is, strings as UTF-8, timestamps as their integer microseconds
  since the epoch (tz-aware ones followed by ``Z``), times as integer microseconds since midnight,
  floating-point numbers as the decimal integer of their IEEE 754 double bits (every NaN as the one
  canonical NaN), everything else as pyarrow's own cast to string (``pyarrow.compute.cast``); nested
  types (list, struct, map) as canonical JSON of the value. (Integers, not pyarrow's rendering of a
  timestamp or a double: the first looks the time zone up per value, the second formats the shortest
  round-trip decimal; together they were most of a CDC batch's hashing time.)
  A cell is written ``<length>:<bytes>``, a null ``-1:``, so no two different rows share an encoding.
- A row is the concatenation of its cells; rows are sorted by their encoding (``pyarrow.compute.
  sort_indices``), so row order, chunking and file layout do not matter while duplicates still count.
- The digest is ``sha256("hybrid-content-v2" NUL names-as-canonical-JSON NUL rows...)``, fed in batches.

All of this is pyarrow compute and hashlib; no Arrow buffer is serialized by hand.

Example:
    >>> import pyarrow as pa
    >>> a = pa.table({"id": [1, 2], "ward": ["A", None]})
    >>> b = pa.table({"ward": [None, "A"], "id": pa.array([2, 1], pa.int32())})
    >>> content_sha256(a) == content_sha256(b)
    True
"""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from hybrid_dagster.audit.canonical import canonical_json

HASH_VERSION = b"hybrid-content-v2"
_BATCH_ROWS = 65_536
_EMPTY = pa.scalar(b"", pa.large_binary())
_COLON = pa.scalar(b":", pa.large_binary())
_UTC = pa.scalar(b"Z", pa.large_binary())
_NAN = pa.scalar(float("nan"), pa.float64())


def content_sha256(table: pa.Table) -> str:
    """The hex SHA-256 of ``table``'s content (see the module docstring for the canonical form).

    Example:
        >>> content_sha256(pa.table({"x": [1]})) == content_sha256(pa.table({"x": pa.array([1], pa.int8())}))
        True
    """
    names = sorted(table.column_names)
    digest = hashlib.sha256(HASH_VERSION + b"\0" + canonical_json(names) + b"\0")
    if table.num_rows == 0:
        return digest.hexdigest()
    parts = [_encoded_cells(table.column(name)) for name in names]
    rows = pc.binary_join_element_wise(*parts, _EMPTY) if len(parts) > 1 else parts[0]
    rows = rows.take(pc.sort_indices(rows))
    for start in range(0, len(rows), _BATCH_ROWS):
        batch = rows.slice(start, _BATCH_ROWS)
        joined = pc.binary_join(
            pa.LargeListArray.from_arrays(pa.array([0, len(batch)], pa.int64()), batch), _EMPTY
        )
        digest.update(joined[0].as_buffer() or b"")
    return digest.hexdigest()


def _encoded_cells(column: pa.ChunkedArray) -> pa.Array:
    """``<length>:<bytes>`` per cell (``-1:`` for null) as one large_binary array without nulls."""
    cells = _as_binary(column.combine_chunks() if column.num_chunks != 1 else column.chunk(0))
    lengths = pc.cast(pc.fill_null(pc.binary_length(cells), -1), pa.large_string())
    return pc.binary_join_element_wise(
        pc.cast(lengths, pa.large_binary()), pc.fill_null(cells, _EMPTY), _COLON
    )


def _as_binary(array: pa.Array) -> pa.Array:
    kind = array.type
    if pa.types.is_dictionary(kind):
        return _as_binary(pc.cast(array, kind.value_type))
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        return pc.cast(array, pa.large_binary())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pc.cast(array, pa.large_binary())
    if pa.types.is_timestamp(kind):
        target = pa.timestamp("us", tz="UTC" if kind.tz is not None else None)
        micros = _integer_text(pc.cast(pc.cast(array, target, safe=False), pa.int64()))
        return micros if kind.tz is None else pc.binary_join_element_wise(micros, _UTC, _EMPTY)
    if pa.types.is_floating(kind):
        doubles = pc.cast(array, pa.float64())  # half and single precision widen exactly
        doubles = pc.if_else(pc.is_nan(doubles), _NAN, doubles)
        bits = pa.Array.from_buffers(pa.int64(), len(doubles), doubles.buffers()[:2], offset=doubles.offset)
        return _integer_text(bits)
    if pa.types.is_time(kind):
        return _integer_text(pc.cast(pc.cast(array, pa.time64("us"), safe=False), pa.int64()))
    if pa.types.is_null(kind):
        return pa.nulls(len(array), pa.large_binary())
    if pa.types.is_nested(kind):
        return pa.array(
            [None if v is None else canonical_json(_jsonable(v)) for v in array.to_pylist()],
            pa.large_binary(),
        )
    return pc.cast(pc.cast(array, pa.large_string()), pa.large_binary())


def _integer_text(array: pa.Array) -> pa.Array:
    return pc.cast(pc.cast(array, pa.large_string()), pa.large_binary())


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
