"""pgoutput binary values (``binary 'true'``, PostgreSQL 14+) to Arrow, vectorized.

With the option ``binary 'true'`` pgoutput sends a value of a type with a send function as kind ``b``:
the type's binary send format (big-endian). The types of :data:`BINARY_TYPES` are decoded here with numpy
over every row of a column at once, straight to the Arrow type :func:`.types.arrow_type` gives them;
every other type keeps text mode (the source asks for binary only when all captured columns are in the
set, see :func:`binary_columns_supported`).

Correctness rules:

* **Identical to text mode.** A value decodes to exactly what its PostgreSQL text output converts to
  (:func:`.types.text_to_arrow`): ``bool`` t/f, integers, ``oid`` (unsigned), floats bit for bit (NaN,
  ±Infinity, -0.0), ``date`` (int32 days since 2000-01-01), ``timestamp``/``timestamptz`` (int64
  microseconds since 2000-01-01, :data:`.types.PG_EPOCH_US`), text types and ``json`` as UTF-8 text,
  ``jsonb`` (version byte 1, then its text), ``bytea`` raw, ``uuid`` as canonical lowercase text. A date
  or timestamp whose text does not convert (``±infinity``, years outside 1..9999) is *invalid*: it reads
  null, and the decoder hands over its PostgreSQL text so that the row is rejected like in text mode.
* **Malformed, never misread.** A value whose length is not its type's send size (bool 1, int2 2,
  int4/oid/float4/date 4, int8/float8/timestamp[tz] 8, uuid 16), a bool byte other than 0/1, a jsonb
  without version byte 1, or text that is not UTF-8, marks its row malformed (the decoder turns the
  message into a dead letter or :class:`~hybrid_dagster.errors.DecoderError`, as a bad length).
* **In bounds.** Fixed-size values are read only at rows whose length was checked to equal the size, and
  slices only within ``[start, start + length]``; other rows read offset 0. The buffer ends with
  :data:`.types.WINDOW` zero bytes, so a fixed-size window (at most 16 bytes) at a checked start stays
  inside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from numpy.lib.stride_tricks import sliding_window_view

from hybrid_dagster.cdc.sources.postgres.types import (
    BOOL,
    BPCHAR,
    BYTEA,
    DATE,
    FLOAT4,
    FLOAT8,
    INT2,
    INT4,
    INT8,
    JSON,
    JSONB,
    NAME,
    OID,
    PG_EPOCH_US,
    TEXT,
    TIMESTAMP,
    TIMESTAMPTZ,
    UUID,
    VARCHAR,
    PgColumn,
    pg_date_text,
    pg_timestamp_text,
    strings_from_slices,
    values_at,
)

_FIXED: dict[int, tuple[str, pa.DataType]] = {
    BOOL: ("u1", pa.bool_()),
    INT2: (">i2", pa.int16()),
    INT4: (">i4", pa.int32()),
    INT8: (">i8", pa.int64()),
    OID: (">u4", pa.int64()),
    FLOAT4: (">f4", pa.float32()),
    FLOAT8: (">f8", pa.float64()),
    DATE: (">i4", pa.date32()),
    TIMESTAMP: (">i8", pa.timestamp("us")),
    TIMESTAMPTZ: (">i8", pa.timestamp("us", tz="UTC")),
}
_TEXT_TYPES = frozenset({TEXT, VARCHAR, BPCHAR, NAME, JSON})
BINARY_TYPES = frozenset({*_FIXED, *_TEXT_TYPES, BYTEA, JSONB, UUID})
"""Type OIDs whose binary values this module decodes."""
MIN_SERVER_VERSION = 140_000
"""pgoutput's ``binary`` option needs PostgreSQL 14 (``server_version_num``)."""

_UNIX_DAY_MIN, _UNIX_DAY_MAX = -719_162, 2_932_896  # 0001-01-01 and 9999-12-31
_PG_DAY_MIN = _UNIX_DAY_MIN - PG_EPOCH_US // 86_400_000_000
_PG_DAY_MAX = _UNIX_DAY_MAX - PG_EPOCH_US // 86_400_000_000
_PG_US_MIN = _PG_DAY_MIN * 86_400_000_000
_PG_US_MAX = (_PG_DAY_MAX + 1) * 86_400_000_000 - 1
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_UUID_DIGIT_AT = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])


def binary_columns_supported(columns: Sequence[PgColumn]) -> bool:
    """Whether every column's binary values can be decoded here (else the stream keeps text mode).

    Example:
        >>> binary_columns_supported([PgColumn("id", INT8), PgColumn("note", TEXT)])
        True
        >>> binary_columns_supported([PgColumn("price", 1700)])  # numeric
        False
    """
    return all(c.type_oid in BINARY_TYPES for c in columns)


def use_binary(server_version_num: int, columns: Mapping[str, Sequence[PgColumn]]) -> bool:
    """The source's gate: binary mode when the server has it (14+) and every captured column's type is
    in :data:`BINARY_TYPES`.

    Example:
        >>> columns = {"t": [PgColumn("id", INT8)]}
        >>> use_binary(130_012, columns), use_binary(180_001, columns)
        (False, True)
    """
    return server_version_num >= MIN_SERVER_VERSION and all(
        binary_columns_supported(cols) for cols in columns.values()
    )


@dataclass
class BinaryValues:
    """One column's binary values decoded: the typed array, the rows that are malformed, and the
    PostgreSQL text of invalid values (rows that read null because their text does not convert)."""

    values: pa.Array
    malformed: np.ndarray
    invalid: dict[int, str]


