"""A deterministic SHA-256 content hash of an Arrow table: the same rows give the same hash.

The hash is of the table's *content* - a multiset of rows over named columns - not of its physical
layout. Correctness rules (the canonical form, version ``hybrid-content-v3``):

- Columns are taken in sorted name order; only names and values take part, not physical types, so an
  ``int8`` column and the ``int32`` Iceberg stores it as hash alike, and so do ``string``/``large_string``
  /``binary`` and dictionary encoding, ``float32`` and the ``float64`` it widens to exactly, ``time32``
  and ``time64``, ``date32`` and ``date64``. A column whose every cell is null hashes alike whatever its
  type (a column a source sends as ``null`` is the same content as the typed all-null column stored).
- Each column becomes one canonical column with a one-byte kind tag:

  - ``i`` int64: signed and unsigned integers (a ``uint64`` column holding a value of 2**63 or more
    is kind ``u``: its values' 64 bits, so it can never equal a signed column);
  - ``o`` int64: booleans as 0/1;
  - ``t`` / ``T`` int64: timestamps as microseconds since the epoch (what Iceberg stores; finer units are
    truncated), ``T`` for tz-aware ones, converted to UTC;
  - ``d`` int64: dates as days since the epoch; ``h`` int64: times as microseconds since midnight;
  - ``f`` int64: floating-point numbers widened to double, as their IEEE 754 bits, every NaN as the
    one canonical NaN (so ``-0.0`` and ``0.0`` differ, and all NaNs are equal);
  - ``b`` large_binary: strings as UTF-8, binary and fixed-size binary (and extension types over
    them, such as UUID) as is;
  - ``j`` large_binary: nested values (list, struct, map) as canonical JSON;
  - ``x`` large_binary: anything else (decimals, durations, ...) as pyarrow's cast to string.

- Rows are sorted by all canonical columns in name order (``pyarrow.compute.sort_indices``, nulls last;
  floats sort by their bits, so no two distinct rows tie), so row order, chunking and file layout do not
  matter while duplicates still count.
- The digest is SHA-256 over ``"hybrid-content-v3" NUL names-as-canonical-JSON NUL`` and the row count
  (8 bytes, little-endian), then per column in name order: its kind tag; its validity (``0x00`` when it
  has no null, else ``0x01`` and one bit per row, LSB first, padded to whole bytes); its values with
  nulls zeroed - int64 kinds as 8 little-endian bytes per row, binary kinds as an 8-byte little-endian
  length per row followed by all the bytes; kind ``0`` (every cell null) has nothing more. Each part's
  length follows from the row count and what precedes it, so the encoding is injective: different
  content (a value, a null for an empty string, a row, a duplicate, a name) gives different input.

The per-column work is pyarrow compute (casts, sort, take) and the hashing is hashlib over Arrow
buffers, so nothing is rendered to text per cell except decimals and the like.

Hashes of two versions are never compared: every check computes both of its hashes with this module in
one process. Audit records written before v3 hold ``hybrid-content-v2`` pairs; each pair was compared
when it was written, and stays valid as a record, but this version does not recompute it.

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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hybrid_dagster.audit.canonical import canonical_json

HASH_VERSION = b"hybrid-content-v3"
_NAN_BITS = np.array([np.nan], dtype=np.float64).view(np.int64)[0]
_INT64_MAX = 2**63 - 1
_ALL_NULL = b"0"


def content_sha256(table: pa.Table) -> str:
    """The hex SHA-256 of ``table``'s content (see the module docstring for the canonical form).

    Example:
        >>> content_sha256(pa.table({"x": [1]})) == content_sha256(pa.table({"x": pa.array([1], pa.int8())}))
        True
    """
    names = sorted(table.column_names)
    rows = table.num_rows
    digest = hashlib.sha256(HASH_VERSION + b"\0" + canonical_json(names) + b"\0")
    digest.update(rows.to_bytes(8, "little"))
    if rows == 0:
        return digest.hexdigest()
    canonical = [_canonical(table.column(name)) for name in names]
    sortable = [(str(i), column) for i, (_, column) in enumerate(canonical) if column is not None]
    order = None
    if sortable:
        keys = pa.table(dict(sortable))
        order = pc.sort_indices(keys, sort_keys=[(name, "ascending") for name, _ in sortable])
    for tag, column in canonical:
        digest.update(tag)
        if column is None:
            continue
        assert order is not None
        _update(digest, column.take(order))
    return digest.hexdigest()


def _update(digest: Any, column: pa.Array) -> None:
    """Feed one sorted canonical column: validity, then values (nulls zeroed)."""
    if column.null_count == 0:
        digest.update(b"\x00")
    else:
        valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
        digest.update(b"\x01" + np.packbits(valid, bitorder="little").tobytes())
    if pa.types.is_int64(column.type):
        values = pc.fill_null(column, 0) if column.null_count else column
        digest.update(values.to_numpy(zero_copy_only=False).astype("<i8", copy=False).tobytes())
        return
    values = pc.fill_null(column, b"") if column.null_count else column
    lengths = pc.binary_length(values).to_numpy(zero_copy_only=False).astype("<i8", copy=False)
    digest.update(lengths.tobytes())
    offsets = np.frombuffer(values.buffers()[1], dtype="<i8", count=len(values) + 1, offset=8 * values.offset)
    data = values.buffers()[2]
    if data is not None and offsets[-1] > offsets[0]:
        digest.update(memoryview(data)[int(offsets[0]) : int(offsets[-1])])


def _canonical(column: pa.ChunkedArray) -> tuple[bytes, pa.Array | None]:
    """(kind tag, canonical int64 or large_binary array); (``0``, None) for a column of nulls only."""
    if column.null_count == len(column):
        return _ALL_NULL, None
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return _as_canonical(array)


def _as_canonical(array: pa.Array) -> tuple[bytes, pa.Array]:
    kind = array.type
    if isinstance(kind, pa.ExtensionType):
        return _as_canonical(array.storage)
    if pa.types.is_dictionary(kind):
        return _as_canonical(pc.cast(array, kind.value_type))
    if pa.types.is_boolean(kind):
        return b"o", pc.cast(array, pa.int64())
    if pa.types.is_unsigned_integer(kind) and kind.bit_width == 64:
        if (pc.max(array).as_py() or 0) > _INT64_MAX:
            return b"u", array.view(pa.int64())
        return b"i", pc.cast(array, pa.int64())
    if pa.types.is_integer(kind):
        return b"i", pc.cast(array, pa.int64())
    if pa.types.is_timestamp(kind):
        target = pa.timestamp("us", tz="UTC" if kind.tz is not None else None)
        micros = pc.cast(pc.cast(array, target, safe=False), pa.int64())
        return (b"t" if kind.tz is None else b"T"), micros
    if pa.types.is_date(kind):
        days = pc.cast(pc.cast(array, pa.date32(), safe=False), pa.int32())
        return b"d", pc.cast(days, pa.int64())
    if pa.types.is_time(kind):
        return b"h", pc.cast(pc.cast(array, pa.time64("us"), safe=False), pa.int64())
    if pa.types.is_floating(kind):
        doubles = pc.cast(array, pa.float64())  # half and single precision widen exactly
        bits = doubles.view(pa.int64())
        return b"f", pc.if_else(pc.is_nan(doubles), pa.scalar(int(_NAN_BITS), pa.int64()), bits)
    if (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary_view(kind)
        or pa.types.is_string_view(kind)
    ):
        return b"b", pc.cast(array, pa.large_binary())
    if pa.types.is_nested(kind):
        return b"j", pa.array(
            [None if v is None else canonical_json(_jsonable(v)) for v in array.to_pylist()],
            pa.large_binary(),
        )
    return b"x", pc.cast(pc.cast(array, pa.large_string()), pa.large_binary())


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