def _utf8(
    buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray, valid: np.ndarray
) -> tuple[pa.Array, np.ndarray]:
    """Strings at the given slices; rows with invalid UTF-8 come back null and marked in the mask."""
    no_bad = np.zeros(len(starts), dtype=bool)
    try:
        return strings_from_slices(buf, starts, lengths, valid), no_bad
    except pa.ArrowInvalid:
        pass
    for i in np.nonzero(valid)[0]:
        try:
            bytes(buf[starts[i] : starts[i] + lengths[i]]).decode()
        except UnicodeDecodeError:
            no_bad[i] = True
    return strings_from_slices(buf, starts, lengths, valid & ~no_bad), no_bad


def text_values(
    buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray, valid: np.ndarray
) -> tuple[pa.Array, np.ndarray]:
    """Text-mode values (kind ``t``) as a string array, and the rows that are not UTF-8."""
    return _utf8(buf, starts, lengths, valid)


def decode_binary(
    buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray, valid: np.ndarray, type_oid: int
) -> BinaryValues:
    """Decode the binary values at ``buf[starts[i] : starts[i] + lengths[i]]`` where ``valid`` (null
    elsewhere) as type ``type_oid`` (one of :data:`BINARY_TYPES`), see the module's rules.

    Example:
        >>> buf = np.frombuffer(bytes([0, 0, 0, 0, 0, 0, 0, 42]) + bytes(16), np.uint8)
        >>> one = np.array([True])
        >>> decode_binary(buf, np.array([0]), np.array([8]), one, INT8).values.to_pylist()
        [42]
    """
    n = len(starts)
    if type_oid in _FIXED:
        return _fixed(buf, starts, lengths, valid, type_oid)
    if type_oid == UUID:
        return _uuid(buf, starts, lengths, valid)
    if type_oid == BYTEA:
        return BinaryValues(
            strings_from_slices(buf, starts, lengths, valid, binary=True), np.zeros(n, bool), {}
        )
    if type_oid == JSONB:
        has_version = valid & (lengths >= 1)
        version = buf[np.where(has_version, starts, 0)]
        malformed = valid & ~(has_version & (version == 1))
        ok = valid & ~malformed
        values, not_utf8 = _utf8(buf, np.where(ok, starts + 1, 0), np.where(ok, lengths - 1, 0), ok)
        return BinaryValues(values, malformed | not_utf8, {})
    if type_oid in _TEXT_TYPES:
        values, not_utf8 = _utf8(buf, starts, lengths, valid)
        return BinaryValues(values, not_utf8, {})
    raise ValueError(f"type OID {type_oid} has no binary decoder (see BINARY_TYPES)")


def _windows(buf: np.ndarray, starts: np.ndarray, ok: np.ndarray, size: int) -> np.ndarray:
    """``size`` bytes at each checked start (offset 0 elsewhere), one row per value."""
    pos = np.clip(np.where(ok, starts, 0), 0, len(buf) - size)
    return np.ascontiguousarray(sliding_window_view(buf, size)[pos])


def _scalars(buf: np.ndarray, starts: np.ndarray, ok: np.ndarray, code: str) -> np.ndarray:
    """The ``code`` value (a numpy dtype of 1, 2, 4 or 8 bytes) at each checked start (offset 0 elsewhere)."""
    return values_at(buf, np.where(ok, starts, 0), code)


def _fixed(
    buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray, valid: np.ndarray, type_oid: int
) -> BinaryValues:
    code, arrow = _FIXED[type_oid]
    size = np.dtype(code).itemsize
    malformed = valid & (lengths != size)
    ok = valid & ~malformed
    raw = _scalars(buf, starts, ok, code)
    invalid: dict[int, str] = {}
    if type_oid == BOOL:
        malformed |= ok & (raw > 1)
        ok &= ~malformed
        return BinaryValues(pa.array(raw == 1, arrow, mask=~ok), malformed, invalid)
    if type_oid in (DATE, TIMESTAMP, TIMESTAMPTZ):
        pg = raw.astype(np.int64)
        low, high = (_PG_DAY_MIN, _PG_DAY_MAX) if type_oid == DATE else (_PG_US_MIN, _PG_US_MAX)
        out_of_range = ok & ((pg < low) | (pg > high))
        for i in np.nonzero(out_of_range)[0]:
            value = int(pg[i])
            invalid[int(i)] = (
                pg_date_text(value)
                if type_oid == DATE
                else pg_timestamp_text(value, tz=type_oid == TIMESTAMPTZ)
            )
        ok &= ~out_of_range
        if type_oid == DATE:
            unix = np.where(ok, pg + PG_EPOCH_US // 86_400_000_000, 0).astype(np.int32)
        else:
            unix = np.where(ok, pg, 0) + PG_EPOCH_US
        return BinaryValues(pa.array(unix, arrow, mask=~ok), malformed, invalid)
    native = raw.astype(arrow.to_pandas_dtype())
    return BinaryValues(pa.array(native, arrow, mask=~ok), malformed, invalid)


def _uuid(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray, valid: np.ndarray) -> BinaryValues:
    n = len(starts)
    malformed = valid & (lengths != 16)
    ok = valid & ~malformed
    raw = _windows(buf, starts, ok, 16)
    digits = np.empty((n, 32), dtype=np.uint8)
    digits[:, 0::2] = _HEX_DIGITS[raw >> 4]
    digits[:, 1::2] = _HEX_DIGITS[raw & 15]
    text = np.full((n, 36), ord("-"), dtype=np.uint8)
    text[:, _UUID_DIGIT_AT] = digits
    offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int32)
    validity = None if ok.all() else pa.py_buffer(np.packbits(ok, bitorder="little"))
    values = pa.Array.from_buffers(
        pa.string(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(text.tobytes())]
    )
    return BinaryValues(values, malformed, {})
